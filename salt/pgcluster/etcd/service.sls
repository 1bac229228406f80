{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set e = pgcluster.etcd %}
{%- set cluster = pgcluster.node.etcd %}
{%- set f = pgcluster.node.pki.files %}

include:
  - {{ tplroot }}.etcd.config

{#- A host with no etcd data yet: added to the running cluster (etcdctl member add) or, when
    there is none yet, one of the new cluster's founders. A member with its data: nothing. #}
etcd-member-joined:
  pgcluster.etcd_joined:
    - name: {{ grains.id }}
    - peers: {{ pgcluster.node.etcd_peers | json }}
    - endpoints: {{ pgcluster.node.etcd_endpoints | json }}
    - token: pgcluster-{{ cluster }}
    - data_dir: {{ e.data_root }}/{{ cluster }}
    - env_file: {{ e.initial_env_file }}
    - tls: {{ pgcluster.node.pki.files | json }}
    - require:
      - file: etcd-data-dir-present
      - sls: {{ tplroot }}.pki

{#- Started with its configuration; a running etcd is not restarted here (all etcd hosts of a
    highstate would restart at once and the cluster lose its quorum for a moment). #}
etcd-service-running:
  service.running:
    - name: {{ e.service }}
    - enable: True
    - require:
      - module: etcd-initial-environment-loaded
      - pgcluster: etcd-member-joined
      - file: etcd-environment-configured
      - file: etcd-data-dir-present
      - group: etcd-reads-the-host-key
      - sls: {{ tplroot }}.pki

{#- A changed environment or a renewed certificate is read on restart: one etcd host of the
    cluster at a time, under an etcd lock, only while the others are healthy. #}
etcd-restarted-one-host-at-a-time:
  pgcluster.etcd_restarted:
    - name: {{ grains.id }}
    - service: {{ e.service }}
    - endpoints: {{ pgcluster.node.etcd_endpoints | json }}
    - local: {{ pgcluster.node.address }}:{{ e.client_port }}
    - tls: {{ f | json }}
    - files:
      - /etc/default/etcd
      - /etc/systemd/system/{{ e.service }}.service.d/pgcluster.conf
      - {{ f.ca }}
      - {{ f.cert }}
      - {{ f.key }}
    - require:
      - service: etcd-service-running

etcd-cluster-healthy:
  pgcluster.etcd_healthy:
    - endpoints: {{ pgcluster.node.etcd_endpoints | json }}
    - tls: {{ pgcluster.node.pki.files | json }}
    - timeout: 180
    - require:
      - pgcluster: etcd-restarted-one-host-at-a-time
