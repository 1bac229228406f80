{#- Scheduled backups: one systemd timer per cluster and backup type on the backup host.
    The backup host knows every member, and pgBackRest backs up whichever is the leader:
    failovers need no edit. The timer runs the pgbackrest execution module through
    `salt-call --local` (no master needed; systemd finds it on its fixed PATH, where packages
    and pip put it): it leaves out a database server that is down, and still runs pgBackRest
    as the repository's user. An empty schedule removes that timer. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}

include:
  - {{ tplroot }}.pgbackrest.repository
{%- for name in pgcluster.node.backup %}
{%- set c = pgcluster.clusters[name] %}
{%- set stanza = c.pgbackrest.stanza %}
{%- for type, when in c.pgbackrest.schedule | dictsort %}
{%- set unit = "pgbackrest-" ~ stanza ~ "-" ~ type %}
{%- if when %}

{{ unit }}-units-installed:
  file.managed:
    - names:
      - /etc/systemd/system/{{ unit }}.service:
        - contents: |
            # Managed by Salt (pgcluster formula).
            [Unit]
            Description=pgBackRest {{ type }} backup of stanza {{ stanza }}
            After=network-online.target pgbackrest.service
            Wants=network-online.target

            [Service]
            Type=oneshot
            ExecStart=salt-call --local --retcode-passthrough --log-level=warning --out=json pgbackrest.backup {{ stanza }} kind={{ type }}
      - /etc/systemd/system/{{ unit }}.timer:
        - contents: |
            # Managed by Salt (pgcluster formula).
            [Unit]
            Description=pgBackRest {{ type }} backup of stanza {{ stanza }}: {{ when }}

            [Timer]
            OnCalendar={{ when }}
            Persistent=true

            [Install]
            WantedBy=timers.target
    - mode: '0644'
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: {{ unit }}-units-installed

{{ unit }}-timer-active:
  service.running:
    - name: {{ unit }}.timer
    - enable: True
    - watch:
      - file: {{ unit }}-units-installed
    - require:
      - module: {{ unit }}-units-installed
      - pgbackrest: pgbackrest-stanza-{{ stanza }}-present
{%- else %}

{{ unit }}-timer-stopped:
  service.dead:
    - name: {{ unit }}.timer
    - enable: False

{{ unit }}-units-absent:
  file.absent:
    - names:
      - /etc/systemd/system/{{ unit }}.timer
      - /etc/systemd/system/{{ unit }}.service
    - require:
      - service: {{ unit }}-timer-stopped
{%- endif %}
{%- endfor %}
{%- endfor %}
