{#- Entry state: includes each component this minion's roles call for. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set node = pgcluster.node %}
{%- set components = [] %}
{%- set backed_up = node.member and pgcluster.clusters[node.member].get("backup") %}
{#- TLS first: every link of every component uses this host's certificate. #}
{%- if node.pki.ca or node.pki.host %}{% do components.append("pki") %}{% endif %}
{%- if node.etcd or node.member or node.backup or node.pgbouncer or node.monitored %}{% do components.append("firewall") %}{% endif %}
{%- if node.etcd %}{% do components.append("etcd") %}{% endif %}
{%- if node.member %}{% do components.append("postgresql") %}{% endif %}
{#- pgBackRest before Patroni: a new replica is restored from the repository when it can be. #}
{%- if backed_up or node.backup %}{% do components.append("pgbackrest") %}{% endif %}
{%- if node.member %}{% do components.append("patroni") %}{% endif %}
{%- if node.pgbouncer %}{% do components.append("pgbouncer") %}{% endif %}
{#- Application hosts: PgBouncer hosts that are no database server. #}
{%- if node.pgbouncer and not node.member %}{% do components.append("client") %}{% endif %}
{#- Last: the exporters watch what the components above run. #}
{%- if node.monitored %}{% do components.append("monitoring") %}{% endif %}
{%- if components %}
include:
{%- for c in components %}
  - {{ tplroot }}.{{ c }}
{%- endfor %}
{%- else %}
pgcluster-no-role-on-this-minion:
  test.nop:
    - name: {{ node.id }} has no role in any pgcluster cluster
{%- endif %}
