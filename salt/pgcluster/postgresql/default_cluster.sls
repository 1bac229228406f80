{#- The distribution's own cluster (Debian: <version>/main, created by the package)
    must never run: Patroni owns PostgreSQL on this host. It is stopped and disabled,
    not dropped: whatever it holds stays on disk. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set pg = pgcluster.postgresql %}
{%- set confdir = "/etc/postgresql/" ~ pg.version ~ "/" ~ pg.default_cluster %}

include:
  - {{ tplroot }}.postgresql.install

postgresql-default-cluster-stopped:
  service.dead:
    - name: postgresql@{{ pg.version }}-{{ pg.default_cluster }}
    - enable: False
    - onlyif: test -d {{ confdir }}
    - require:
      - pkg: postgresql-packages-installed

postgresql-default-cluster-never-started:
  file.managed:
    - name: {{ confdir }}/start.conf
    - contents: disabled
    - onlyif: test -d {{ confdir }}
    - require:
      - service: postgresql-default-cluster-stopped

postgresql-wrapper-service-disabled:
  service.dead:
    - name: postgresql
    - enable: False
    - require:
      - service: postgresql-default-cluster-stopped
