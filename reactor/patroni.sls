{#- A Patroni callback's event (pgcluster/patroni/*). The tag and payload were chosen by
    a minion: nothing here trusts them. data['id'] is the sending minion (the master checks
    it against the minion's key); the runner checks that it is a member of the cluster
    the payload names, then reads the real leader from Patroni. Values are passed as JSON
    strings so that no payload can inject YAML. #}
{%- set payload = data.get("data") if data.get("data") is mapping else {} %}
pgcluster-follow-leader:
  runner.pgcluster.follow_leader:
    - args:
      - sender: {{ data.get("id") | string | json }}
      - cluster: {{ payload.get("cluster") | string | json }}
      - event_tag: {{ tag | string | json }}
