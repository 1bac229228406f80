{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set fw = pgcluster.firewall %}

include:
  - {{ tplroot }}.firewall.config

pgcluster-firewall-unit-installed:
  file.managed:
    - name: /etc/systemd/system/{{ fw.service }}.service
    - source: salt://{{ tplroot }}/firewall/files/pgcluster-firewall.service.jinja
    - template: jinja
    - context:
        tplroot: {{ tplroot }}
    - mode: '0644'
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: pgcluster-firewall-unit-installed

pgcluster-firewall-active:
  service.running:
    - name: {{ fw.service }}
    - enable: True
    - reload: True
    - watch:
      - file: pgcluster-firewall-rules-managed
    - require:
      - module: pgcluster-firewall-unit-installed
