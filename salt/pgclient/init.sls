{#- Application hosts (PgBouncer hosts that are no database server): a libpq service per
    database, through the local PgBouncer, and root's credentials, so that
    `psql service=<db>` and `PGSERVICE=<db> pgbench` connect with no prompt. #}
{%- from "pgcluster/map.jinja" import pgcluster with context %}

pgclient-service-file-managed:
  file.managed:
    - name: /etc/postgresql-common/pg_service.conf
    - makedirs: True
    - mode: '0644'
    - contents: |
        # Managed by Salt (pgcluster formula): one service per database, through PgBouncer.
{%- for name in pgcluster.node.pgbouncer %}
{%- set c = salt["pgcluster.cluster"](pgcluster, name) %}
{%- for db, spec in c.databases | dictsort %}
        [{{ db }}]
        host=127.0.0.1
        port={{ pgcluster.pgbouncer.port }}
        dbname={{ db }}
        user={{ spec.owner }}
{%- endfor %}
{%- endfor %}

pgclient-root-pgpass-managed:
  file.managed:
    - name: /root/.pgpass
    - source: salt://pgclient/files/pgpass.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0600'
    - show_changes: False
