{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}

pgcluster-firewall-package-installed:
  pkg.installed:
    - name: {{ pgcluster.firewall.package }}
