{#- The lab's pillar goes to the hosts the model names, derived from the model itself. #}
{%- import_yaml "pgcluster/lab_model.yaml" as lab %}
base:
  {{ lab.pgcluster.hosts.keys() | join(",") }}:
    - match: list
    - pgcluster.lab
    - pgcluster.minions
    # A lab run's own overrides (e.g. non-default ports), on the master's disk only.
    - pgcluster.local
    - ignore_missing: True
