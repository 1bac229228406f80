{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}

postgresql-packages-installed:
  pkg.installed:
    - pkgs: {{ pgcluster.postgresql.packages | json }}
