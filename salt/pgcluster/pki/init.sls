{#- TLS material of this host: the CA (on the CA minion), the CA certificate (every host), this
    host's key (generated here, never leaving the host) and its certificate, renewed by highstate
    `pki:days_remaining` days before it expires. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
include:
{%- if pgcluster.node.pki.ca and pgcluster.pki.mode == "salt" %}
  - {{ tplroot }}.pki.ca
{%- endif %}
  - {{ tplroot }}.pki.host
