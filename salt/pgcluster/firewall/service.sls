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

{#- Retried: one lab run saw this reload fail once (while the host was made a member) and pass on
    every later run; a persistent error still fails after the third attempt. #}
pgcluster-firewall-active:
  service.running:
    - name: {{ fw.service }}
    - enable: True
    - reload: True
    - retry:
        attempts: 3
        interval: 2
    - watch:
      - file: pgcluster-firewall-rules-managed
    - require:
      - module: pgcluster-firewall-unit-installed
