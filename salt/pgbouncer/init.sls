include:
  - pgbouncer.install
  - pgbouncer.config
  - pgbouncer.service
