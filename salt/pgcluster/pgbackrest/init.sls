{%- set tplroot = tpldir.split("/")[0] %}
{#- pgBackRest on a database server (archive-push/get, restore, TLS server for the
    repository host) or on the backup host (the repository, its TLS server, the stanza,
    the scheduled backups). #}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set repo = pgcluster.node.backup | length > 0 %}
include:
  - {{ tplroot }}.pgbackrest.install
  - {{ tplroot }}.pgbackrest.config
  - {{ tplroot }}.pgbackrest.service
{%- if repo %}
  - {{ tplroot }}.pgbackrest.repository
  - {{ tplroot }}.pgbackrest.schedule
{%- endif %}
