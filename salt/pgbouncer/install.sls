{%- from "pgcluster/map.jinja" import pgcluster with context %}

pgbouncer-package-installed:
  pkg.installed:
    - name: {{ pgcluster.pgbouncer.package }}
