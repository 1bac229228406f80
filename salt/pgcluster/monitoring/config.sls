{#- Configuration of this host's exporters (TLS with the host's certificate, listening on the
    host's address: the firewall lets only the monitoring host in), and on the monitoring host
    Prometheus, its alert rules and Alertmanager, generated from the model. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set m = pgcluster.monitoring %}
{%- set node = pgcluster.node %}
{%- set f = node.pki.files %}
{%- set addr = node.address %}
{%- set conf_dir = "/etc/pgcluster/monitoring" %}
{%- set web = conf_dir ~ "/web.yml" %}

include:
  - {{ tplroot }}.monitoring.install

monitoring-config-dir-present:
  file.directory:
    - name: {{ conf_dir }}
    - user: root
    - group: root
    - mode: '0755'
    - makedirs: True

{#- The exporters' (and Prometheus's) web server: TLS with this host's certificate. #}
monitoring-web-tls-configured:
  file.managed:
    - name: {{ web }}
    - contents: |
        # Managed by Salt (pgcluster formula): TLS of the exporters' web servers.
        tls_server_config:
          cert_file: {{ f.cert }}
          key_file: {{ f.key }}
          min_version: TLS12
    - mode: '0644'
    - require:
      - file: monitoring-config-dir-present

{%- set node_args = [
      "--web.listen-address=" ~ addr ~ ":" ~ m.ports.node,
      "--web.config.file=" ~ web,
      "--collector.textfile.directory=" ~ m.textfile_dir,
      "--collector.filesystem.fs-types-exclude=^(" ~ m.filesystem_types_exclude | join("|") ~ ")$"] %}
monitoring-node-exporter-configured:
  file.managed:
    - name: /etc/default/prometheus-node-exporter
    - contents: |
        # Managed by Salt (pgcluster formula).
        ARGS="{{ node_args | join(" ") }}"
    - mode: '0644'
    - require:
      - pkg: monitoring-packages-installed

monitoring-textfile-dir-present:
  file.directory:
    - name: {{ m.textfile_dir }}
    - user: prometheus
    - group: prometheus
    - mode: '0755'
    - makedirs: True
    - require:
      - pkg: monitoring-packages-installed
{%- if node.member %}
{%- set c = pgcluster.clusters[node.member] %}

monitoring-postgres-exporter-queries-installed:
  file.managed:
    - name: {{ conf_dir }}/postgres-queries.yaml
    - source: salt://{{ tplroot }}/monitoring/files/postgres-exporter-queries.yaml
    - mode: '0644'
    - require:
      - file: monitoring-config-dir-present

{#- No password: the OS user prometheus logs in as the monitoring role over the local socket
    (peer, pg_ident map pgcluster-monitor; see pgcluster_model.pg_hba). #}
monitoring-postgres-exporter-configured:
  file.managed:
    - name: /etc/default/prometheus-postgres-exporter
    - contents: |
        # Managed by Salt (pgcluster formula).
        DATA_SOURCE_NAME='host={{ pgcluster.postgresql.socket_dir }} port={{ c.port }} user={{ m.role }} dbname=postgres sslmode=disable'
        ARGS="--web.listen-address={{ addr }}:{{ m.ports.postgres }} --web.config.file={{ web }} --extend.query-path={{ conf_dir }}/postgres-queries.yaml"
    - mode: '0644'
    - require:
      - pkg: monitoring-packages-installed
{%- endif %}
{%- if node.pgbouncer %}

{#- pgcluster's PgBouncer exporter (Debian 12's fails on PgBouncer 1.18 and serves no TLS): as
    postgres, the admin console's peer user (stats_users), over TLS with the host certificate. #}
monitoring-pgbouncer-exporter-installed:
  file.managed:
    - name: {{ pgcluster.lib_dir }}/pgcluster-pgbouncer-exporter
    - source: salt://{{ tplroot }}/monitoring/files/pgbouncer-exporter.py
    - makedirs: True
    - mode: '0755'

{%- set exporter_args = [addr, m.ports.pgbouncer, f.cert, f.key, pgcluster.postgresql.socket_dir, pgcluster.pgbouncer.port] %}
monitoring-pgbouncer-exporter-unit-installed:
  file.managed:
    - name: /etc/systemd/system/pgcluster-pgbouncer-exporter.service
    - contents: |
        # Managed by Salt (pgcluster formula).
        [Unit]
        Description=PgBouncer metrics for Prometheus (pgcluster)
        After=pgbouncer.service

        [Service]
        User=postgres
        ExecStart={{ pgcluster.lib_dir }}/pgcluster-pgbouncer-exporter {{ exporter_args | join(" ") }}
        Restart=always
        RestartSec=5

        [Install]
        WantedBy=multi-user.target
    - mode: '0644'
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: monitoring-pgbouncer-exporter-unit-installed
{%- endif %}
{%- if node.member or node.backup %}

{#- What writes the textfile collector's files (the scripts below import it). #}
monitoring-textfile-library-installed:
  file.managed:
    - name: {{ pgcluster.lib_dir }}/pgcluster_textfile.py
    - source: salt://_utils/pgcluster_textfile.py
    - makedirs: True
    - mode: '0644'
{%- endif %}
{%- if node.member %}
{%- set c = pgcluster.clusters[node.member] %}

{#- The largest tables of each database, as the monitoring role (no read of any row). #}
monitoring-table-sizes-installed:
  file.managed:
    - name: {{ pgcluster.lib_dir }}/pgcluster-table-sizes
    - source: salt://{{ tplroot }}/monitoring/files/table-sizes.py
    - mode: '0755'
    - require:
      - file: monitoring-textfile-library-installed

{%- set sizes_args = [m.role, pgcluster.postgresql.socket_dir, c.port, m.top_tables, m.textfile_dir ~ "/pgcluster-tables.prom"] %}
monitoring-table-sizes-units-installed:
  file.managed:
    - names:
      - /etc/systemd/system/pgcluster-table-sizes.service:
        - contents: |
            # Managed by Salt (pgcluster formula).
            [Unit]
            Description=The largest tables of each database for the node exporter's textfile collector

            [Service]
            Type=oneshot
            User=prometheus
            ExecStart={{ pgcluster.lib_dir }}/pgcluster-table-sizes {{ sizes_args | join(" ") }}
      - /etc/systemd/system/pgcluster-table-sizes.timer:
        - contents: |
            # Managed by Salt (pgcluster formula).
            [Unit]
            Description=The largest tables of each database, every {{ m.textfile_interval }}

            [Timer]
            OnActiveSec=0
            OnUnitActiveSec={{ m.textfile_interval }}

            [Install]
            WantedBy=timers.target
    - mode: '0644'
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: monitoring-table-sizes-units-installed
{%- endif %}
{%- if node.backup %}
{%- set b = pgcluster.pgbackrest %}

{#- pgBackRest's facts (age and size of the last backups, repository size) for the textfile
    collector, written by a timer. #}
monitoring-pgbackrest-textfile-installed:
  file.managed:
    - name: {{ pgcluster.lib_dir }}/pgbackrest-textfile
    - source: salt://{{ tplroot }}/monitoring/files/pgbackrest-textfile.py
    - mode: '0755'
    - require:
      - file: monitoring-textfile-library-installed

monitoring-pgbackrest-textfile-units-installed:
  file.managed:
    - names:
      - /etc/systemd/system/pgcluster-pgbackrest-textfile.service:
        - contents: |
            # Managed by Salt (pgcluster formula).
            [Unit]
            Description=pgBackRest facts for the node exporter's textfile collector

            [Service]
            Type=oneshot
            ExecStart={{ pgcluster.lib_dir }}/pgbackrest-textfile {{ b.repo_user }} {{ b.repo_path }} {{ m.textfile_dir }}/pgbackrest.prom
      - /etc/systemd/system/pgcluster-pgbackrest-textfile.timer:
        - contents: |
            # Managed by Salt (pgcluster formula).
            [Unit]
            Description=pgBackRest facts for the node exporter, every {{ m.textfile_interval }}

            [Timer]
            OnActiveSec=0
            OnUnitActiveSec={{ m.textfile_interval }}

            [Install]
            WantedBy=timers.target
    - mode: '0644'
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: monitoring-pgbackrest-textfile-units-installed
{%- endif %}
{%- if node.monitor %}

monitoring-prometheus-rules-configured:
  file.managed:
    - name: {{ m.rules_file }}
    - source: salt://{{ tplroot }}/monitoring/files/generated.jinja
    - template: jinja
    - context:
        function: alert_rules
    - mode: '0644'
    - check_cmd: /usr/bin/promtool check rules
    - require:
      - pkg: monitoring-packages-installed

monitoring-prometheus-configured:
  file.managed:
    - name: /etc/prometheus/prometheus.yml
    - source: salt://{{ tplroot }}/monitoring/files/generated.jinja
    - template: jinja
    - context:
        function: prometheus_config
    - mode: '0644'
    - check_cmd: /usr/bin/promtool check config --syntax-only
    - require:
      - file: monitoring-prometheus-rules-configured

{#- Receivers may carry tokens in their URLs: readable by Alertmanager's user only, never shown. #}
monitoring-alertmanager-configured:
  file.managed:
    - name: /etc/prometheus/alertmanager.yml
    - source: salt://{{ tplroot }}/monitoring/files/generated.jinja
    - template: jinja
    - context:
        function: alertmanager_config
    - user: root
    - group: prometheus
    - mode: '0640'
    - show_changes: False
    - check_cmd: /usr/bin/amtool check-config
    - require:
      - pkg: monitoring-packages-installed

{%- set prometheus_args = [
      "--config.file=/etc/prometheus/prometheus.yml",
      "--storage.tsdb.retention.time=" ~ m.retention,
      "--web.listen-address=" ~ addr ~ ":" ~ m.ports.prometheus,
      "--web.config.file=" ~ web,
      "--web.external-url=https://" ~ addr ~ ":" ~ m.ports.prometheus ~ "/"] %}

{#- Prometheus: a year of history, its web server on this host's address over TLS (the Salt
    master's runners query it); no admin API, no lifecycle endpoints. Alertmanager: loopback
    only, no gossip port. #}
monitoring-prometheus-args-configured:
  file.managed:
    - names:
      - /etc/default/prometheus:
        - contents: |
            # Managed by Salt (pgcluster formula).
            ARGS="{{ prometheus_args | join(" ") }}"
      - /etc/default/prometheus-alertmanager:
        - contents: |
            # Managed by Salt (pgcluster formula).
            ARGS="--config.file=/etc/prometheus/alertmanager.yml --web.listen-address=127.0.0.1:{{ m.ports.alertmanager }} --cluster.listen-address="
    - mode: '0644'
    - require:
      - pkg: monitoring-packages-installed

{#- Debian's unit maps every other group to nobody (PrivateUsers): Prometheus could not read the
    host key it shows etcd and the exporters' TLS needs. #}
monitoring-prometheus-sees-its-groups:
  file.managed:
    - name: /etc/systemd/system/prometheus.service.d/pgcluster.conf
    - contents: |
        # Managed by Salt (pgcluster formula).
        [Service]
        PrivateUsers=false
    - makedirs: True
    - mode: '0644'
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: monitoring-prometheus-sees-its-groups
{%- endif %}
