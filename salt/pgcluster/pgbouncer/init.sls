{%- set tplroot = tpldir.split("/")[0] %}
include:
  - {{ tplroot }}.pgbouncer.install
  - {{ tplroot }}.pgbouncer.config
  - {{ tplroot }}.pgbouncer.service
  - {{ tplroot }}.pgbouncer.routing
