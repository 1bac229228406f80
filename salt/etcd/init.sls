include:
  - etcd.install
  - etcd.config
  - etcd.service
