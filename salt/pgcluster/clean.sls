{#- Removes what the formula installed on this minion, component by component, in the reverse
    order of init.sls. Data (PostgreSQL, etcd, the backup repository) only with
    pgcluster:clean:data: true. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set node = pgcluster.node %}
{%- set components = [] %}
{%- set backed_up = node.member and pgcluster.clusters[node.member].get("backup") %}
{%- if node.monitored %}{% do components.append("monitoring") %}{% endif %}
{%- if node.pgbouncer and not node.member %}{% do components.append("client") %}{% endif %}
{%- if node.pgbouncer %}{% do components.append("pgbouncer") %}{% endif %}
{%- if node.member %}{% do components.append("patroni") %}{% endif %}
{%- if backed_up or node.backup %}{% do components.append("pgbackrest") %}{% endif %}
{%- if node.member %}{% do components.append("postgresql") %}{% endif %}
{%- if node.etcd %}{% do components.append("etcd") %}{% endif %}
{%- if node.etcd or node.member or node.backup or node.pgbouncer or node.monitored %}{% do components.append("firewall") %}{% endif %}
{%- if node.pki.ca or node.pki.host %}{% do components.append("pki") %}{% endif %}
{%- if components %}
include:
{%- for c in components %}
  - {{ tplroot }}.{{ c }}.clean
{%- endfor %}
{%- else %}
pgcluster-clean-nothing-on-this-minion:
  test.nop:
    - name: {{ node.id }} has no role in any pgcluster cluster
{%- endif %}
