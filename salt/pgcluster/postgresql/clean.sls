{#- PostgreSQL's packages (and, with pgcluster:clean:data, the cluster's data directory). The
    distribution's own cluster data (e.g. 15/main) is never touched. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set pg = pgcluster.postgresql %}

include:
  - {{ tplroot }}.patroni.clean

postgresql-clean-packages-removed:
  pkg.removed:
    - pkgs: {{ pg.packages | json }}
    - require:
      - sls: {{ tplroot }}.patroni.clean
{%- if pgcluster.clean.data %}

postgresql-clean-data-absent:
  file.absent:
    - name: {{ pgcluster.node.patroni_config.postgresql.data_dir }}
    - require:
      - sls: {{ tplroot }}.patroni.clean
{%- endif %}
