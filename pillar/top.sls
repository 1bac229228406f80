{#- The lab's pillar goes to the hosts the model names (with a lab run's overrides: a spare
    host added by a test gets its share too), derived from the model itself. #}
{%- from "pgcluster/model.jinja" import model with context %}
base:
  {{ model.hosts.keys() | join(",") }}:
    - match: list
    - pgcluster.lab
    - pgcluster.minions
