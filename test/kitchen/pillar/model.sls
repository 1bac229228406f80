{#- The kitchen suites' pillar: the lab's model as is (test-only secrets, all of them), with no
    call to the formula's modules, which a masterless host has not synced yet when its pillar is
    first rendered. Secrets by need (pgcluster.pillar_for) are exercised by the lab's tests. #}
{%- import_yaml "pgcluster/lab_model.yaml" as lab %}
pgcluster: {{ lab.pgcluster | json }}
