{#- PgBouncer for every cluster this host serves: pgbouncer.ini and its hba file, the
    auth_file with the roles' SCRAM verifiers (the same as in pg_authid, no plaintext),
    and one routing file per cluster pointing at the current leader. #}
{%- from "pgcluster/map.jinja" import pgcluster with context %}
{%- set b = pgcluster.pgbouncer %}

include:
  - pgbouncer.install

{%- for file, mode in [("pgbouncer.ini", "0640"), ("pg_hba.conf", "0640"), ("userlist.txt", "0640")] %}

pgbouncer-{{ file }}-managed:
  file.managed:
    - name: {{ b.conf_dir }}/{{ file }}
    - source: salt://pgbouncer/files/{{ file }}.jinja
    - template: jinja
    - user: postgres
    - group: postgres
    - mode: '{{ mode }}'
    - show_changes: {{ file != "userlist.txt" }}
    - require:
      - pkg: pgbouncer-package-installed
{%- endfor %}
{%- for cluster in pgcluster.node.pgbouncer %}

pgbouncer-routes-{{ cluster }}-to-leader:
  pgcluster.pgbouncer_routed:
    - name: {{ cluster }}
    - timeout: 300
    - require:
      - pkg: pgbouncer-package-installed
{%- endfor %}
