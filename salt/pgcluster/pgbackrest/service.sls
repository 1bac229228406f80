{#- pgBackRest's TLS server (Debian's pgbackrest.service): on a database server it serves the
    backup host (backups, check); on the backup host, the database servers (archive, restore).
    It reads its configuration and certificates at start: a change restarts it. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set b = pgcluster.pgbackrest %}
{%- set runas = pgcluster.node.pgbackrest_user %}

include:
  - {{ tplroot }}.pgbackrest.config

pgbackrest-server-runs-as-user:
  file.managed:
    - name: /etc/systemd/system/pgbackrest.service.d/pgcluster.conf
    - makedirs: True
    - mode: '0644'
    - contents: |
        # Managed by Salt (pgcluster formula).
        [Service]
        User={{ runas }}
        Group={{ runas }}
        ExecStart=
        ExecStart={{ b.bin }} --config={{ b.config }} server
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: pgbackrest-server-runs-as-user

pgbackrest-server-running:
  service.running:
    - name: pgbackrest
    - enable: True
    - require:
      - module: pgbackrest-server-runs-as-user
      - sls: {{ tplroot }}.pgbackrest.install
    - watch:
      - file: pgbackrest-config-managed
      - sls: {{ tplroot }}.pki
      - group: pgbackrest-{{ runas }}-reads-the-host-key
      - file: pgbackrest-server-runs-as-user
