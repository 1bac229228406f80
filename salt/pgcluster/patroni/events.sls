{#- Patroni callbacks -> Salt events: patroni-callback (run by Patroni as postgres) hands
    each event to the pgcluster-events relay (root, a long-running process under the
    minion's own Python) through a socket only root and postgres can use. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set p = pgcluster.patroni %}
{%- set scope = pgcluster.clusters[pgcluster.node.member].scope %}

patroni-callback-installed:
  file.managed:
    - name: {{ p.callback }}
    - source: salt://{{ tplroot }}/patroni/files/patroni-callback.py
    - makedirs: True
    - mode: '0755'

pgcluster-events-relay-installed:
  file.managed:
    - name: {{ pgcluster.lib_dir }}/pgcluster-events.py
    - source: salt://{{ tplroot }}/patroni/files/pgcluster-events.py
    - makedirs: True
    - mode: '0644'

pgcluster-events-units-installed:
  file.managed:
    - names:
      - /etc/systemd/system/pgcluster-events.socket:
        - contents: |
            # Managed by Salt (pgcluster formula).
            [Unit]
            Description=pgcluster: Patroni callbacks to Salt events (socket)

            [Socket]
            ListenStream={{ pgcluster.events_socket }}
            SocketUser=root
            SocketGroup=postgres
            SocketMode=0660
            DirectoryMode=0755

            [Install]
            WantedBy=sockets.target
      - /etc/systemd/system/pgcluster-events.service:
        - contents: |
            # Managed by Salt (pgcluster formula).
            [Unit]
            Description=pgcluster: Patroni callbacks to Salt events
            Requires=pgcluster-events.socket
            After=salt-minion.service

            [Service]
            ExecStart={{ grains.pythonexecutable }} {{ pgcluster.lib_dir }}/pgcluster-events.py {{ scope }}
            Restart=always
            RestartSec=1

            [Install]
            WantedBy=multi-user.target
    - mode: '0644'
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: pgcluster-events-units-installed

pgcluster-events-socket-listening:
  service.running:
    - name: pgcluster-events.socket
    - enable: True
    - require:
      - module: pgcluster-events-units-installed

pgcluster-events-relay-running:
  service.running:
    - name: pgcluster-events
    - enable: True
    - watch:
      - file: pgcluster-events-relay-installed
      - file: pgcluster-events-units-installed
    - require:
      - service: pgcluster-events-socket-listening
