{#- Every minion gets the pgcluster entry state; which components it runs follows
    from the cluster model in pillar (pgcluster/init.sls), never from a host list here. #}
base:
  '*':
    - pgcluster
