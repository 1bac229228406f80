{#- The libpq service file, root's ~/.pgpass and the client OS accounts (with their .pgpass). #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}

pgclient-clean-files-absent:
  file.absent:
    - names:
      - /etc/postgresql-common/pg_service.conf
      - /root/.pgpass
{%- for name in pgcluster.node.pgbouncer %}
{%- for db, spec in pgcluster.clusters[name].databases | dictsort %}

pgclient-clean-os-account-{{ spec.owner }}-absent:
  user.absent:
    - name: {{ spec.owner }}
    - purge: True
{%- endfor %}
{%- endfor %}
