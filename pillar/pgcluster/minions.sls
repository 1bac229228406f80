{#- Rendered on the master: the ids of the minions whose keys it accepted, so that the
    model's validation can tell a typo in a host name from a real minion. #}
{%- set accepted = salt["file.readdir"](opts["pki_dir"] ~ "/minions") | reject("in", [".", ".."]) | list %}
pgcluster:
  minions: {{ accepted | json }}
