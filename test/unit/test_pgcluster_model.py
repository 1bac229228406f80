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
LAB = yaml.safe_load((REPO / "pillar/pgcluster/lab.sls").read_text())["pgcluster"]


def model(pillar: dict | None = None) -> dict:
    return pgc.merge(DEFAULTS, OSMAP, LAB if pillar is None else pillar, "Debian")


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
    assert pgc.node_roles(m, "pg2") == {"member": "main", "etcd": "main", "pgbouncer": ["main"], "backup": []}
    assert pgc.node_roles(m, "app1") == {"member": None, "etcd": None, "pgbouncer": ["main"], "backup": []}
    assert pgc.node_roles(m, "backup")["backup"] == ["main"]
    assert pgc.node_roles(m, "salt") == {"member": None, "etcd": None, "pgbouncer": [], "backup": []}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"members": ["pg1", "pg2", "pg9"]}, "main:members[2]: 'pg9' has no address in pgcluster:hosts"),
        ({"etcd": ["pg1", "pg2"]}, "pgcluster:clusters:main:etcd: 2 members; etcd needs an odd number, at least 3"),
        ({"etcd": ["pg1"]}, "pgcluster:clusters:main:etcd: 1 members; etcd needs an odd number, at least 3"),
        ({"members": ["pg1"]}, "pgcluster:clusters:main:members: a cluster needs at least 2 database servers, got 1"),
        ({"profile": "turbo"}, "pgcluster:clusters:main:profile: unknown profile 'turbo' (known: durable, fast)"),
        ({"port": "5432x"}, "pgcluster:clusters:main:port: '5432x' is not a port number (1-65535)"),
        ({"port": 70000}, "pgcluster:clusters:main:port: 70000 is not a port number"),
        ({"passwords": {"superuser": "x" * 12, "replication": "x" * 12, "rewind": "x" * 12}},
         "pgcluster:clusters:main:passwords:restapi: missing or shorter than 12 characters"),
        ({"roles": {"app": {}}}, "pgcluster:clusters:main:roles:app:password: missing"),
        ({"databases": {"app": {"owner": "nobody"}}}, "databases:app:owner: role 'nobody' is not declared"),
        ({"client_networks": ["10.0.0.0/33"]}, "client_networks[0]: '10.0.0.0/33' is not a network"),
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
    p["minions"] = ["pg1", "pg2", "pg3", "backup", "salt"]  # app1's key was never accepted
    assert pgc.problems(model(p)) == ["pgcluster:hosts:app1: no minion with id 'app1' is known to the master"]


def test_bad_address_and_global_port():
    p = copy.deepcopy(LAB)
    p["hosts"]["pg1"] = "pg1.example"
    p["patroni"]["restapi_port"] = "http"
    found = pgc.problems(model(p))
    assert "pgcluster:hosts:pg1: 'pg1.example' is not an IP address" in found
    assert "pgcluster:patroni:restapi_port: 'http' is not a port number (1-65535)" in found


def test_a_minion_is_member_of_one_cluster_only():
    p = copy.deepcopy(LAB)
    p["clusters"]["other"] = copy.deepcopy(p["clusters"]["main"])
    assert any("'pg1' is already a member of cluster 'main'" in f for f in pgc.problems(model(p)))


def test_durable_profile_is_patronis_zero_loss_setup():
    conf = pgc.patroni_config(model(), "main", "pg1")
    dcs = conf["bootstrap"]["dcs"]
    assert dcs["synchronous_mode"] == "quorum" and dcs["synchronous_mode_strict"] is True
    assert dcs["failsafe_mode"] is True and dcs["check_timeline"] is True
    assert dcs["loop_wait"] + 2 * dcs["retry_timeout"] <= dcs["ttl"] and dcs["ttl"] >= 20
    assert dcs["postgresql"]["use_pg_rewind"] is True
    assert dcs["postgresql"]["parameters"]["synchronous_commit"] == "on"


def test_fast_profile_is_asynchronous():
    conf = pgc.patroni_config(model(lab_with(profile="fast")), "main", "pg1")
    assert conf["bootstrap"]["dcs"]["synchronous_mode"] is False
    assert conf["bootstrap"]["dcs"]["maximum_lag_on_failover"] == 1048576


def test_patroni_config_for_a_member():
    conf = pgc.patroni_config(model(), "main", "pg2")
    assert conf["name"] == "pg2" and conf["scope"] == "main"
    assert conf["restapi"]["listen"] == "198.18.0.12:8008"
    assert conf["restapi"]["authentication"] == {"username": "patroni", "password": "lab-restapi-pw-31b8"}
    assert conf["etcd3"]["hosts"] == ["198.18.0.11:2379", "198.18.0.12:2379", "198.18.0.13:2379"]
    assert conf["postgresql"]["data_dir"] == "/var/lib/postgresql/15/patroni-main"  # never Debian's 15/main
    auth = conf["postgresql"]["authentication"]
    assert {auth[k]["username"] for k in auth} == {"postgres", "replicator", "rewind_user"}


def test_restapi_tls_when_certificates_are_given():
    p = copy.deepcopy(LAB)
    p["patroni"].update(restapi_certfile="/etc/patroni/api.crt", restapi_keyfile="/etc/patroni/api.key")
    api = pgc.patroni_config(model(p), "main", "pg1")["restapi"]
    assert api["certfile"] == "/etc/patroni/api.crt" and api["keyfile"] == "/etc/patroni/api.key"


def test_pg_hba_is_least_privilege():
    rules = pgc.pg_hba(model(), "main")
    assert not any(" trust" in r or " md5" in r or " password" in r for r in rules)
    assert rules[-2:] == ["host all all 0.0.0.0/0 reject", "host all all ::/0 reject"]
    assert "host replication replicator 198.18.0.13/32 scram-sha-256" in rules
    assert "host replication replicator 198.18.0.30/32 scram-sha-256" not in rules  # app1 is no member
    assert "host app app 198.18.0.30/32 scram-sha-256" in rules  # app1 runs a PgBouncer
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
    assert rules["etcd"]["ports"] == [2379, 2380]
    assert rules["etcd"]["sources"] == ["198.18.0.11", "198.18.0.12", "198.18.0.13"]
    assert rules["postgresql"]["ports"] == [5432]
    assert rules["postgresql"]["sources"] == ["198.18.0.11", "198.18.0.12", "198.18.0.13", "198.18.0.30"]
    assert pgc.firewall(model(), "app1") == []
    nets = pgc.firewall(model(lab_with(client_networks=["10.1.0.0/16"])), "pg2")
    assert nets[1]["sources"][-1] == "10.1.0.0/16"


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
    assert main["repo1-cipher-type"] == "aes-256-cbc" and main["repo1-cipher-pass"] == LAB["clusters"]["main"][
        "pgbackrest"]["cipher_pass"]  # fmt: skip
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
            "pgcluster:clusters:main:pgbackrest:cipher_pass: missing or shorter",
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


def test_tls_material_of_this_minion_is_required():
    m = model()
    assert pgc.tls_problems(m, "pg1") == [
        "pgcluster:pgbackrest:tls:ca: missing (PEM text of the CA certificate)",
        "pgcluster:pgbackrest:tls:hosts:pg1:cert: missing (PEM text, CN=pg1)",
        "pgcluster:pgbackrest:tls:hosts:pg1:key: missing (PEM text)",
    ]
    assert pgc.tls_problems(m, "app1") == []
