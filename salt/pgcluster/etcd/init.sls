{%- set tplroot = tpldir.split("/")[0] %}
include:
  - {{ tplroot }}.etcd.install
  - {{ tplroot }}.etcd.config
  - {{ tplroot }}.etcd.service
