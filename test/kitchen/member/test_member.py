"""A database server converged on its own: installed and configured, services of its own running."""


def test_packages(host):
    for pkg in ("postgresql-15", "etcd-server", "pgbackrest", "nftables"):
        assert host.package(pkg).is_installed, pkg


def test_patroni_in_its_virtualenv_with_a_secret_config(host):
    assert host.run("/opt/patroni/bin/patroni --version").stdout.strip() == "patroni 4.1.5"
    conf = host.file("/etc/patroni/config.yml")
    assert (conf.user, conf.group, conf.mode) == ("postgres", "postgres", 0o600)
    assert "scope: main" in conf.content_string and "name: pg1" in conf.content_string
    assert host.file("/usr/local/bin/patronictl").mode == 0o755


def test_distribution_cluster_never_runs(host):
    assert host.file("/etc/postgresql/15/main/start.conf").content_string.strip() == "disabled"
    assert not host.service("postgresql@15-main").is_running
    assert not host.service("postgresql@15-main").is_enabled


def test_firewall_lets_only_the_cluster_in(host):
    rules = host.run("nft list table inet pgcluster").stdout
    # etcd: its clients (members, and the monitoring host for /metrics), its peers (members only).
    assert "tcp dport 2379 ip saddr { 198.18.0.11, 198.18.0.12, 198.18.0.13, 198.18.0.20 } accept" in rules
    assert "tcp dport 2380 ip saddr { 198.18.0.11, 198.18.0.12, 198.18.0.13 } accept" in rules
    assert "tcp dport 5432 ip saddr { 198.18.0.11, 198.18.0.12, 198.18.0.13, 198.18.0.30 } accept" in rules
    assert ("tcp dport 8008 ip saddr { 198.18.0.10, 198.18.0.11, 198.18.0.12, 198.18.0.13, 198.18.0.20, 198.18.0.30 } "
            "accept") in rules  # fmt: skip
    # The exporters: the monitoring host (backup) only.
    assert "tcp dport { 9100, 9127, 9187 } ip saddr 198.18.0.20 accept" in rules


def test_patroni_events_reach_the_relay_socket(host):
    sock = host.file("/run/pgcluster/events.sock")
    assert sock.is_socket and (sock.user, sock.group, sock.mode) == ("root", "postgres", 0o660)
    assert host.service("pgcluster-events.socket").is_running


def test_pgbackrest_configured_for_the_repository_host_with_its_own_key_only(host):
    conf = host.file("/etc/pgbackrest/pgbackrest.conf")
    assert (conf.group, conf.mode) == ("postgres", 0o640)
    assert "repo1-host=backup" in conf.content_string and "cipher-pass" not in conf.content_string
    assert "tls-server-key-file=/etc/pgcluster/pki/host.key" in conf.content_string


def test_the_host_key_is_readable_by_the_services_only(host):
    key = host.file("/etc/pgcluster/pki/host.key")
    assert (key.user, key.group, key.mode) == ("root", "pgcluster-tls", 0o640)
    assert "postgres" in host.group("pgcluster-tls").members  # pgBackRest, PostgreSQL, Patroni
    cert = host.run("openssl x509 -noout -subject -ext subjectAltName -in /etc/pgcluster/pki/host.crt").stdout
    assert "CN = pg1" in cert and "IP Address:198.18.0.11" in cert
