{%- from "pgcluster/map.jinja" import pgcluster with context %}

etcd-packages-installed:
  pkg.installed:
    - pkgs: {{ pgcluster.etcd.packages | json }}
