{#- A Patroni callback's event (pgcluster/patroni/*) is a hint that the leader may have changed,
    nothing more: its tag and payload were chosen by some minion, and on Salt 3008 a minion can
    put events with any data['id'] on the master's bus, so no field is trusted. The runner reads
    the real leader from Patroni under the cluster's routing lock, and coalesces lookups (one
    running, one waiting per cluster), so a flood of events costs bounded work. The sender and
    cluster only filter. Values are passed as JSON strings so that no payload can inject YAML. #}
{%- set payload = data.get("data") if data.get("data") is mapping else {} %}
pgcluster-follow-leader:
  runner.pgcluster.follow_leader:
    - args:
      - sender: {{ data.get("id") | string | json }}
      - cluster: {{ payload.get("cluster") | string | json }}
      - event_tag: {{ tag | string | json }}
