{#- The cluster's firewall table is removed (ExecStop deletes `inet pgcluster`); nftables stays. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set fw = pgcluster.firewall %}

pgcluster-firewall-clean-service-dead:
  service.dead:
    - name: {{ fw.service }}
    - enable: False

pgcluster-firewall-clean-files-absent:
  file.absent:
    - names:
      - /etc/systemd/system/{{ fw.service }}.service
      - {{ fw.rules }}
    - require:
      - service: pgcluster-firewall-clean-service-dead
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: pgcluster-firewall-clean-files-absent
