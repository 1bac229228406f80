{#- Rendered on the master: the ids of the minions whose keys it accepted, so that the
    model's validation can tell a typo in a host name from a real minion. (Masterless
    runs have no such list: the check is skipped there.) #}
{%- set keydir = opts["pki_dir"] ~ "/minions" %}
{%- if salt["file.directory_exists"](keydir) %}
{%- set accepted = salt["file.readdir"](keydir) | reject("in", [".", ".."]) | list %}
pgcluster:
  minions: {{ accepted | json }}
{%- endif %}
