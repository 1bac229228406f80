include:
  - patroni.install
  - patroni.events
  - patroni.config
  - patroni.service
  - patroni.databases
