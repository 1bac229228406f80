{#- pgBackRest on a database server (archive-push/get, restore, TLS server for the
    repository host) or on the backup host (the repository, its TLS server, the stanza,
    the scheduled backups). #}
{%- from "pgbackrest/map.jinja" import repo with context %}
include:
  - pgbackrest.install
  - pgbackrest.config
  - pgbackrest.service
{%- if repo %}
  - pgbackrest.repository
  - pgbackrest.schedule
{%- endif %}
