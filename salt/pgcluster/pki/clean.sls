{#- This host's TLS material (the CA's key too on the CA minion: the CA is gone with it). #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}

pgcluster-pki-clean-dir-absent:
  file.absent:
    - name: {{ pgcluster.pki.dir }}

pgcluster-pki-clean-group-absent:
  group.absent:
    - name: {{ pgcluster.pki.group }}
    - require:
      - file: pgcluster-pki-clean-dir-absent
