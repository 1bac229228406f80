{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set p = pgcluster.patroni %}
{%- set pg = pgcluster.postgresql %}

include:
  - {{ tplroot }}.patroni.install
  - {{ tplroot }}.pki

{#- PostgreSQL and Patroni (REST API, etcd client) use the host's key (group of pgcluster.pki). #}
patroni-postgres-reads-the-host-key:
  group.present:
    - name: {{ pgcluster.pki.group }}
    - addusers:
      - postgres
    - require:
      - group: pgcluster-pki-group-present
      - pkg: postgresql-packages-installed

patroni-config-dir-present:
  file.directory:
    - name: {{ p.config_dir }}
    - user: postgres
    - group: postgres
    - mode: '0750'

{#- Holds every password of the cluster: 0600, owned by postgres, never diffed. (Not checked by
    `patroni --validate-config`: it also requires every etcd host to answer, which a first
    highstate of several hosts cannot promise.) #}
patroni-config-managed:
  file.managed:
    - name: {{ p.config_dir }}/config.yml
    - source: salt://{{ tplroot }}/patroni/files/config.yml.jinja
    - template: jinja
    - context:
        tplroot: {{ tplroot }}
    - user: postgres
    - group: postgres
    - mode: '0600'
    - show_changes: False
    - require:
      - file: patroni-config-dir-present

{#- The clone method of a physical migration's standby leader (config.yml names it only then). #}
patroni-clone-source-installed:
  file.managed:
    - name: {{ pgcluster.lib_dir }}/pgcluster-clone-source
    - source: salt://{{ tplroot }}/patroni/files/pgcluster-clone-source.sh
    - makedirs: True
    - mode: '0755'

patroni-data-root-present:
  file.directory:
    - name: {{ pg.data_root }}/{{ pg.version }}
    - user: postgres
    - group: postgres
    - mode: '0755'
    - require:
      - pkg: postgresql-packages-installed

patroni-systemd-unit-installed:
  file.managed:
    - name: /etc/systemd/system/patroni.service
    - source: salt://{{ tplroot }}/patroni/files/patroni.service.jinja
    - template: jinja
    - context:
        tplroot: {{ tplroot }}
    - mode: '0644'
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: patroni-systemd-unit-installed
