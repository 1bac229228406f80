{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}

include:
  - {{ tplroot }}.etcd.config

etcd-service-running:
  service.running:
    - name: {{ pgcluster.etcd.service }}
    - enable: True
    - require:
      - module: etcd-initial-environment-loaded
    - watch:
      - file: etcd-environment-configured
      - file: etcd-initial-environment-read-by-service
      - pgcluster: etcd-member-joined
      - file: etcd-data-dir-present
      - group: etcd-reads-the-host-key
      - sls: {{ tplroot }}.pki

etcd-cluster-healthy:
  pgcluster.etcd_healthy:
    - endpoints: {{ pgcluster.node.etcd_endpoints | json }}
    - tls: {{ pgcluster.node.pki.files | json }}
    - timeout: 180
    - require:
      - service: etcd-service-running
