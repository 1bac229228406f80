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
pgbouncer-route-at-start-installed:
  file.managed:
    - name: /usr/local/lib/pgcluster/pgbouncer-route-at-start
    - source: salt://pgbouncer/files/pgbouncer-route-at-start.py
    - makedirs: True
    - mode: '0755'

{#- Before PgBouncer starts, route to the leader Patroni reports now (never a stale route
    after a crash). #}
pgbouncer-route-at-start-hooked:
  file.managed:
    - name: /etc/systemd/system/{{ b.service }}.service.d/pgcluster.conf
    - makedirs: True
    - mode: '0644'
    - contents: |
        # Managed by Salt (pgcluster formula).
        [Service]
        ExecStartPre=-/usr/local/lib/pgcluster/pgbouncer-route-at-start
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: pgbouncer-route-at-start-hooked
{%- for cluster in pgcluster.node.pgbouncer %}

pgbouncer-routing-{{ cluster }}-spec-managed:
  file.managed:
    - name: {{ b.conf_dir }}/routing-{{ cluster }}.json
    - contents: {{ salt["pgbouncer.routing_spec"](cluster) | json | yaml_dquote }}
    - mode: '0644'
    - require:
      - pkg: pgbouncer-package-installed

pgbouncer-routes-{{ cluster }}-to-leader:
  pgcluster.pgbouncer_routed:
    - name: {{ cluster }}
    - timeout: 300
    - require:
      - pkg: pgbouncer-package-installed
{%- endfor %}
