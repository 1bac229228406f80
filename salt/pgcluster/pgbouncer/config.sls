{#- PgBouncer for every cluster this host serves: pgbouncer.ini and its hba file, the
    auth_file with the roles' SCRAM verifiers (the same as in pg_authid, no plaintext),
    and one routing file per cluster pointing at the current leader. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set b = pgcluster.pgbouncer %}

include:
  - {{ tplroot }}.pgbouncer.install
  - {{ tplroot }}.pki

{#- PgBouncer (running as postgres) offers TLS to its clients with the host's key. #}
pgbouncer-postgres-reads-the-host-key:
  group.present:
    - name: {{ pgcluster.pki.group }}
    - addusers:
      - postgres
    - require:
      - group: pgcluster-pki-group-present
      - pkg: pgbouncer-package-installed

{#- listen.ini holds what PgBouncer reads only at start (addresses, port, socket): a change there
    restarts it (service.sls); any other change is a RELOAD. #}
{%- for file, mode in [("pgbouncer.ini", "0640"), ("listen.ini", "0640"), ("pg_hba.conf", "0640"),
                       ("userlist.txt", "0640")] %}

pgbouncer-{{ file }}-managed:
  file.managed:
    - name: {{ b.conf_dir }}/{{ file }}
    - source: salt://{{ tplroot }}/pgbouncer/files/{{ file }}.jinja
    - template: jinja
    - context:
        tplroot: {{ tplroot }}
    - user: postgres
    - group: postgres
    - mode: '{{ mode }}'
    - show_changes: {{ file != "userlist.txt" }}
    - require:
      - pkg: pgbouncer-package-installed
{%- endfor %}
{#- The one leader finder of the formula, also used by the start-up hook below. #}
pgbouncer-routing-library-installed:
  file.managed:
    - name: {{ pgcluster.lib_dir }}/pgcluster_routing.py
    - source: salt://_utils/pgcluster_routing.py
    - makedirs: True
    - mode: '0644'

pgbouncer-route-at-start-installed:
  file.managed:
    - name: {{ pgcluster.lib_dir }}/pgbouncer-route-at-start
    - source: salt://{{ tplroot }}/pgbouncer/files/pgbouncer-route-at-start.py
    - makedirs: True
    - mode: '0755'
    - require:
      - file: pgbouncer-routing-library-installed

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
        # As root (+): it rewrites routing files in {{ b.conf_dir }}. Fails closed: no stale route.
        ExecStartPre=+{{ pgcluster.lib_dir }}/pgbouncer-route-at-start {{ b.conf_dir }}
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: pgbouncer-route-at-start-hooked
{%- for cluster, spec in pgcluster.node.routing | dictsort %}

pgbouncer-routing-{{ cluster }}-spec-managed:
  file.managed:
    - name: {{ b.conf_dir }}/routing-{{ cluster }}.json
    - contents: {{ spec | json | yaml_dquote }}
    - mode: '0644'
    - require:
      - pkg: pgbouncer-package-installed
{%- endfor %}
