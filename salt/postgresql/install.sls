{%- from "pgcluster/map.jinja" import pgcluster with context %}

postgresql-packages-installed:
  pkg.installed:
    - pkgs: {{ pgcluster.postgresql.packages | json }}
