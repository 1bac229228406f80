{#- Application hosts (PgBouncer hosts that are no database server): a libpq service per
    database, through the local PgBouncer (and <db>_ro: its reads, on a replica), and credentials (~/.pgpass, 0600) for root and
    for an OS account named after each database's owner role - the account the application
    runs as. `psql service=<db>` works for both; `PGSERVICE=<db> pgbench` for the account
    (pgbench names the database after the OS user when none is given). #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}

pgclient-service-file-managed:
  file.managed:
    - name: /etc/postgresql-common/pg_service.conf
    - makedirs: True
    - mode: '0644'
    - contents: |
        # Managed by Salt (pgcluster formula): one service per database, through PgBouncer.
{%- for name in pgcluster.node.pgbouncer %}
{%- set c = pgcluster.clusters[name] %}
{%- for db, spec in c.databases | dictsort %}
{%- for suffix in ["", "_ro"] %}
        [{{ db }}{{ suffix }}]
        host=127.0.0.1
        port={{ pgcluster.pgbouncer.port }}
        dbname={{ db }}{{ suffix }}
        user={{ spec.owner }}
{%- endfor %}
{%- endfor %}
{%- endfor %}

pgclient-root-pgpass-managed:
  file.managed:
    - name: /root/.pgpass
    - source: salt://{{ tplroot }}/client/files/pgpass.jinja
    - template: jinja
    - context:
        tplroot: {{ tplroot }}
    - user: root
    - group: root
    - mode: '0600'
    - show_changes: False

{%- for name in pgcluster.node.pgbouncer %}
{%- for db, spec in pgcluster.clusters[name].databases | dictsort %}
{%- set role = spec.owner %}

pgclient-os-account-{{ role }}-present:
  user.present:
    - name: {{ role }}
    - system: True
    - home: /var/lib/pgcluster-clients/{{ role }}
    - createhome: True
    - shell: /usr/sbin/nologin

pgclient-{{ role }}-pgpass-managed:
  file.managed:
    - name: /var/lib/pgcluster-clients/{{ role }}/.pgpass
    - source: salt://{{ tplroot }}/client/files/pgpass.jinja
    - template: jinja
    - context:
        tplroot: {{ tplroot }}
    - user: {{ role }}
    - group: {{ role }}
    - mode: '0600'
    - show_changes: False
    - require:
      - user: pgclient-os-account-{{ role }}-present
{%- endfor %}
{%- endfor %}
