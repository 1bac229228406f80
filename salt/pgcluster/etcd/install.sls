{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}

etcd-packages-installed:
  pkg.installed:
    - pkgs: {{ pgcluster.etcd.packages | json }}
