{%- set tplroot = tpldir.split("/")[0] %}
include:
  - {{ tplroot }}.patroni.install
  - {{ tplroot }}.patroni.events
  - {{ tplroot }}.patroni.config
  - {{ tplroot }}.patroni.service
  - {{ tplroot }}.patroni.databases
