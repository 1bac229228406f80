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
