{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}

include:
  - {{ tplroot }}.etcd.config

etcd-service-running:
  service.running:
    - name: {{ pgcluster.etcd.service }}
    - enable: True
    - watch:
      - file: etcd-environment-configured
      - file: etcd-data-dir-present

etcd-cluster-healthy:
  pgcluster.etcd_healthy:
    - endpoints: {{ pgcluster.node.etcd_endpoints | json }}
    - timeout: 180
    - require:
      - service: etcd-service-running
