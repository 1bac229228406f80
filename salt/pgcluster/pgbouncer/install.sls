{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}

pgbouncer-package-installed:
  pkg.installed:
    - name: {{ pgcluster.pgbouncer.package }}
