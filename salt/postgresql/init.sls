include:
  - postgresql.install
  - postgresql.default_cluster
