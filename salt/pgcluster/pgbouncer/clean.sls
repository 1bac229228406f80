{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set b = pgcluster.pgbouncer %}

pgbouncer-clean-service-dead:
  service.dead:
    - name: {{ b.service }}
    - enable: False

pgbouncer-clean-package-removed:
  pkg.removed:
    - name: {{ b.package }}
    - require:
      - service: pgbouncer-clean-service-dead

{#- The auth_file holds the roles' verifiers: it goes with the rest of the formula's files. #}
pgbouncer-clean-files-absent:
  file.absent:
    - names:
      - /etc/systemd/system/{{ b.service }}.service.d/pgcluster.conf
      - {{ pgcluster.lib_dir }}/pgbouncer-route-at-start
      - {{ pgcluster.lib_dir }}/pgcluster_routing.py
      - {{ b.conf_dir }}/pgbouncer.ini
      - {{ b.conf_dir }}/listen.ini
      - {{ b.conf_dir }}/pg_hba.conf
      - {{ b.conf_dir }}/userlist.txt
{%- for cluster in pgcluster.node.pgbouncer %}
      - {{ b.conf_dir }}/routing-{{ cluster }}.ini
      - {{ b.conf_dir }}/routing-{{ cluster }}.ini.lock
      - {{ b.conf_dir }}/routing-{{ cluster }}.json
{%- endfor %}
    - require:
      - pkg: pgbouncer-clean-package-removed
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: pgbouncer-clean-files-absent
