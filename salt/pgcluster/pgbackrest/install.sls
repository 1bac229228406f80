{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set b = pgcluster.pgbackrest %}
{%- set repo = pgcluster.node.backup | length > 0 %}
{%- set runas = pgcluster.node.pgbackrest_user %}

pgbackrest-package-installed:
  pkg.installed:
    - name: {{ b.package }}

{%- if repo %}

pgbackrest-repository-user-present:
  user.present:
    - name: {{ b.repo_user }}
    - system: True
    - home: {{ b.repo_path }}
    - createhome: False
    - shell: /usr/sbin/nologin
    - usergroup: True

pgbackrest-repository-directory-present:
  file.directory:
    - name: {{ b.repo_path }}
    - user: {{ b.repo_user }}
    - group: {{ b.repo_user }}
    - mode: '0750'
    - require:
      - user: pgbackrest-repository-user-present
      - pkg: pgbackrest-package-installed
{%- else %}

pgbackrest-spool-directory-present:
  file.directory:
    - name: {{ b.spool_path }}
    - user: postgres
    - group: postgres
    - mode: '0750'
    - require:
      - pkg: pgbackrest-package-installed
{%- endif %}

pgbackrest-log-directory-present:
  file.directory:
    - name: {{ b.log_path }}
    - user: {{ runas }}
    - group: {{ runas }}
    - mode: '0750'
    - require:
      - pkg: pgbackrest-package-installed
{%- if repo %}
      - user: pgbackrest-repository-user-present
{%- endif %}
