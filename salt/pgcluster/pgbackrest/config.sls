{#- pgbackrest.conf (on the backup host it holds the repository passphrase: 0640, group of
    the user that runs pgBackRest, never diffed). Its TLS files are the host's (pgcluster.pki). #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set b = pgcluster.pgbackrest %}
{%- set runas = pgcluster.node.pgbackrest_user %}

include:
  - {{ tplroot }}.pgbackrest.install
  - {{ tplroot }}.pki

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

{#- pgBackRest's TLS server and client read the host's key (group of pgcluster.pki). #}
pgbackrest-{{ runas }}-reads-the-host-key:
  group.present:
    - name: {{ pgcluster.pki.group }}
    - addusers:
      - {{ runas }}
    - require:
      - group: pgcluster-pki-group-present
      - pkg: pgbackrest-package-installed
{%- if pgcluster.node.backup %}
      - user: pgbackrest-repository-user-present
{%- endif %}
