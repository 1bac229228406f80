{%- from "pgcluster/map.jinja" import pgcluster with context %}

include:
  - pgbouncer.config

pgbouncer-service-running:
  service.running:
    - name: {{ pgcluster.pgbouncer.service }}
    - enable: True
    - reload: True
    - watch:
      - file: pgbouncer-pgbouncer.ini-managed
      - file: pgbouncer-pg_hba.conf-managed
      - file: pgbouncer-userlist.txt-managed
{%- for cluster in pgcluster.node.pgbouncer %}
      - pgcluster: pgbouncer-routes-{{ cluster }}-to-leader
{%- endfor %}
