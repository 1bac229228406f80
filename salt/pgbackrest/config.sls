{#- pgbackrest.conf (on the backup host it holds the repository passphrase: 0640, group of
    the user that runs pgBackRest, never diffed) and the TLS CA, certificate and key. #}
{%- from "pgcluster/map.jinja" import pgcluster with context %}
{%- from "pgbackrest/map.jinja" import b, runas with context %}
{%- set tls = b.tls %}

include:
  - pgbackrest.install

{#- pgBackRest names its peers by minion id: the certificates carry DNS names. #}
{%- for peer, address in salt["pgcluster.pgbackrest_peers"](pgcluster, grains.id) | dictsort %}

pgbackrest-peer-{{ peer }}-resolves:
  host.only:
    - name: {{ address }}
    - hostnames:
      - {{ peer }}
{%- endfor %}

pgbackrest-config-dir-present:
  file.directory:
    - name: {{ salt["file.dirname"](b.config) }}
    - user: root
    - group: root
    - mode: '0755'

pgbackrest-config-managed:
  file.managed:
    - name: {{ b.config }}
    - source: salt://pgbackrest/files/pgbackrest.conf.jinja
    - template: jinja
    - user: root
    - group: {{ runas }}
    - mode: '0640'
    - show_changes: False
    - require:
      - file: pgbackrest-config-dir-present
      - pkg: pgbackrest-package-installed

pgbackrest-tls-dir-present:
  file.directory:
    - name: {{ b.tls_dir }}
    - user: root
    - group: {{ runas }}
    - mode: '0750'
    - require:
      - file: pgbackrest-config-dir-present
      - sls: pgbackrest.install

pgbackrest-tls-ca-managed:
  file.managed:
    - name: {{ b.tls_dir }}/ca.crt
    - contents: {{ tls.ca | json }}
    - user: root
    - group: {{ runas }}
    - mode: '0644'
    - require:
      - file: pgbackrest-tls-dir-present

pgbackrest-tls-certificate-managed:
  file.managed:
    - name: {{ b.tls_dir }}/host.crt
    - contents: {{ tls.hosts[grains.id].cert | json }}
    - user: root
    - group: {{ runas }}
    - mode: '0644'
    - require:
      - file: pgbackrest-tls-dir-present

pgbackrest-tls-key-managed:
  file.managed:
    - name: {{ b.tls_dir }}/host.key
    - contents: {{ tls.hosts[grains.id].key | json }}
    - user: {{ runas }}
    - group: {{ runas }}
    - mode: '0600'
    - show_changes: False
    - require:
      - file: pgbackrest-tls-dir-present
