{#- Host firewall for the cluster's ports (nftables, its own table `inet pgcluster`; every
    other port and table is left alone): etcd only from the cluster's etcd and Patroni
    members, PostgreSQL only from members, PgBouncer hosts and declared client networks. #}
{%- from "pgcluster/map.jinja" import pgcluster with context %}

pgcluster-firewall-package-installed:
  pkg.installed:
    - name: nftables

pgcluster-firewall-rules-managed:
  file.managed:
    - name: /etc/pgcluster/firewall.nft
    - source: salt://pgcluster/files/firewall.nft.jinja
    - template: jinja
    - makedirs: True
    - mode: '0644'
    - check_cmd: /usr/sbin/nft -c -f
    - require:
      - pkg: pgcluster-firewall-package-installed

pgcluster-firewall-unit-installed:
  file.managed:
    - name: /etc/systemd/system/pgcluster-firewall.service
    - source: salt://pgcluster/files/pgcluster-firewall.service
    - mode: '0644'
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: pgcluster-firewall-unit-installed

pgcluster-firewall-active:
  service.running:
    - name: pgcluster-firewall
    - enable: True
    - reload: True
    - watch:
      - file: pgcluster-firewall-rules-managed
    - require:
      - module: pgcluster-firewall-unit-installed
