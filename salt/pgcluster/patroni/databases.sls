{#- Roles and databases of the cluster, created through the leader only (the other
    members report "not the leader"). Passwords are read from pillar by the state. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set name = pgcluster.node.member %}
{%- set c = pgcluster.clusters[name] %}

include:
  - {{ tplroot }}.patroni.service

{%- for role in c.roles | sort %}

pgcluster-role-{{ role }}-present:
  pgcluster.role_present:
    - name: {{ role }}
    - cluster: {{ name }}
    - port: {{ c.port }}
    - require:
      - patroni: patroni-cluster-healthy
{%- endfor %}
{%- for db in c.databases | sort %}

pgcluster-database-{{ db }}-present:
  pgcluster.database_present:
    - name: {{ db }}
    - cluster: {{ name }}
    - port: {{ c.port }}
    - require:
      - patroni: patroni-cluster-healthy
{%- for role in c.roles | sort %}
      - pgcluster: pgcluster-role-{{ role }}-present
{%- endfor %}
{%- endfor %}
{%- if pgcluster.monitoring.enabled %}

{#- The PostgreSQL exporter's role: pg_monitor, no password (peer over the local socket). #}
pgcluster-monitoring-role-present:
  pgcluster.monitor_role_present:
    - name: {{ pgcluster.monitoring.role }}
    - port: {{ c.port }}
    - databases: {{ c.databases | sort | json }}
    - require:
      - patroni: patroni-cluster-healthy
{%- for db in c.databases | sort %}
      - pgcluster: pgcluster-database-{{ db }}-present
{%- endfor %}
{%- endif %}
