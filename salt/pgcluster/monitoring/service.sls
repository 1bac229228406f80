{#- The exporters this host runs, and on the monitoring host Prometheus and Alertmanager, enabled
    and running; a change of configuration or of the host's certificate restarts them. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set m = pgcluster.monitoring %}
{%- set node = pgcluster.node %}

include:
  - {{ tplroot }}.monitoring.config

monitoring-node-exporter-running:
  service.running:
    - name: prometheus-node-exporter
    - enable: True
    - watch:
      - file: monitoring-node-exporter-configured
      - file: monitoring-web-tls-configured
      - group: monitoring-prometheus-reads-the-host-key
      - sls: {{ tplroot }}.pki
    - require:
      - file: monitoring-textfile-dir-present
{%- if node.member %}

monitoring-postgres-exporter-running:
  service.running:
    - name: prometheus-postgres-exporter
    - enable: True
    - watch:
      - file: monitoring-postgres-exporter-configured
      - file: monitoring-postgres-exporter-queries-installed
      - file: monitoring-web-tls-configured
      - group: monitoring-prometheus-reads-the-host-key
      - sls: {{ tplroot }}.pki

monitoring-table-sizes-timer-active:
  service.running:
    - name: pgcluster-table-sizes.timer
    - enable: True
    - watch:
      - file: monitoring-table-sizes-units-installed
      - file: monitoring-table-sizes-installed
      - file: monitoring-textfile-library-installed
    - require:
      - module: monitoring-table-sizes-units-installed
      - file: monitoring-textfile-dir-present
{%- endif %}
{%- if node.pgbouncer %}

monitoring-pgbouncer-exporter-running:
  service.running:
    - name: pgcluster-pgbouncer-exporter
    - enable: True
    - watch:
      - file: monitoring-pgbouncer-exporter-installed
      - file: monitoring-pgbouncer-exporter-unit-installed
      - sls: {{ tplroot }}.pki
    - require:
      - module: monitoring-pgbouncer-exporter-unit-installed
      - service: pgbouncer-service-running
{%- endif %}
{%- if node.backup %}

monitoring-pgbackrest-textfile-timer-active:
  service.running:
    - name: pgcluster-pgbackrest-textfile.timer
    - enable: True
    - watch:
      - file: monitoring-pgbackrest-textfile-units-installed
      - file: monitoring-pgbackrest-textfile-installed
      - file: monitoring-textfile-library-installed
    - require:
      - module: monitoring-pgbackrest-textfile-units-installed
      - file: monitoring-textfile-dir-present
{%- endif %}
{%- if node.monitor %}

monitoring-alertmanager-running:
  service.running:
    - name: prometheus-alertmanager
    - enable: True
    - watch:
      - file: monitoring-alertmanager-configured
      - file: monitoring-prometheus-args-configured

monitoring-prometheus-running:
  service.running:
    - name: prometheus
    - enable: True
    - watch:
      - file: monitoring-prometheus-configured
      - file: monitoring-prometheus-rules-configured
      - file: monitoring-prometheus-args-configured
      - file: monitoring-web-tls-configured
      - module: monitoring-prometheus-sees-its-groups
      - group: monitoring-prometheus-reads-the-host-key
      - sls: {{ tplroot }}.pki
    - require:
      - service: monitoring-alertmanager-running

{#- Ready: Prometheus answers over TLS with its rules loaded. #}
monitoring-prometheus-ready:
  pgcluster.https_ready:
    - name: https://{{ node.address }}:{{ m.ports.prometheus }}/-/ready
    - ca_file: {{ node.pki.files.ca }}
    - timeout: 120
    - require:
      - service: monitoring-prometheus-running
{%- endif %}
