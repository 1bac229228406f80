{#- Debian's exporters this host's roles call for; Prometheus and Alertmanager on the monitoring
    host. The exporters' user (prometheus) reads the host key: they serve TLS. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set m = pgcluster.monitoring %}
{%- set node = pgcluster.node %}
{%- set pkgs = m.packages.node[:] %}
{%- if node.member %}{% do pkgs.extend(m.packages.postgres) %}{% endif %}
{%- if node.pgbouncer %}{% do pkgs.extend(m.packages.pgbouncer) %}{% endif %}
{%- if node.monitor %}{% do pkgs.extend(m.packages.prometheus + m.packages.alertmanager) %}{% endif %}

include:
  - {{ tplroot }}.pki

monitoring-packages-installed:
  pkg.installed:
    - pkgs: {{ pkgs | json }}

monitoring-prometheus-reads-the-host-key:
  group.present:
    - name: {{ pgcluster.pki.group }}
    - addusers:
      - prometheus
    - require:
      - group: pgcluster-pki-group-present
      - pkg: monitoring-packages-installed
