"""The pillar data model: merge, validation messages, derived Patroni config and pg_hba."""

from __future__ import annotations

import base64
import copy
import json

import pytest
import yaml
from pgctest import FIXTURES, REPO, load_module

pgc = load_module("utils", "pgcluster_model")
DEFAULTS = yaml.safe_load((REPO / "salt/pgcluster/defaults.yaml").read_text())
OSMAP = yaml.safe_load((REPO / "salt/pgcluster/osfamilymap.yaml").read_text())
LAB = yaml.safe_load((REPO / "pillar/pgcluster/lab_model.yaml").read_text())["pgcluster"]


def model(pillar: dict | None = None) -> dict:
    return pgc.merge(DEFAULTS, OSMAP, LAB if pillar is None else pillar, "Debian")


PHYSICAL = {"source": "legacy", "mode": "physical", "databases": ["shop"], "port": 5433}


def lab_with(**cluster_changes) -> dict:
    p = copy.deepcopy(LAB)
    p["clusters"]["main"].update(cluster_changes)
    return p


def test_lab_pillar_is_valid_and_fills_os_values():
    m = pgc.validate(model())
    assert m["postgresql"]["bin_dir"] == "/usr/lib/postgresql/15/bin"
    assert m["postgresql"]["packages"] == ["postgresql-15", "postgresql-contrib"]
    assert m["patroni"]["pip"]["no_index"] is True  # pillar over defaults


def test_roles_follow_from_the_model():
    m = model()
    watched = {"monitored": True, "monitor": False, "migrate_source": []}
    assert pgc.node_roles(m, "pg2") == {"member": "main", "etcd": "main", "pgbouncer": ["main"], "backup": [],
                                        **watched}  # fmt: skip
    assert pgc.node_roles(m, "app1") == {"member": None, "etcd": None, "pgbouncer": ["main"], "backup": [], **watched}
    assert pgc.node_roles(m, "backup")["backup"] == ["main"]
    assert pgc.node_roles(m, "backup")["monitor"] is True  # the first cluster's backup host by default
    assert pgc.node_roles(m, "salt") == {"member": None, "etcd": None, "pgbouncer": [], "backup": [], **watched}
    off = model({**LAB, "monitoring": {"enabled": False}})
    assert pgc.node_roles(off, "salt") == {"member": None, "etcd": None, "pgbouncer": [], "backup": [],
                                           "monitored": False, "monitor": False, "migrate_source": []}  # fmt: skip
    elsewhere = model({**LAB, "monitoring": {"host": "app1"}})
    assert pgc.node_roles(elsewhere, "app1")["monitor"] and not pgc.node_roles(elsewhere, "backup")["monitor"]


def test_monitoring_needs_a_host_and_sane_settings():
    nohost = copy.deepcopy(LAB)
    nohost["clusters"]["main"].pop("backup")
    nohost["clusters"]["main"].pop("pgbackrest")
    found = pgc.problems(model(nohost))
    assert any(p.startswith("pgcluster:monitoring:host: no host to run Prometheus") for p in found)
    assert not any("monitoring" in p for p in pgc.problems(model({**nohost, "monitoring": {"enabled": False}})))
    bad = model({**LAB, "monitoring": {"enabled": "yes", "role": "Mon-itor", "textfile_interval": "often",
                                       "filesystem_types_exclude": "tmpfs|overlay"}})  # fmt: skip
    found = pgc.problems(bad)
    assert any(
        p.startswith("pgcluster:monitoring:filesystem_types_exclude: 'tmpfs|overlay' is not a list") for p in found
    )
    assert "pgcluster:monitoring:enabled: 'yes' is not true or false" in found
    assert "pgcluster:monitoring:role: 'Mon-itor' is not a plain PostgreSQL role name" in found
    assert any(p.startswith("pgcluster:monitoring:textfile_interval: 'often'") for p in found)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"members": ["pg1", "pg2", "pg9"]}, "main:members[2]: 'pg9' has no address in pgcluster:hosts"),
        ({"etcd": ["pg1", "pg2"]}, "pgcluster:clusters:main:etcd: 2 members; etcd needs at least 3"),
        ({"etcd": ["pg1"]}, "pgcluster:clusters:main:etcd: 1 members; etcd needs at least 3"),
        ({"members": ["pg1"]}, "pgcluster:clusters:main:members: a cluster needs at least 2 database servers, got 1"),
        ({"profile": "turbo"}, "pgcluster:clusters:main:profile: unknown profile 'turbo' (known: durable, fast, pair)"),
        ({"port": "5432x"}, "pgcluster:clusters:main:port: '5432x' is not a port number (1-65535)"),
        ({"port": 70000}, "pgcluster:clusters:main:port: 70000 is not a port number"),
        ({"passwords": {"superuser": "x" * 12, "replication": "x" * 12, "rewind": "x" * 12, "restapi": "short"}},
         "pgcluster:clusters:main:passwords:restapi: shorter than 12 characters"),
        ({"passwords": {"root": "x" * 12}}, "pgcluster:clusters:main:passwords:root: unknown"),
        ({"roles": {"app": {"password": "short"}}}, "pgcluster:clusters:main:roles:app:password: shorter than 12"),
        ({"roles": {"app": {"verifier": "md5abc"}}},
         "pgcluster:clusters:main:roles:app:verifier: not a SCRAM-SHA-256 verifier"),
        ({"databases": {"app": {"owner": "nobody"}}}, "databases:app:owner: role 'nobody' is not declared"),
        ({"client_networks": ["10.0.0.0/33"]}, "client_networks[0]: '10.0.0.0/33' is not a network"),
        ({"client_networks": "10.0.0.0/24"}, "pgcluster:clusters:main:client_networks: must be a list of networks"),
        ({"parameters": ["work_mem=8MB"]},
         "pgcluster:clusters:main:parameters: must be a mapping of PostgreSQL parameter to value"),
        ({"port": 8008}, "pgcluster:clusters:main:port: port 8008 is already pgcluster:patroni:restapi_port"),
        ({"members": ["pg1", "pg2", "backup"]},
         "pgcluster:clusters:main:backup: 'backup' is a database server; the repository needs a host of its own"),
    ],
)  # fmt: skip
def test_bad_cluster_pillar_names_key_and_problem(change, message):
    with pytest.raises(pgc.ModelError) as err:
        pgc.validate(model(lab_with(**change)))
    assert message in str(err.value)
    assert str(err.value).startswith("invalid pgcluster pillar: ")


def test_every_problem_is_reported_at_once():
    found = pgc.problems(model(lab_with(etcd=["pg1", "pg2"], profile="turbo")))
    assert len(found) == 2


def test_member_that_is_not_a_minion_is_named():
    p = copy.deepcopy(LAB)
    p["minions"] = ["pg1", "pg2", "pg3", "backup", "salt", "legacy"]  # app1's key was never accepted
    assert pgc.problems(model(p)) == ["pgcluster:hosts:app1: no minion with id 'app1' is known to the master"]


def test_bad_address_and_global_port():
    p = copy.deepcopy(LAB)
    p["hosts"]["pg1"] = "pg1.example"
    p["patroni"]["restapi_port"] = "http"
    found = pgc.problems(model(p))
    assert "pgcluster:hosts:pg1: 'pg1.example' is not an IP address" in found
    assert "pgcluster:patroni:restapi_port: 'http' is not a port number (1-65535)" in found


def test_ipv6_hosts_and_client_networks_are_refused_by_name_not_half_supported():
    p = lab_with(client_networks=["2001:db8::/64", "10.1.0.0/16"])
    p["hosts"]["pg1"] = "2001:db8::11"
    found = pgc.problems(model(p))
    ipv6 = "an IPv6 address; pgcluster supports IPv4 only (for now)"
    assert f"pgcluster:hosts:pg1: '2001:db8::11': {ipv6}" in found
    assert f"pgcluster:clusters:main:client_networks[0]: '2001:db8::/64': {ipv6}" in found
    assert not [f for f in found if "client_networks[1]" in f]


def test_etcd_timing_is_milliseconds_with_room_for_five_heartbeats():
    p = copy.deepcopy(LAB)
    p["etcd"] = {"heartbeat_interval": "fast", "election_timeout": 1000}
    assert "pgcluster:etcd:heartbeat_interval: 'fast' is not a number of milliseconds" in pgc.problems(model(p))
    p["etcd"] = {"heartbeat_interval": 300, "election_timeout": 1000}
    found = pgc.problems(model(p))
    assert found == ["pgcluster:etcd:election_timeout: 1000 ms; etcd wants at least 5 heartbeats (1500)"]


def test_package_version_is_a_quoted_version_of_the_major_version():
    def found(value) -> list[str]:
        p = copy.deepcopy(LAB)
        p.setdefault("postgresql", {})["package_version"] = value
        return pgc.problems(model(p))

    assert found("") == [] and found("15.20-0+deb12u1") == [] and found("15.8") == [] and found("1:15.2-1") == []
    assert model()["postgresql"]["minor_packages"] == ["postgresql-15", "postgresql-client-15"]
    assert found(15.20) == ["pgcluster:postgresql:package_version: 15.2 is not a string: quote it (a number loses "
                            "digits: 15.20 reads as 15.2)"]  # fmt: skip
    for wrong in ("16.4-1", "15", "latest", "15.20; rm -rf /"):
        assert found(wrong) == [f"pgcluster:postgresql:package_version: {wrong!r} is not a package version of "
                                "PostgreSQL 15 (e.g. '15.20-0+deb12u1'; a new major version is an upgrade of its "
                                "own, not a package change)"]  # fmt: skip


def test_an_even_etcd_count_is_the_step_of_a_replacement():
    assert pgc.problems(model(lab_with(etcd=["pg1", "pg2", "pg3", "app1"]))) == []


def two_clusters(**other) -> dict:
    """The lab pillar with a second cluster 'other' on hosts of its own (pg4-pg6, backup2, app2)."""
    p = copy.deepcopy(LAB)
    p["hosts"].update({f"pg{i}": f"198.18.0.{10 + i}" for i in (4, 5, 6)})
    p["hosts"].update({"backup2": "198.18.0.21", "app2": "198.18.0.31"})
    c = copy.deepcopy(p["clusters"]["main"])
    c.update(members=["pg4", "pg5", "pg6"], etcd=["pg4", "pg5", "pg6"], pgbouncer=["app2"], backup="backup2",
             databases={"billing": {"owner": "app"}})  # fmt: skip
    c.update(other)
    p["clusters"]["other"] = c
    return p


def test_two_clusters_on_hosts_of_their_own_are_valid():
    assert pgc.problems(model(two_clusters())) == []


@pytest.mark.parametrize(
    "change, message",
    [
        ({"etcd": ["pg1", "pg5", "pg6"]},
         "pgcluster:clusters:other:etcd: 'pg1' already runs the etcd of cluster 'main'"),
        ({"scope": "main"}, "pgcluster:clusters:other:scope: 'main' is already the scope of cluster 'main'"),
        ({"pgbouncer": ["app1"], "databases": {"app": {"owner": "app"}}},
         "pgcluster:clusters:other:databases:app: PgBouncer on 'app1' already routes 'app' to cluster 'main'"),
        ({"members": ["pg4", "pg5", "backup"]},
         "pgcluster:clusters:other:members: 'backup' is the backup host of cluster 'main'; a backup host holds no "
         "database"),
    ],
)  # fmt: skip
def test_relations_between_clusters_are_checked(change, message):
    assert message in pgc.problems(model(two_clusters(**change)))


def test_one_repository_one_passphrase():
    p = two_clusters(backup="backup")
    assert pgc.problems(model(p)) == []  # two clusters, one backup host, one passphrase
    p["clusters"]["other"]["pgbackrest"] = {"cipher_pass": "another-passphrase-of-30-chars"}
    assert pgc.problems(model(p)) == [
        "pgcluster:clusters:other:pgbackrest:cipher_pass: the repository on 'backup' is also cluster 'main''s: "
        "one repository, one passphrase"
    ]


def test_two_hosts_with_one_address_are_refused():
    p = copy.deepcopy(LAB)
    p["hosts"]["app1"] = p["hosts"]["pg3"]
    assert "pgcluster:hosts:app1: address 198.18.0.13 is already 'pg3''s" in pgc.problems(model(p))


def test_a_minion_is_member_of_one_cluster_only():
    p = copy.deepcopy(LAB)
    p["clusters"]["other"] = copy.deepcopy(p["clusters"]["main"])
    assert any("'pg1' is already a member of cluster 'main'" in f for f in pgc.problems(model(p)))


def test_durable_profile_is_patronis_zero_loss_setup():
    dcs = pgc.dynamic_config(model(), "main")
    assert dcs["synchronous_mode"] == "quorum" and dcs["synchronous_mode_strict"] is True
    assert dcs["failsafe_mode"] is True and dcs["check_timeline"] is True
    assert dcs["loop_wait"] + 2 * dcs["retry_timeout"] <= dcs["ttl"] and dcs["ttl"] >= 20
    assert dcs["postgresql"]["use_pg_rewind"] is True
    assert dcs["postgresql"]["parameters"]["synchronous_commit"] == "on"


def test_a_cluster_is_bootstrapped_without_strict_mode_and_otherwise_as_its_profile_says():
    """Patroni 4.1.5 bootstraps a strict quorum cluster with synchronous_standby_names = 'ANY None
    (*)', which PostgreSQL rejects; strictness is PATCHed in once replicas stream."""
    boot, wanted = pgc.patroni_config(model(), "main", "pg1")["bootstrap"]["dcs"], pgc.dynamic_config(model(), "main")
    assert boot["synchronous_mode_strict"] is False and wanted["synchronous_mode_strict"] is True
    assert {**boot, "synchronous_mode_strict": True} == wanted


def test_pair_profile_is_synchronous_but_lets_one_server_go_on_alone():
    dcs = pgc.dynamic_config(model(lab_with(profile="pair", members=["pg1", "pg2"])), "main")
    assert dcs["synchronous_mode"] == "quorum" and dcs["synchronous_mode_strict"] is False
    assert dcs["postgresql"]["parameters"]["synchronous_commit"] == "on"


def test_fast_profile_is_asynchronous():
    conf = pgc.patroni_config(model(lab_with(profile="fast")), "main", "pg1")
    assert conf["bootstrap"]["dcs"]["synchronous_mode"] is False
    assert conf["bootstrap"]["dcs"]["maximum_lag_on_failover"] == 1048576


@pytest.mark.parametrize(
    "changes, wanted",
    [
        ({}, 1),
        ({"profile": "fast"}, 0),
        ({"members": ["pg1"], "etcd": ["pg1", "pg2", "pg3"]}, 0),
        ({"profile": "pair", "members": ["pg1", "pg2"]}, 1),
    ],
)
def test_highstate_waits_for_as_many_synchronous_standbys_as_the_profile_promises(changes, wanted):
    # durable (quorum, 1 synchronous) -> 1; fast (asynchronous) -> 0; one member: none to wait for.
    assert pgc.cluster(model(lab_with(**changes)), "main")["sync_standbys"] == wanted


def test_patroni_config_for_a_member():
    conf = pgc.patroni_config(model(), "main", "pg2")
    assert conf["name"] == "pg2" and conf["scope"] == "main"
    assert conf["restapi"]["listen"] == "198.18.0.12:8008"
    assert conf["restapi"]["authentication"] == {"username": "patroni", "password": "lab-restapi-pw-31b8"}
    assert conf["etcd3"]["hosts"] == ["198.18.0.11:2379", "198.18.0.12:2379", "198.18.0.13:2379"]
    assert conf["postgresql"]["data_dir"] == "/var/lib/postgresql/15/patroni-main"  # never Debian's 15/main
    auth = conf["postgresql"]["authentication"]
    assert {auth[k]["username"] for k in auth} == {"postgres", "replicator", "rewind_user"}


def test_every_link_of_a_member_is_tls_against_the_clusters_ca():
    conf = pgc.patroni_config(model(), "main", "pg1")
    pki = "/etc/pgcluster/pki"
    api = conf["restapi"]
    assert (api["certfile"], api["keyfile"], api["cafile"]) == (f"{pki}/host.crt", f"{pki}/host.key", f"{pki}/ca.crt")
    etcd = conf["etcd3"]
    assert etcd["protocol"] == "https" and etcd["cacert"] == f"{pki}/ca.crt" and etcd["cert"] == f"{pki}/host.crt"
    params = conf["postgresql"]["parameters"]
    assert params["ssl"] == "on" and params["ssl_key_file"] == f"{pki}/host.key"
    auth = conf["postgresql"]["authentication"]
    for user in ("replication", "rewind"):
        assert auth[user]["sslmode"] == "verify-full" and auth[user]["sslrootcert"] == f"{pki}/ca.crt"
    assert pgc.api_url(model(), "pg2") == "https://198.18.0.12:8008"


def test_pg_hba_is_least_privilege():
    rules = pgc.pg_hba(model(), "main")
    network = [r for r in rules if r.startswith("host") and "127.0.0.1" not in r and "reject" not in r]
    assert network and all(r.startswith("hostssl ") for r in network)  # over the network: TLS only
    # Patroni reads its own timeline over the local socket (with TLS verify-full, 127.0.0.1 would
    # not match the certificate: replicas would report no timeline and check_timeline block failover).
    assert "local replication replicator scram-sha-256" in rules
    assert pgc.patroni_config(model(), "main", "pg1")["postgresql"]["use_unix_socket_repl"] is True
    assert not any(" trust" in r or " md5" in r or " password" in r for r in rules)
    assert rules[-2:] == ["host all all 0.0.0.0/0 reject", "host all all ::/0 reject"]
    # The PostgreSQL exporter: the OS user prometheus, as the monitoring role, on the socket, no password.
    assert rules[1] == "local all pgcluster_monitor peer map=pgcluster-monitor"
    conf = pgc.patroni_config(model(), "main", "pg1")["postgresql"]
    assert conf["pg_ident"] == ["pgcluster-monitor prometheus pgcluster_monitor"]
    off = model({**LAB, "monitoring": {"enabled": False}})
    assert not any("pgcluster_monitor" in r for r in pgc.pg_hba(off, "main"))
    assert "pg_ident" not in pgc.patroni_config(off, "main", "pg1")["postgresql"]
    assert "hostssl replication replicator 198.18.0.13/32 scram-sha-256" in rules
    assert "hostssl replication replicator 198.18.0.30/32 scram-sha-256" not in rules  # app1 is no member
    assert "hostssl app app 198.18.0.30/32 scram-sha-256" in rules  # app1 runs a PgBouncer
    assert not any(r.startswith("host all app") for r in rules)


def test_scram_verifier_round_trip():
    v = pgc.scram_verifier("s3cret-password")
    assert v.startswith("SCRAM-SHA-256$4096:")
    assert pgc.scram_matches("s3cret-password", v)
    assert not pgc.scram_matches("other-password", v)
    assert not pgc.scram_matches("s3cret-password", "md5abc")
    assert not pgc.scram_matches("s3cret-password", None)


def test_scram_verifier_matches_one_made_by_postgresql():
    rec = json.loads((FIXTURES / "postgresql" / "scram_verifier.json").read_text())
    assert pgc.scram_matches(rec["password"], rec["verifier"])
    salt = base64.b64decode(rec["verifier"].split(":")[1].split("$")[0])
    assert pgc.scram_verifier(rec["password"], salt, 4096) == rec["verifier"]


def test_firewall_opens_etcd_to_members_and_postgresql_to_clients():
    rules = {r["name"]: r for r in pgc.firewall(model(), "pg1")}
    # etcd's clients: the members, and the monitoring host (its /metrics); its peers: etcd's members only.
    assert rules["etcd"]["ports"] == [2379]
    assert rules["etcd"]["sources"] == ["198.18.0.11", "198.18.0.12", "198.18.0.13", "198.18.0.20"]
    assert rules["etcd peers"] == {"name": "etcd peers", "ports": [2380],
                                   "sources": ["198.18.0.11", "198.18.0.12", "198.18.0.13"]}  # fmt: skip
    assert rules["postgresql"]["ports"] == [5432]
    assert rules["postgresql"]["sources"] == ["198.18.0.11", "198.18.0.12", "198.18.0.13", "198.18.0.30"]
    # Patroni's REST API: members, PgBouncer hosts and the Salt master (the runners) only.
    assert rules["patroni"]["ports"] == [8008]
    assert rules["patroni"]["sources"] == ["198.18.0.11", "198.18.0.12", "198.18.0.13", "198.18.0.30", "198.18.0.10",
                                           "198.18.0.20"]  # fmt: skip
    # Exporters (node, PostgreSQL, PgBouncer): the monitoring host only.
    assert rules["exporters"] == {"name": "exporters", "ports": [9100, 9187, 9127], "sources": ["198.18.0.20"]}
    # PgBouncer: loopback and the declared client networks only.
    assert pgc.firewall(model(), "app1") == [
        {"name": "pgbouncer", "ports": [6432], "sources": []},
        {"name": "exporters", "ports": [9100, 9127], "sources": ["198.18.0.20"]},
    ]
    assert pgc.firewall(model(), "salt") == [{"name": "exporters", "ports": [9100], "sources": ["198.18.0.20"]}]
    # Prometheus: the Salt master only; Alertmanager: loopback only.
    mon = {r["name"]: r for r in pgc.firewall(model(), "backup")}
    assert mon["prometheus"] == {"name": "prometheus", "ports": [9090], "sources": ["198.18.0.10"]}
    assert mon["alertmanager"] == {"name": "alertmanager", "ports": [9093], "sources": []}
    nets = {r["name"]: r for r in pgc.firewall(model(lab_with(client_networks=["10.1.0.0/16"])), "pg2")}
    assert nets["postgresql"]["sources"][-1] == "10.1.0.0/16" and nets["pgbouncer"]["sources"] == ["10.1.0.0/16"]


def test_role_verifier_is_stable_per_cluster_and_role():
    v = pgc.role_verifier("main", "app", "s3cret-password")
    assert v == pgc.role_verifier("main", "app", "s3cret-password")
    assert v != pgc.role_verifier("other", "app", "s3cret-password")
    assert pgc.scram_matches("s3cret-password", v)


# ---- pgBackRest ------------------------------------------------------------------------------
def test_pgbackrest_repository_host_knows_every_member_and_holds_the_passphrase():
    conf = pgc.pgbackrest_config(model(), "backup")
    assert conf["global"]["repo1-path"] == "/var/lib/pgbackrest"
    assert conf["global"]["tls-server-auth"] == ["pg1=main", "pg2=main", "pg3=main"]
    main = conf["main"]
    # The passphrase in [global]: a plain `pgbackrest info` (no --stanza) reads every stanza.
    assert conf["global"]["repo1-cipher-type"] == "aes-256-cbc"
    assert conf["global"]["repo1-cipher-pass"] == LAB["clusters"]["main"]["pgbackrest"]["cipher_pass"]
    assert "repo1-cipher-pass" not in main
    assert [main[f"pg{i}-host"] for i in (1, 2, 3)] == ["pg1", "pg2", "pg3"]
    assert main["pg1-path"] == "/var/lib/postgresql/15/patroni-main"
    assert main["repo1-retention-full"] == 2


def test_pgbackrest_database_server_knows_only_the_repository_and_no_passphrase():
    conf = pgc.pgbackrest_config(model(), "pg2")
    text = pgc.ini(conf)
    assert conf["global"]["repo1-host"] == "backup" and conf["global"]["archive-async"] == "y"
    assert conf["global"]["tls-server-auth"] == ["backup=main"]
    assert "cipher" not in text
    assert pgc.pgbackrest_config(model(), "app1") == {}


def test_backed_up_cluster_archives_and_restores_replicas_from_the_repository():
    m = model()
    params = pgc.dynamic_config(m, "main")["postgresql"]["parameters"]
    assert params["archive_mode"] == "on"
    assert params["archive_command"] == "/usr/bin/pgbackrest --stanza=main archive-push %p"
    pg = pgc.patroni_config(m, "main", "pg1")["postgresql"]
    assert pg["create_replica_methods"] == ["pgbackrest", "basebackup"]
    assert "--delta" in pg["pgbackrest"]["command"] and pg["pgbackrest"]["no_params"] is True
    assert pg["recovery_conf"]["restore_command"] == '/usr/bin/pgbackrest --stanza=main archive-get %f "%p"'
    no_backup = copy.deepcopy(LAB)
    del no_backup["clusters"]["main"]["backup"]
    assert pgc.patroni_config(model(no_backup), "main", "pg1")["postgresql"]["create_replica_methods"] == [
        "basebackup"]  # fmt: skip


def test_pgbackrest_port_open_between_repository_and_members_only():
    m = model()
    rule = next(r for r in pgc.firewall(m, "backup") if r["name"] == "pgbackrest")
    assert rule == {"name": "pgbackrest", "ports": [8432], "sources": ["198.18.0.11", "198.18.0.12", "198.18.0.13"]}
    rule = next(r for r in pgc.firewall(m, "pg1") if r["name"] == "pgbackrest")
    assert rule["sources"] == ["198.18.0.20"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"pgbackrest": {"cipher_pass": "short"}},
            "pgcluster:clusters:main:pgbackrest:cipher_pass: shorter than 20 characters",
        ),
        ({"backup": "pg1"}, "pgcluster:clusters:main:backup: 'pg1' is a database server"),
        ({"backup": "nowhere"}, "pgcluster:clusters:main:backup: 'nowhere' has no address"),
        ({"pgbackrest": {"cipher_pass": "x" * 24, "retention": {"full": 0}}}, "retention:full: must be full or diff"),
        ({"pgbackrest": {"cipher_pass": "x" * 24, "schedule": {"weekly": "Sun"}}}, "schedule:weekly: must be full"),
    ],
)
def test_bad_backup_pillar_names_key_and_problem(change, message):
    found = pgc.problems(model(lab_with(**change)))
    assert any(message in p for p in found), found


def test_pki_from_pillar_needs_this_minions_material_only():
    m = model(lab_with())
    m["pki"]["mode"] = "pillar"
    assert pgc.pki_problems(m, "pg1") == [
        "pgcluster:pki:ca: missing (PEM text of the CA certificate)",
        "pgcluster:pki:hosts:pg1:cert: missing (PEM text, CN=pg1)",
        "pgcluster:pki:hosts:pg1:key: missing (PEM text)",
    ]
    # The master's minion runs only the node exporter (TLS): it needs its own certificate too...
    assert "pgcluster:pki:hosts:salt:key: missing (PEM text)" in pgc.pki_problems(m, "salt")
    m["monitoring"]["enabled"] = False  # ...and without monitoring only the CA.
    assert pgc.pki_problems(m, "salt") == ["pgcluster:pki:ca: missing (PEM text of the CA certificate)"]
    assert pgc.pki_problems(model(), "pg1") == []  # the CA run by Salt needs no PEM in pillar


def test_the_ca_minion_gets_one_policy_per_host_that_only_that_host_may_use():
    ca = pgc.ca_pillar(LAB, DEFAULTS, "salt")
    policies = {
        name: {k: v for d in items for k, v in d.items()} for name, items in ca["x509_signing_policies"].items()
    }
    hosts = ["app1", "backup", "legacy", "pg1", "pg2", "pg3", "salt"]  # every host runs the node exporter (TLS)
    assert sorted(policies) == [f"pgcluster-{h}" for h in hosts]
    off = pgc.ca_pillar({**LAB, "monitoring": {"enabled": False}}, DEFAULTS, "salt")
    assert "pgcluster-salt" not in off["x509_signing_policies"]
    assert "pgcluster-legacy" not in off["x509_signing_policies"]
    # A migration source needs a certificate (TLS to the members) even without monitoring.
    main = {**LAB["clusters"]["main"], "migrate": {"source": "legacy", "mode": "logical"}}
    migrating = pgc.ca_pillar({**LAB, "monitoring": {"enabled": False}, "clusters": {"main": main}}, DEFAULTS, "salt")
    assert "pgcluster-legacy" in migrating["x509_signing_policies"]
    pg1 = policies["pgcluster-pg1"]
    assert (pg1["minions"], pg1["CN"], pg1["subjectAltName"]) == ("pg1", "pg1", "DNS:pg1, IP:198.18.0.11")
    assert pg1["basicConstraints"] == "critical, CA:false" and pg1["signing_private_key"] == "/etc/pgcluster/pki/ca.key"
    assert ca["mine_functions"] == {"x509.get_pem_entries": ["/etc/pgcluster/pki/ca.crt"]}
    assert pgc.ca_pillar(LAB, DEFAULTS, "pg1") == {}


@pytest.mark.parametrize(
    "pki, message",
    [
        ({"ca_minion": "nobody"}, "pgcluster:pki:ca_minion: 'nobody' must be the minion that holds the CA key"),
        ({"mode": "vault"}, "pgcluster:pki:mode: 'vault' is not salt (a CA run by Salt) or pillar"),
        ({"days_remaining": 400}, "pgcluster:pki:days_remaining: 400 must be less than days_valid (365)"),
    ],
)
def test_bad_pki_pillar_names_key_and_problem(pki, message):
    p = copy.deepcopy(LAB)
    p["pki"].update(pki)
    assert any(message in f for f in pgc.problems(model(p))), pgc.problems(model(p))


# ---- secrets by need ------------------------------------------------------------------------------
SECRETS = {
    "superuser": LAB["clusters"]["main"]["passwords"]["superuser"],
    "replication": LAB["clusters"]["main"]["passwords"]["replication"],
    "rewind": LAB["clusters"]["main"]["passwords"]["rewind"],
    "restapi": LAB["clusters"]["main"]["passwords"]["restapi"],
    "app": LAB["clusters"]["main"]["roles"]["app"]["password"],
    "cipher_pass": LAB["clusters"]["main"]["pgbackrest"]["cipher_pass"],
}
# Who receives which secret (pillar.example says the same).
EXPECTED = {
    "pg1": {"superuser", "replication", "rewind", "restapi"},
    "pg2": {"superuser", "replication", "rewind", "restapi"},
    "pg3": {"superuser", "replication", "rewind", "restapi"},
    "app1": {"app"},
    "backup": {"cipher_pass"},
    "salt": set(),
}


@pytest.mark.parametrize("minion", sorted(EXPECTED))
def test_each_minion_receives_only_the_secrets_its_roles_need(minion):
    mine = json.dumps(pgc.pillar_for(LAB, minion))
    assert {k for k, secret in SECRETS.items() if secret in mine} == EXPECTED[minion]
    # ...and its filtered model is valid for it, verifiers included where PgBouncer needs them.
    m = pgc.settings(DEFAULTS, OSMAP, pgc.pillar_for(LAB, minion), {"id": minion, "os_family": "Debian"})
    if m["node"]["pgbouncer"]:
        assert m["node"]["verifiers"]["main"]["app"] == pgc.role_verifier("main", "app", SECRETS["app"])


def test_a_role_declared_by_its_verifier_reaches_only_the_hosts_that_check_passwords():
    """A migrated role comes with its source's verifier: the database servers and PgBouncer hosts
    get it, the backup host, the master's minion and the legacy host do not."""
    verifier = pgc.role_verifier("main", "shop", "lab-shop-pw-2b7d")
    p = copy.deepcopy(LAB)
    p["clusters"]["main"]["roles"]["shop"] = {"verifier": verifier}
    got = {h: verifier in json.dumps(pgc.pillar_for(p, h)) for h in p["hosts"]}
    assert got == {h: h in ("pg1", "pg2", "pg3", "app1") for h in p["hosts"]}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"passwords": {"superuser": "x" * 12, "replication": "x" * 12, "rewind": "x" * 12}},
         "pgcluster:clusters:main:passwords:restapi: missing (superuser, replication, rewind and restapi are needed)"),
        ({"roles": {"app": {}}}, "pgcluster:clusters:main:roles:app:password: missing"),
        ({"pgbackrest": {"retention": {"full": 2}}}, "pgcluster:clusters:main:pgbackrest:cipher_pass: missing"),
    ],
)  # fmt: skip
def test_a_missing_secret_stops_every_minions_pillar_naming_it(change, message):
    with pytest.raises(pgc.ModelError) as err:
        pgc.pillar_for(lab_with(**change), "salt")  # even a minion that would not receive it
    assert message in str(err.value)


def test_pillar_example_is_a_valid_model_for_every_host():
    example = yaml.safe_load((REPO / "pillar/pillar.example").read_text())["pgcluster"]
    for host in example["hosts"]:
        mine = pgc.pillar_for(example, host)
        m = pgc.settings(DEFAULTS, OSMAP, mine, {"id": host, "os_family": "Debian"})
        assert m["node"]["id"] == host


@pytest.mark.parametrize(
    "change, message",
    [
        ({"salt_master": "nobody"}, "pgcluster:salt_master: 'nobody' is not listed in pgcluster:hosts"),
        ({"monitoring": {"alerts": {"member_down_for": "soon"}}},
         "pgcluster:monitoring:alerts:member_down_for: 'soon' is not a duration such as 30s, 5m or 1h"),
        ({"monitoring": {"alerts": {"replication_lag_bytes": "lots"}}},
         "pgcluster:monitoring:alerts:replication_lag_bytes: 'lots' is not a positive number"),
        ({"monitoring": {"alerts": {"connections_ratio": 80}}},
         "pgcluster:monitoring:alerts:connections_ratio: 80 is a fraction: between 0 and 1"),
    ],
)  # fmt: skip
def test_bad_global_settings_name_key_and_problem(change, message):
    p = copy.deepcopy(LAB)
    p.update(change)
    assert any(message in f for f in pgc.problems(model(p))), pgc.problems(model(p))


def test_the_default_monitoring_thresholds_are_valid():
    assert not [f for f in pgc.problems(model()) if "monitoring" in f]


@pytest.mark.parametrize(
    "migrate, message",
    [
        ({"source": "nosuch", "mode": "physical"}, "migrate:source: 'nosuch' is not listed in pgcluster:hosts"),
        ({"source": "pg2", "mode": "physical"}, "migrate:source: pg2 is part of the cluster itself"),
        ({"source": "app1", "mode": "copy"}, "migrate:mode: 'copy' is not physical"),
        ({"source": "app1", "mode": "logical", "port": "x"}, "migrate:port: 'x' is not a port number"),
        ({"source": "app1", "mode": "logical", "databases": "shop"}, "migrate:databases: must be a list"),
        ({"source": "app1", "mode": "physical"}, "list the source's databases the applications use"),
        ("legacy", "migrate: must be a mapping"),
        ({**PHYSICAL, "copy_max_rate": "fast"}, "migrate:copy_max_rate: 'fast' is not a rate pg_basebackup takes"),
        ({**PHYSICAL, "copy_max_rate": "16k"}, "migrate:copy_max_rate: '16k' is not a rate"),
        ({**PHYSICAL, "copy_max_rate": "2G"}, "migrate:copy_max_rate: '2G' is not a rate"),
    ],
)  # fmt: skip
def test_a_bad_migrate_block_names_key_and_problem(migrate, message):
    found = pgc.problems(model(lab_with(migrate=migrate)))
    assert any(f.startswith("pgcluster:clusters:main:migrate") and message in f for f in found), found


def test_a_good_migrate_block_is_valid():
    assert pgc.problems(model(lab_with(migrate={"source": "app1", "mode": "logical", "databases": ["shop"]}))) == []
    assert pgc.problems(model(lab_with(migrate={"source": "legacy", "mode": "physical", "databases": ["shop"]}))) == []
    for rate in (32, "500k", "50M", "1024M"):
        assert pgc.problems(model(lab_with(migrate={**PHYSICAL, "copy_max_rate": rate}))) == [], rate


@pytest.mark.parametrize("mode", ["logical", "physical"])
def test_pgbouncer_routes_the_migrated_databases_to_the_source_in_either_mode(mode):
    m = model(lab_with(migrate={"source": "legacy", "mode": mode, "databases": ["shop"], "port": 5433}))
    assert pgc.migrated_sources(m, m["clusters"]["main"]) == {"shop": {"address": "198.18.0.40", "port": 5433}}


def test_the_source_of_a_physical_migration_gets_the_replication_verifier_and_no_password():
    """Its standbys log in as the replication role: the source creates it from the verifier
    alone; no other host gets that verifier, and a logical source gets none."""
    p = lab_with(migrate={"source": "legacy", "mode": "physical", "databases": ["shop"]})
    replication = p["clusters"]["main"]["passwords"]["replication"]
    source = pgc.pillar_for(p, "legacy")["clusters"]["main"]
    assert "passwords" not in source and replication not in json.dumps(source)
    assert pgc.scram_matches(replication, source["migrate"]["replication_verifier"])
    others = [h for h in p["hosts"] if h != "legacy"]
    assert [h for h in others if "replication_verifier" in json.dumps(pgc.pillar_for(p, h))] == []
    logical = lab_with(migrate={"source": "legacy", "mode": "logical", "databases": ["shop"]})
    assert "replication_verifier" not in json.dumps(pgc.pillar_for(logical, "legacy"))


@pytest.mark.parametrize(
    "monitoring, message",
    [
        ({"receivers": {"webhook": ["ftp://x"]}}, "receivers:webhook: 'ftp://x' is not an http(s) URL"),
        ({"receivers": {"email": ["dba"]}}, "receivers:email: 'dba' is not an e-mail address"),
        ({"receivers": {"email": ["dba@example.org"]}}, "smtp: e-mail receivers need smarthost (host:port) and from"),
        ({"host": "grafana"}, "monitoring:host: 'grafana' is not listed in pgcluster:hosts"),
        ({"ports": {"node": 0}}, "monitoring:ports:node: 0 is not a port number"),
        ({"retention": "a year"}, "monitoring:retention: 'a year' is not a duration"),
    ],
)  # fmt: skip
def test_bad_monitoring_settings_name_key_and_problem(monitoring, message):
    p = copy.deepcopy(LAB)
    p["monitoring"] = monitoring
    found = pgc.problems(model(p))
    assert any(message in f for f in found), found


def _member_settings(migrate: dict, grains: dict) -> dict:
    p = lab_with(migrate=migrate)
    return pgc.settings(DEFAULTS, OSMAP, pgc.pillar_for(p, "pg1"), {"id": "pg1", "os_family": "Debian", **grains})


def test_a_started_physical_migration_bootstraps_a_standby_cluster_of_the_source():
    conf = _member_settings(PHYSICAL, {"pgcluster_migrating": {"main": "legacy"}})["node"]["patroni_config"]
    assert conf["bootstrap"]["dcs"]["standby_cluster"] == {
        "host": "198.18.0.40", "port": 5433, "primary_slot_name": "pgcluster_main",
        "create_replica_methods": ["clone_source"]}  # fmt: skip
    assert conf["postgresql"]["clone_source"]["command"].endswith("/pgcluster-clone-source")
    # Replicas copy the standby leader; nothing reads the old system's pgBackRest stanza.
    assert conf["postgresql"]["create_replica_methods"] == ["basebackup"]
    assert "pgbackrest" not in conf["postgresql"] and "recovery_conf" not in conf["postgresql"]
    # The cutover's verification reads every table on the standby leader: no query cancelled.
    assert conf["postgresql"]["parameters"]["hot_standby_feedback"] == "on"
    assert "max_rate" not in conf["postgresql"]["clone_source"]


def test_the_copy_rate_reaches_the_clone_method():
    slow = {**PHYSICAL, "copy_max_rate": "50M"}
    conf = _member_settings(slow, {"pgcluster_migrating": {"main": "legacy"}})["node"]["patroni_config"]
    assert conf["postgresql"]["clone_source"]["max_rate"] == "50M"


@pytest.mark.parametrize(
    "migrate, grains",
    [(PHYSICAL, {}), (PHYSICAL, {"pgcluster_migrating": {"main": "app1"}}),
     ({**PHYSICAL, "mode": "logical"}, {"pgcluster_migrating": {"main": "legacy"}})],
    ids=["declared-not-started", "grain-names-another-source", "logical"],
)  # fmt: skip
def test_without_a_started_physical_migration_the_cluster_bootstraps_as_before(migrate, grains):
    conf = _member_settings(migrate, grains)["node"]["patroni_config"]
    assert "standby_cluster" not in conf["bootstrap"]["dcs"] and "clone_source" not in conf["postgresql"]
    assert conf["postgresql"]["create_replica_methods"] == ["pgbackrest", "basebackup"]
    assert "hot_standby_feedback" not in conf["postgresql"]["parameters"]


def test_a_member_knows_it_runs_as_a_standby_cluster_of_the_source_only_once_started():
    """node.standby_of: the states that need a writable leader (the dynamic configuration, the
    synchronous promise) stand aside while the member follows the source."""
    assert _member_settings(PHYSICAL, {"pgcluster_migrating": {"main": "legacy"}})["node"]["standby_of"] == "legacy"
    assert _member_settings(PHYSICAL, {})["node"]["standby_of"] is None
    assert (
        _member_settings({**PHYSICAL, "mode": "logical"}, {"pgcluster_migrating": {"main": "legacy"}})["node"][
            "standby_of"
        ]
        is None
    )
