{#- PgBouncer itself. Before it starts, the pgbouncer-route-at-start hook routes each cluster to the
    leader Patroni reports (or nowhere): it never starts on a stale route. A new route written by
    pgbouncer.routing reloads it. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}

include:
  - {{ tplroot }}.pgbouncer.config

pgbouncer-service-running:
  service.running:
    - name: {{ pgcluster.pgbouncer.service }}
    - enable: True
    - reload: True
    - watch:
      - file: pgbouncer-pgbouncer.ini-managed
      - file: pgbouncer-pg_hba.conf-managed
      - file: pgbouncer-userlist.txt-managed
      - sls: {{ tplroot }}.pki

pgbouncer-restarted-for-new-listen-settings:
  module.run:
    - service.restart:
      - name: {{ pgcluster.pgbouncer.service }}
    - onchanges:
      - file: pgbouncer-listen.ini-managed
      {#- Its supplementary groups are read at start: the host key's group just given to it. #}
      - group: pgbouncer-postgres-reads-the-host-key
    - require:
      - service: pgbouncer-service-running
