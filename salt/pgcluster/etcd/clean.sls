{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set e = pgcluster.etcd %}

etcd-clean-service-dead:
  service.dead:
    - name: {{ e.service }}
    - enable: False

etcd-clean-packages-removed:
  pkg.removed:
    - pkgs: {{ e.packages | json }}
    - require:
      - service: etcd-clean-service-dead

etcd-clean-config-absent:
  file.absent:
    - names:
      - /etc/default/etcd
      - {{ e.initial_env_file }}
      - /etc/systemd/system/{{ e.service }}.service.d/pgcluster.conf
    - require:
      - pkg: etcd-clean-packages-removed
{%- if pgcluster.clean.data %}

etcd-clean-data-absent:
  file.absent:
    - name: {{ e.data_root }}/{{ pgcluster.node.etcd }}
    - require:
      - service: etcd-clean-service-dead
{%- endif %}
