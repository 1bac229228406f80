{#- Each minion's share of the lab's model (lab_model.yaml with a lab run's overrides,
    model.jinja; read on the master only): the whole model, but of its secrets only those its
    roles need (pgcluster.pillar_for, see pillar/pillar.example). A missing secret stops every
    minion's pillar with its key named.
    The CA minion also gets its signing policies and the mine function publishing the CA
    certificate (pgcluster.ca_pillar; formula_defaults.yaml is the formula's defaults.yaml). #}
{%- from "pgcluster/model.jinja" import model with context %}
{%- import_yaml "pgcluster/formula_defaults.yaml" as defaults %}
pgcluster: {{ salt["pgcluster.pillar_for"](model, opts.id) | json }}
{%- for key, value in salt["pgcluster.ca_pillar"](model, defaults, opts.id) | dictsort %}
{{ key }}: {{ value | json }}
{%- endfor %}
