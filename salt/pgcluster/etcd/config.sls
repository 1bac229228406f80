{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set cluster = pgcluster.node.etcd %}

include:
  - {{ tplroot }}.etcd.install
  - {{ tplroot }}.pki

{#- etcd serves and talks to its peers over TLS with the host's key (group of pgcluster.pki). #}
etcd-reads-the-host-key:
  group.present:
    - name: {{ pgcluster.pki.group }}
    - addusers:
      - etcd
    - require:
      - group: pgcluster-pki-group-present
      - pkg: etcd-packages-installed

etcd-data-dir-present:
  file.directory:
    - name: {{ pgcluster.etcd.data_root }}/{{ cluster }}
    - user: etcd
    - group: etcd
    - mode: '0700'
    - require:
      - pkg: etcd-packages-installed

etcd-environment-configured:
  file.managed:
    - name: /etc/default/etcd
    - source: salt://{{ tplroot }}/etcd/files/etcd.default.jinja
    - template: jinja
    - context:
        tplroot: {{ tplroot }}
        cluster: {{ cluster }}
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - pkg: etcd-packages-installed

{#- The first start's ETCD_INITIAL_* come from a file of their own, read by the service through
    a drop-in: changing the cluster's etcd hosts must not restart every running member at once. #}
etcd-initial-environment-read-by-service:
  file.managed:
    - name: /etc/systemd/system/{{ pgcluster.etcd.service }}.service.d/pgcluster.conf
    - makedirs: True
    - contents: |
        # Managed by Salt (pgcluster formula).
        [Service]
        EnvironmentFile=-{{ pgcluster.etcd.initial_env_file }}
    - user: root
    - group: root
    - mode: '0644'

{#- systemd reads the drop-in only after a reload: before, etcd would start without the initial
    cluster (and found a cluster of its own). #}
etcd-initial-environment-loaded:
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: etcd-initial-environment-read-by-service
