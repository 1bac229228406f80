{#- Removes the monitoring component from this minion, whatever its roles (also after
    pgcluster:monitoring:enabled was set to false): services, packages, the formula's files;
    Prometheus's history only with pgcluster:clean:data: true. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set m = pgcluster.monitoring %}
{%- set services = ["pgcluster-pgbackrest-textfile.timer", "pgcluster-table-sizes.timer", "prometheus", "prometheus-alertmanager",
                    "pgcluster-pgbouncer-exporter", "prometheus-postgres-exporter", "prometheus-node-exporter"] %}
{%- set pkgs = [] %}
{%- for _, names in m.packages | dictsort %}{% do pkgs.extend(names) %}{% endfor %}

monitoring-clean-services-dead:
  service.dead:
    - names: {{ services | json }}
    - enable: False

monitoring-clean-packages-removed:
  pkg.removed:
    - pkgs: {{ pkgs | json }}
    - require:
      - service: monitoring-clean-services-dead

monitoring-clean-files-absent:
  file.absent:
    - names:
      - /etc/pgcluster/monitoring
      - /etc/systemd/system/pgcluster-pgbackrest-textfile.service
      - /etc/systemd/system/pgcluster-pgbackrest-textfile.timer
      - /etc/systemd/system/prometheus.service.d/pgcluster.conf
      - /etc/systemd/system/pgcluster-pgbouncer-exporter.service
      - /etc/systemd/system/pgcluster-table-sizes.service
      - /etc/systemd/system/pgcluster-table-sizes.timer
      - {{ pgcluster.lib_dir }}/pgcluster-table-sizes
      - {{ m.textfile_dir }}/pgcluster-tables.prom
      - {{ pgcluster.lib_dir }}/pgcluster-pgbouncer-exporter
      - {{ pgcluster.lib_dir }}/pgbackrest-textfile
      - {{ pgcluster.lib_dir }}/pgcluster_textfile.py
      - {{ m.rules_file }}
      - {{ m.textfile_dir }}/pgbackrest.prom
    - require:
      - service: monitoring-clean-services-dead
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: monitoring-clean-files-absent
{%- if pgcluster.clean.data %}

monitoring-clean-data-absent:
  file.absent:
    - names:
      - /var/lib/prometheus/metrics2
      - /var/lib/prometheus/alertmanager
    - require:
      - service: monitoring-clean-services-dead
{%- endif %}
