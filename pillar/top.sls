{#- The lab's pillar goes to the hosts the model names, derived from the model itself. #}
{%- import_yaml "pgcluster/lab.sls" as lab %}
base:
  {{ lab.pgcluster.hosts.keys() | join(",") }}:
    - match: list
    - pgcluster.lab
    - pgcluster.lab_tls
    - pgcluster.minions
