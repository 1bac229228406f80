{#- Patroni stopped (it stops PostgreSQL), its unit, configuration (the cluster's passwords),
    virtualenv, wrapper, callback and events relay removed. The data directory stays unless
    pgcluster:clean:data (postgresql.clean). #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set p = pgcluster.patroni %}

patroni-clean-services-dead:
  service.dead:
    - names:
      - patroni
      - pgcluster-events
      - pgcluster-events.socket
    - enable: False

patroni-clean-files-absent:
  file.absent:
    - names:
      - /etc/systemd/system/patroni.service
      - /etc/systemd/system/pgcluster-events.service
      - /etc/systemd/system/pgcluster-events.socket
      - {{ p.config_dir }}
      - /usr/local/bin/patronictl
      - {{ p.callback }}
      - {{ pgcluster.lib_dir }}/pgcluster-events.py
{%- if p.install_from == "pip" %}
      - {{ p.venv }}
{%- endif %}
    - require:
      - service: patroni-clean-services-dead
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: patroni-clean-files-absent
{%- if p.install_from != "pip" %}

patroni-clean-package-removed:
  pkg.removed:
    - name: patroni
    - require:
      - service: patroni-clean-services-dead
{%- endif %}
