include:
  - patroni.install
  - patroni.config
  - patroni.service
  - patroni.databases
