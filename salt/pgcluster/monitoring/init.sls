{#- Monitoring: exporters on every host, Prometheus and Alertmanager on the monitoring host. #}
{%- set tplroot = tpldir.split("/")[0] %}
include:
  - {{ tplroot }}.monitoring.install
  - {{ tplroot }}.monitoring.config
  - {{ tplroot }}.monitoring.service
