{%- set tplroot = tpldir.split("/")[0] %}
include:
  - {{ tplroot }}.client.config
