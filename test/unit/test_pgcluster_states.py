"""_states/pgcluster.py: roles and databases only through the leader, no secret in the return."""

from __future__ import annotations

import time

import pytest
from pgctest import load_module

ROUTING = load_module("utils", "pgcluster_routing")

PILLAR = {"pgcluster": {"clusters": {"main": {
    "roles": {"app": {"password": "s3cret-password-1"}},
    "databases": {"app": {"owner": "app"}, "plain": None},
}}}}  # fmt: skip


@pytest.fixture
def state():
    pgc = load_module("utils", "pgcluster_model")
    pgsql = load_module("modules", "pgsql")  # the real quoting
    sent: list[str] = []
    db: dict = {"roles": {}, "leader": True}

    def query(sql, port=5432, **_):
        sent.append(sql)
        if sql.startswith("SELECT rolcanlogin"):
            return [list(db["roles"]["app"])] if "app" in db["roles"] else []
        if sql.startswith("SELECT pg_get_userbyid"):
            return []
        return []

    salt = {
        "patroni.is_leader": lambda: db["leader"],
        "pgsql.query": query,
        "pgsql.literal": pgsql.literal,
        "pgsql.ident": pgsql.ident,
        "pgcluster.settings": lambda: PILLAR["pgcluster"],
    }
    mod = load_module("states", "pgcluster", salt=salt, pillar=PILLAR, opts={"test": False})
    mod.sent, mod.db, mod.pgc = sent, db, pgc
    return mod


def test_role_is_created_with_the_shared_verifier_and_nothing_secret_returned(state):
    ret = state.role_present("app", "main")
    assert ret["result"] is True and ret["changes"] == {"app": ["created"]}
    create = state.sent[-1]
    verifier = state.pgc.role_verifier("main", "app", "s3cret-password-1")
    assert create == f"CREATE ROLE \"app\" LOGIN PASSWORD '{verifier}'"
    assert "s3cret-password-1" not in str(ret) and verifier not in str(ret)


def test_role_as_wanted_changes_nothing(state):
    state.db["roles"]["app"] = ("t", state.pgc.role_verifier("main", "app", "s3cret-password-1"))
    ret = state.role_present("app", "main")
    assert ret["changes"] == {} and not [s for s in state.sent if not s.startswith("SELECT")]


def test_changed_password_is_set_again(state):
    state.db["roles"]["app"] = ("t", state.pgc.scram_verifier("s3cret-password-1"))  # another salt
    assert state.role_present("app", "main")["changes"] == {"app": ["password"]}
    assert state.sent[-1].startswith('ALTER ROLE "app" LOGIN PASSWORD')


def test_replica_leaves_it_to_the_leader(state):
    state.db["leader"] = False
    ret = state.role_present("app", "main")
    assert ret["result"] is True and ret["changes"] == {} and state.sent == []
    assert ret["comment"] == "not the leader: the leader applies this"


def test_undeclared_role_or_database_fails(state):
    assert state.role_present("ghost", "main")["result"] is False
    assert (
        state.database_present("ghost", "main")["comment"] == "pgcluster:clusters:main:databases:ghost is not in pillar"
    )


def test_database_is_created_and_closed_to_public(state):
    ret = state.database_present("app", "main")
    assert ret["changes"] == {"app": {"owner": {"old": None, "new": "app"}}}
    assert state.sent[-2:] == ['CREATE DATABASE "app" OWNER "app"', 'REVOKE ALL ON DATABASE "app" FROM PUBLIC']
    assert state.database_present("plain", "main")["changes"] == {"plain": {"owner": {"old": None, "new": "postgres"}}}


def test_test_mode_changes_nothing(state):
    state.__opts__["test"] = True
    assert state.role_present("app", "main")["result"] is None
    assert state.database_present("app", "main")["result"] is None
    assert not [s for s in state.sent if not s.startswith("SELECT")]


def test_a_member_creates_the_role_from_the_verifier_it_receives(state):
    # A database server's pillar holds the role's verifier only (pgcluster.pillar_for).
    verifier = state.pgc.role_verifier("main", "app", "s3cret-password-1")
    state.__salt__["pgcluster.settings"] = lambda: {
        "clusters": {"main": {"roles": {"app": {"verifier": verifier}}, "databases": {}}}
    }
    ret = state.role_present("app", "main")
    assert ret["result"] is True and state.sent[-1] == f"CREATE ROLE \"app\" LOGIN PASSWORD '{verifier}'"


@pytest.fixture
def monitor():
    """The monitoring role's state against a fake catalogue: MON holds the role's row (or None)
    and the databases it may connect to."""
    pgsql = load_module("modules", "pgsql")
    sent: list[str] = []
    mon: dict = {"row": None, "connect": set()}

    def query(sql, port=5432, **_):
        sent.append(sql)
        if sql.startswith("SELECT rolcanlogin"):
            return [list(mon["row"])] if mon["row"] else []
        if sql.startswith("SELECT has_database_privilege"):
            return [["t" if any(f"'{d}'" in sql for d in mon["connect"]) else "f"]]
        return []

    salt = {"patroni.is_leader": lambda: True, "pgsql.query": query, "pgsql.literal": pgsql.literal,
            "pgsql.ident": pgsql.ident, "pgcluster.settings": lambda: PILLAR["pgcluster"]}  # fmt: skip
    mod = load_module("states", "pgcluster", salt=salt, pillar=PILLAR, opts={"test": False})
    mod.sent, mod.mon = sent, mon
    return mod


def test_monitoring_role_gets_pg_monitor_and_connect_and_nothing_else(monitor):
    ret = monitor.monitor_role_present("pgcluster_monitor", databases=["app"])
    assert ret["result"] is True and ret["changes"] == {"pgcluster_monitor": ["created", "granted pg_monitor",
                                                                               "CONNECT on app"]}  # fmt: skip
    writes = [s for s in monitor.sent if not s.startswith("SELECT")]
    assert writes == [
        'CREATE ROLE "pgcluster_monitor" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD NULL',
        'GRANT pg_monitor TO "pgcluster_monitor"',
        'GRANT CONNECT ON DATABASE "app" TO "pgcluster_monitor"',
    ]
    # As wanted: nothing changes. A superuser flag or a password set by hand is taken away again.
    monitor.mon.update(row=("t", "f", "f", "t"), connect={"app"})
    monitor.sent.clear()
    assert monitor.monitor_role_present("pgcluster_monitor", databases=["app"])["changes"] == {}
    assert not [s for s in monitor.sent if not s.startswith("SELECT")]
    monitor.mon.update(row=("t", "t", "f", "t"))
    assert monitor.monitor_role_present("pgcluster_monitor", databases=["app"])["changes"] == {
        "pgcluster_monitor": ["attributes"]}  # fmt: skip


def routed_state(tmp_path, leader: dict | None, standby: dict | None = None):
    """pgcluster.pgbouncer_routed with a routing spec in TMP_PATH, find_leader answering LEADER
    and pgcluster.standby_cluster STANDBY."""
    members = {n: {"address": a, "api": f"https://{a}:8008"}
               for n, a in (("pg1", "198.18.0.11"), ("pg2", "198.18.0.12"), ("pg3", "198.18.0.13"))}  # fmt: skip
    spec = {"cluster": "main", "members": members, "port": 5432, "databases": ["app"], "sources": {},
            "path": str(tmp_path / "routing-main.ini")}  # fmt: skip
    settings = {"node": {"routing": {"main": spec}}}
    utils = load_module("states", "pgcluster").__utils__
    utils["pgcluster_routing.find_leader"] = lambda apis, **_: leader
    salt = {"pgcluster.settings": lambda: settings, "pgcluster.standby_cluster": lambda name: standby or {}}
    return load_module("states", "pgcluster", salt=salt, utils=utils, opts={"test": False}), spec


def test_routing_state_owns_the_writes_not_which_replica_takes_the_reads(tmp_path):
    leader = {"name": "pg2", "timeline": 3, "system": "7712164727101477447", "replicas": ["pg1"]}
    mod, spec = routed_state(tmp_path, leader)
    assert mod.pgbouncer_routed("main")["changes"] == {"leader": "198.18.0.12"}
    assert "app_ro = host=198.18.0.11" in (tmp_path / "routing-main.ini").read_text()
    # Replication moved on (pg1 behind, pg3 streaming): a second run changes nothing...
    leader["replicas"] = ["pg3"]
    assert mod.pgbouncer_routed("main")["changes"] == {}
    # ...while a new leader is written, its reads with it.
    leader.update(name="pg3", timeline=4, replicas=["pg2"])
    assert mod.pgbouncer_routed("main")["changes"] == {"leader": "198.18.0.13"}
    assert "app_ro = host=198.18.0.12" in (tmp_path / "routing-main.ini").read_text()


def test_a_standby_cluster_of_a_migration_keeps_its_routes_without_waiting(tmp_path):
    """After migrate.start (physical) the cluster has no leader accepting writes, only a standby
    leader: the routes stay (the migrated databases go to their source), no 300 s wait."""
    mod, spec = routed_state(tmp_path, None, {"source": "legacy", "standby_leader": "pg1"})
    spec.update(databases=["app", "shop"], sources={"shop": {"address": "198.18.0.40", "port": 5432}})
    written = ROUTING.routing_text(spec, "198.18.0.11", 1, None, "7", [])  # as migrate.start left it
    (tmp_path / "routing-main.ini").write_text(written)
    start = time.monotonic()
    ret = mod.pgbouncer_routed("main", timeout=300)
    assert time.monotonic() - start < 5
    assert ret["result"] is True and ret["changes"] == {}, ret
    assert "standby cluster of legacy" in ret["comment"] and "routes kept" in ret["comment"]
    assert (tmp_path / "routing-main.ini").read_text() == written


def test_a_database_added_to_the_migration_after_start_goes_to_its_source_in_a_standby_cluster(tmp_path):
    """migrate:databases gained crm after migrate.start: the highstate sends it to its source too
    (was "routes kept" without it), the other routes and the header as they were; test=True only says so."""
    mod, spec = routed_state(tmp_path, None, {"source": "legacy", "standby_leader": "pg1"})
    spec.update(databases=["app", "shop"], sources={"shop": {"address": "198.18.0.40", "port": 5432}})
    written = ROUTING.routing_text(spec, "198.18.0.11", 1, None, "7", [])
    (tmp_path / "routing-main.ini").write_text(written)
    spec["databases"].append("crm")
    spec["sources"]["crm"] = {"address": "198.18.0.40", "port": 5432}
    mod.__opts__["test"] = True
    ret = mod.pgbouncer_routed("main")
    assert ret["result"] is None and "would send crm to their source" in ret["comment"]
    assert (tmp_path / "routing-main.ini").read_text() == written
    mod.__opts__["test"] = False
    ret = mod.pgbouncer_routed("main")
    assert ret["result"] is True and ret["changes"] == {"to_their_source": ["crm"]}, ret
    text = (tmp_path / "routing-main.ini").read_text()
    assert text.splitlines()[0] == written.splitlines()[0]
    assert "crm = host=198.18.0.40 port=5432 dbname=crm" in text and "app = host=198.18.0.11" in text
    assert mod.pgbouncer_routed("main")["changes"] == {}


def test_a_standby_cluster_with_no_routes_here_yet_is_a_failure_not_kept_routes(tmp_path):
    mod, spec = routed_state(tmp_path, None, {"source": "legacy", "standby_leader": "pg1"})
    spec["sources"] = {"shop": {"address": "198.18.0.40", "port": 5432}}
    ret = mod.pgbouncer_routed("main", timeout=300)
    assert ret["result"] is False and "has no routes yet" in ret["comment"]
