{#- Host firewall for the cluster's ports (nftables, its own table `inet pgcluster`; every
    other port and table is left alone): etcd only from the cluster's etcd and Patroni
    members, PostgreSQL only from members, PgBouncer hosts and declared client networks. #}
{%- set tplroot = tpldir.split("/")[0] %}
include:
  - {{ tplroot }}.firewall.install
  - {{ tplroot }}.firewall.config
  - {{ tplroot }}.firewall.service
