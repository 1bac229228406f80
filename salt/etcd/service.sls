{%- from "pgcluster/map.jinja" import pgcluster with context %}

include:
  - etcd.config

etcd-service-running:
  service.running:
    - name: {{ pgcluster.etcd.service }}
    - enable: True
    - watch:
      - file: etcd-environment-configured
      - file: etcd-data-dir-present

etcd-cluster-healthy:
  pgcluster.etcd_healthy:
    - endpoints: {{ salt["pgcluster.etcd_endpoints"](pgcluster, pgcluster.node.etcd) | json }}
    - timeout: 180
    - require:
      - service: etcd-service-running
