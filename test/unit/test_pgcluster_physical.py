"""The physical mode's steps (the pgcluster_physical util) against a fake ``ops`` that plays the
members' Patroni: the order of start (replicas stopped before the former leader, the DCS emptied
only then, every data directory moved aside before the members are told to follow the source,
the standby leader started before the others), abort (each data directory back before any
Patroni starts, the former leader first), settle, and a failed state named."""

from __future__ import annotations

import pytest
from pgctest import load_module

physical = load_module("utils", "pgcluster_physical")
DATA = "/var/lib/postgresql/15/patroni-main"
MAIN = {"name": "main", "scope": "main", "members": ["pg1", "pg2", "pg3"], "backup": "backup", "port": 5432,
        "sync_standbys": 1, "pgbouncer": ["app1"]}  # fmt: skip
MODEL = {"hosts": {"pg1": "198.18.0.11", "pg2": "198.18.0.12", "pg3": "198.18.0.13", "app1": "198.18.0.30",
                   "legacy": "198.18.0.40"},
         "pgbackrest": {"spool_path": "/var/spool/pgbackrest"},
         "patroni": {"replication_user": "replicator"}}  # fmt: skip
MODEL_FUNCS = {
    "data_dir": lambda model, name: DATA,
    "dynamic_config": lambda model, name: {"ttl": 30},
    "pki_files": lambda model: {"ca": "/ca.crt", "cert": "/host.crt", "key": "/host.key"},
    "physical_source": lambda model, c: {"host": "198.18.0.40", "port": 5432, "slot": "pgcluster_main"},
}


class FakeOps:
    """Records every call; directories that exist per minion; Patroni's role per member after a
    start (standby_leader for the first started while the grain is set, replica after)."""

    def __init__(self, dirs=None, failing_state=None):
        self.calls, self.saved = [], []
        self.dirs = {m: set(d) for m, d in (dirs or {m: {DATA} for m in MAIN["members"]}).items()}
        self.grain, self.started, self.failing_state = set(), [], failing_state
        self.locked = 0  # stanza-upgrade finds the stanza's lock held this many times

    def model(self, name):
        return MODEL_FUNCS[name]

    def save(self, record):
        self.saved.append(dict(record, aside=dict(record["aside"])))

    def each(self, minions, fun, *args, wait=120, **kwarg):
        return {m: self.call(m, fun, *args, wait=wait, **kwarg) for m in minions}

    def call(self, minion, fun, *args, wait=120, **kwarg):
        self.calls.append((minion, fun, *args))
        d = self.dirs.setdefault(minion, set())
        if fun == "file.find":
            return [args[0]] if args[0] in d else []
        if fun == "file.rename":
            d.discard(args[0])
            d.add(args[1])
        elif fun == "file.remove":
            d.discard(args[0])
        elif fun == "grains.setval":
            self.grain.add(minion)
        elif fun == "grains.delkey":
            self.grain.discard(minion)
        elif fun == "service.start":
            self.started.append(minion)
        elif fun == "state.sls_id":
            ok = self.failing_state != minion
            state = {"__id__": "patroni-config-managed", "result": ok, "comment": "ok" if ok else "template error"}
            return {"file_|-patroni-config-managed_|-x_|-managed": state}
        elif fun == "patroni.node":
            if minion not in self.started:
                return {}
            if self.grain:
                return {"role": "standby_leader" if minion == self.started[0] else "replica", "state": "running"}
            return {"role": "primary" if minion == self.started[0] else "replica", "state": "running"}
        elif fun == "pgbackrest.stanza_upgrade":
            if self.locked:
                self.locked -= 1
                raise physical.CommandExecutionError("backup: pgbackrest stanza-upgrade: [050] unable to acquire lock")
            return "P00 INFO: stanza-upgrade command begin\nP00   INFO: stanza-upgrade for stanza 'main' on repo1\nend"
        elif fun == "pgbackrest.backup":
            return {"label": "20261128-120000F"}
        return True

    def index(self, minion, fun):
        return next(i for i, c in enumerate(self.calls) if c[:2] == (minion, fun))


def record():
    return {"source": "legacy", "leader": "pg2", "aside": {}}


def test_start_stops_the_replicas_first_then_moves_every_data_directory_aside():
    ops = FakeOps()
    timings = physical.start(ops, MODEL, MAIN, record(), "pg2")
    assert set(timings) == {"stopped_s", "standby_leader_s", "replicas_s"}
    stop_leader = ops.index("pg2", "patroni.stop")
    assert ops.index("pg1", "patroni.stop") < stop_leader and ops.index("pg3", "patroni.stop") < stop_leader
    assert stop_leader < ops.index("pg2", "patroni.remove_cluster")
    for m in MAIN["members"]:
        assert ops.dirs[m] == {DATA + physical.ASIDE}
        # Aside (and recorded so) before the member is told to follow the source.
        assert ops.index(m, "file.rename") < ops.index(m, "grains.setval") < ops.index(m, "state.sls_id")
        assert ops.calls[ops.index(m, "grains.setval")][1:] == ("grains.setval", physical.GRAIN, {"main": "legacy"})
    assert ops.saved[-1]["aside"] == {m: DATA + physical.ASIDE for m in MAIN["members"]}
    # The former leader starts first (it clones the source), the others once it streams.
    assert ops.started[0] == "pg2" and set(ops.started[1:]) == {"pg1", "pg3"}
    assert ("pg2", "file.remove", "/var/spool/pgbackrest/archive/main") not in ops.calls  # no spool: nothing


def test_start_run_again_does_not_move_a_data_directory_twice():
    """A start that stopped after moving pg1's data aside: run again, pg1's aside copy (its old
    data) is not replaced by the empty directory a failed clone may have left."""
    ops = FakeOps(dirs={"pg1": {DATA + physical.ASIDE, DATA}, "pg2": {DATA}, "pg3": {DATA}})
    rec = dict(record(), aside={"pg1": DATA + physical.ASIDE})
    physical.start(ops, MODEL, MAIN, rec, "pg2")
    assert not any(c[:2] == ("pg1", "file.rename") for c in ops.calls)


def test_a_failed_state_is_named_and_nothing_starts():
    ops = FakeOps(failing_state="pg3")
    with pytest.raises(physical.PhysicalError, match="pg3: pgcluster.patroni.config failed: "
                                                      "patroni-config-managed: template error"):  # fmt: skip
        physical.start(ops, MODEL, MAIN, record(), "pg2")
    assert ops.started == []


def test_abort_puts_each_data_directory_back_before_patroni_starts():
    ops = FakeOps(dirs={m: {DATA, DATA + physical.ASIDE} for m in MAIN["members"]})
    ops.grain = set(MAIN["members"])
    rec = dict(record(), aside={m: DATA + physical.ASIDE for m in MAIN["members"]})
    out = physical.abort(ops, MODEL, MAIN, rec)
    assert out == {"restored": ["pg1", "pg2", "pg3"], "leader": "pg2"}
    first_start = ops.index("pg2", "service.start")
    for m in MAIN["members"]:
        assert ops.dirs[m] == {DATA}
        assert ops.index(m, "file.rename") < ops.index(m, "grains.delkey") < first_start
    assert ops.grain == set() and ops.started[0] == "pg2"
    assert ops.calls[-1][:2] == ("pg2", "patroni.wait_healthy")


def test_settle_gives_patroni_its_roles_the_stanza_a_backup_and_removes_the_old_data_last():
    ops = FakeOps(dirs={m: {DATA, DATA + physical.ASIDE} for m in MAIN["members"]})
    ops.grain = set(MAIN["members"])
    rec = record()
    done = physical.settle(ops, MODEL, MAIN, "pg1", rec)
    assert done["stanza"] == "stanza-upgrade for stanza 'main' on repo1"
    assert done["backup"] == "20261128-120000F" == ops.saved[-1]["backup"]
    assert ops.grain == set()
    order = [ops.index("pg1", "pgmigrate.patroni_roles"), ops.index("backup", "pgbackrest.stanza_upgrade"),
             ops.index("backup", "pgbackrest.check"), ops.index("backup", "pgbackrest.backup"),
             ops.index("pg1", "patroni.wait_healthy"), ops.index("pg3", "file.remove")]  # fmt: skip
    assert order == sorted(order)
    assert all(ops.dirs[m] == {DATA} for m in MAIN["members"])
    # Run again (a cutover that stopped later): the recorded backup is not taken twice; a stanza
    # lock held by another pgBackRest command is waited for.
    again = FakeOps()
    again.locked = 2
    assert physical.settle(again, MODEL, MAIN, "pg1", rec)["backup"] == "20261128-120000F"
    assert not any(c[1] == "pgbackrest.backup" for c in again.calls)
    assert sum(c[1] == "pgbackrest.stanza_upgrade" for c in again.calls) == 3


def test_promote_waits_until_the_standby_leader_takes_writes():
    ops, answers = FakeOps(), iter([None, {"name": "pg3"}, {"name": "pg2", "timeline": 2}])
    found = physical.promote(ops, MODEL, MAIN, "pg2", lambda: next(answers))
    assert found == {"name": "pg2", "timeline": 2}
    assert ops.calls == [("pg2", "patroni.config_patch", {"standby_cluster": None})]


def test_the_source_is_opened_for_the_members_and_pgbouncer_hosts():
    args, kwarg = physical.source_open_args(FakeOps(), MODEL, MAIN, {"port": 5433}, ["shop"])
    assert args == ["main", {"pg1": "198.18.0.11", "pg2": "198.18.0.12", "pg3": "198.18.0.13"}, "replicator",
                    "pgcluster_main", "/host.crt", "/host.key"]  # fmt: skip
    assert kwarg == {"port": 5433, "routers": {"app1": "198.18.0.30"}, "databases": ["shop"]}
