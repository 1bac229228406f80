{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set name = pgcluster.node.member %}
{%- set c = pgcluster.clusters[name] %}

include:
  - {{ tplroot }}.patroni.config
  - {{ tplroot }}.postgresql.default_cluster

patroni-service-running:
  service.running:
    - name: patroni
    - enable: True
    - require:
      - file: patroni-config-managed
      - file: patroni-data-root-present
      - group: patroni-postgres-reads-the-host-key
      - sls: {{ tplroot }}.pki
      - module: patroni-systemd-unit-installed
      - service: postgresql-default-cluster-stopped
      - patroni-installed-in-virtualenv

{#- A changed config.yml is reloaded through the REST API (never a restart of PostgreSQL).
    Not a SIGHUP: a Patroni started a moment ago has no HUP handler yet and would die. Only for
    a Patroni that ran before this highstate: one started by it has just read config.yml, and a
    reload sent while it bootstraps a new cluster (the DCS still empty) made it start PostgreSQL
    without the bootstrap parameters (archive_mode stayed off, a restart pending: seen in the
    lab, pgBackRest's check then failed). #}
{%- if salt["service.status"]("patroni") %}
patroni-config-reloaded:
  patroni.reloaded:
    {#- Patroni applies a reload after it answers: the state waits until PostgreSQL has the
        pg_hba rules config.yml gives (a database declared in this highstate admitted when it ends). #}
    - pg_hba: {{ pgcluster.node.patroni_config.postgresql.pg_hba | json }}
    - port: {{ c.port }}
    - timeout: 60
    - onchanges:
      - file: patroni-config-managed
      {#- A renewed certificate: Patroni's REST API and PostgreSQL re-read theirs on reload. #}
      - sls: {{ tplroot }}.pki
    - require:
      - service: patroni-service-running
{%- endif %}

patroni-cluster-healthy:
  patroni.healthy:
    - replicas: {{ c.members | length - 1 }}
    - timeout: 300
    - require:
      - service: patroni-service-running

{#- bootstrap.dcs only counts when the cluster is created: afterwards the profile and the
    shared PostgreSQL parameters are kept in the DCS by PATCHing only what differs. Not while
    this member runs as a standby cluster of a physical migration's source (its grain says so
    and Patroni names a standby leader: a grain left behind by a cutover that stopped in its
    settling does not count): that cluster has no synchronous replication until its cutover,
    which applies pillar's. #}
{%- if not (pgcluster.node.get("standby_of") and salt["pgcluster.standby_cluster"](name)) %}
patroni-dynamic-config-applied:
  patroni.dynamic_config:
    - config: {{ pgcluster.node.dynamic_config | json }}
    - require:
      - patroni: patroni-cluster-healthy

{#- Ready means the profile's promise holds: with synchronous replication, highstate succeeds
    only once Patroni's /sync key names enough synchronous replicas (right after bootstrap the
    replicas stream while /sync still names none, and a failover then has no eligible replica). #}
{%- if c.sync_standbys %}
patroni-cluster-synchronous:
  patroni.healthy:
    - replicas: {{ c.members | length - 1 }}
    - sync_standbys: {{ c.sync_standbys }}
    - timeout: 300
    - require:
      - patroni: patroni-dynamic-config-applied
{%- endif %}
{%- endif %}
