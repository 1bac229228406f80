"""The backup host converged on its own: the repository's configuration (with the passphrase,
closed) and pgBackRest's TLS server."""


def test_repository_configuration_is_closed(host):
    conf = host.file("/etc/pgbackrest/pgbackrest.conf")
    assert (conf.user, conf.group, conf.mode) == ("root", "pgbackrest", 0o640)
    text = conf.content_string
    assert "repo1-cipher-type=aes-256-cbc" in text and "pg1-host=pg1" in text and "pg3-host=pg3" in text
    assert host.file("/var/lib/pgbackrest").user == "pgbackrest"


def test_tls_server_runs_as_the_repository_owner(host):
    assert host.service("pgbackrest").is_running
    assert host.socket("tcp://198.18.0.20:8432").is_listening
    assert host.process.get(comm="pgbackrest").user == "pgbackrest"


def test_firewall_opens_pgbackrest_to_the_members_only(host):
    rules = host.run("nft list table inet pgcluster").stdout
    assert "tcp dport 8432 ip saddr { 198.18.0.11, 198.18.0.12, 198.18.0.13 } accept" in rules
