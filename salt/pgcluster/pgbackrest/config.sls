{#- pgbackrest.conf (on the backup host it holds the repository passphrase: 0640, group of
    the user that runs pgBackRest, never diffed) and the TLS CA, certificate and key. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set b = pgcluster.pgbackrest %}
{%- set runas = pgcluster.node.pgbackrest_user %}
{%- set tls = b.tls %}

include:
  - {{ tplroot }}.pgbackrest.install

{#- pgBackRest names its peers by minion id: the certificates carry DNS names. #}
{%- for peer, address in pgcluster.node.pgbackrest_peers | dictsort %}

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
    - source: salt://{{ tplroot }}/pgbackrest/files/pgbackrest.conf.jinja
    - template: jinja
    - context:
        tplroot: {{ tplroot }}
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
      - sls: {{ tplroot }}.pgbackrest.install

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
    {#- Rendered from pillar inside the template: the key never enters state data. #}
    - source: salt://{{ tplroot }}/pgbackrest/files/host.key.jinja
    - template: jinja
    - context:
        tplroot: {{ tplroot }}
    - user: {{ runas }}
    - group: {{ runas }}
    - mode: '0600'
    - show_changes: False
    - require:
      - file: pgbackrest-tls-dir-present
