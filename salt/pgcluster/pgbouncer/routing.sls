{#- Each cluster's routing file points at the leader Patroni reports now (a repoint keeps it so
    afterwards). Waits for the cluster: on a first deployment the database servers bootstrap at
    the same time. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}

include:
  - {{ tplroot }}.pgbouncer.config
  - {{ tplroot }}.pgbouncer.service
{%- for cluster in pgcluster.node.routing | sort %}

pgbouncer-routes-{{ cluster }}-to-leader:
  pgcluster.pgbouncer_routed:
    - name: {{ cluster }}
    - timeout: 300
    - require:
      - pkg: pgbouncer-package-installed
      - file: pgbouncer-routing-{{ cluster }}-spec-managed
    - watch_in:
      - service: pgbouncer-service-running
{%- endfor %}
