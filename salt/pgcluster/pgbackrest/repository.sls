{#- The repository side of each cluster backed up here: the stanza (created once, through the
    leader, which pgBackRest finds among the members), `pgbackrest check` (WAL archiving works
    end to end), and a first full backup. The stanza waits for the cluster: on the first
    highstate the database servers are bootstrapping at the same time. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}

include:
  - {{ tplroot }}.pgbackrest.service
{%- for name in pgcluster.node.backup %}
{%- set stanza = pgcluster.clusters[name].pgbackrest.stanza %}

pgbackrest-stanza-{{ stanza }}-present:
  pgbackrest.stanza_present:
    - name: {{ stanza }}
    - timeout: 600
    - require:
      - service: pgbackrest-server-running
      - file: pgbackrest-repository-directory-present
      - file: pgbackrest-log-directory-present

pgbackrest-stanza-{{ stanza }}-archiving-checked:
  pgbackrest.checked:
    - name: {{ stanza }}
    - cluster: {{ name }}
    - require:
      - pgbackrest: pgbackrest-stanza-{{ stanza }}-present

pgbackrest-stanza-{{ stanza }}-full-backup-present:
  pgbackrest.backup_present:
    - name: {{ stanza }}
    - kind: full
    - require:
      - pgbackrest: pgbackrest-stanza-{{ stanza }}-archiving-checked
{%- endfor %}
