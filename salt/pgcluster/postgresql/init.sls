{%- set tplroot = tpldir.split("/")[0] %}
include:
  - {{ tplroot }}.postgresql.install
  - {{ tplroot }}.postgresql.default_cluster
