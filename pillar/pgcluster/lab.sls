# The lab's cluster model (test/lab/topology.toml hosts). Lab-only secrets: a real
# deployment keeps these in an encrypted pillar (gpg renderer, Vault...).
pgcluster:
  hosts:
    pg1: 198.18.0.11
    pg2: 198.18.0.12
    pg3: 198.18.0.13
    backup: 198.18.0.20
    app1: 198.18.0.30

  # The lab hosts reach no package index: Patroni comes from the lab's wheelhouse.
  patroni:
    pip:
      find_links: /opt/pgcluster-lab/wheels
      no_index: true

  clusters:
    main:
      profile: durable
      members: [pg1, pg2, pg3]
      etcd: [pg1, pg2, pg3]
      pgbouncer: [pg1, pg2, pg3, app1]
      backup: backup
      pgbackrest:
        cipher_pass: lab-repo-cipher-pass-0d94c1e7
        retention:
          full: 2
          diff: 6
      client_networks: []
      passwords:
        superuser: lab-superuser-pw-4a1f
        replication: lab-replication-pw-9c2e
        rewind: lab-rewind-pw-77d0
        restapi: lab-restapi-pw-31b8
      roles:
        app:
          password: lab-app-pw-5e6b
      databases:
        app:
          owner: app
