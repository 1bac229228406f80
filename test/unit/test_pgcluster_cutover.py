"""A migration's cutover (the pgcluster_cutover util) against a fake ``ops`` that plays the source,
the cluster and the PgBouncer hosts: the order of the steps (PAUSE before the freeze, the
verification before the point of no return, the repoint before the clean-up), a difference that
gives the source back (only this migration's databases thawed, every PgBouncer resumed, nothing
recorded as verified), the logical pause holding three jobs (the freeze that waits for the
cluster's confirmation, both ends' fingerprints), and the physical standby leader waiting for the
source's last WAL in its own fingerprint job, the source given back at once when it fails."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest
from pgctest import load_module
from salt.exceptions import CommandExecutionError

cutover = load_module("utils", "pgcluster_cutover")
lock = load_module("utils", "pgcluster_lock")
MAIN = {"name": "main", "members": ["pg1", "pg2"], "port": 5432, "pgbouncer": ["app1"]}
MODEL = {"hosts": {"pg1": "198.18.0.11", "pg2": "198.18.0.12", "app1": "198.18.0.30", "legacy": "198.18.0.40"},
         "patroni": {"replication_user": "replicator"}}  # fmt: skip
LEADER = {"name": "pg1", "timeline": 1, "system": "7"}


def fingerprint(digest: str = "123") -> dict:
    return {"shop": {"tables": {"public.orders": {"rows": 3, "checksum": digest}}, "views": {},
                     "sequences": {"public.orders_id_seq": 10}, "schema": "abc"}}  # fmt: skip


class FakeOps:
    """Records every job and every shared routing call, in order, with their keyword arguments."""

    def __init__(self, tmp_path, cluster_digest: str = "123"):
        self.calls, self.args, self.saved, self.cluster_digest = [], [], [], cluster_digest
        self.opts = {"cachedir": str(tmp_path)}
        self.locks = str(tmp_path / "locks")

    def model(self, name):
        return {
            "routing": lambda model, cluster: {"cluster": cluster},
            "settings": lambda *a: MODEL,
            "role_verifiers": lambda seen, cluster: {"app": "SCRAM-SHA-256$app"},
            "pki_files": lambda model: {"ca": "/ca.crt"},
        }[name]

    def util(self, name):
        return {
            "pgcluster_lock.take": lock.take,
            "pgcluster_routing.replica_addresses": lambda spec, leader: {},
            "pgcluster_physical.standby_leader": lambda ops, c: "pg1",
            "pgcluster_physical.replicating": lambda ops, member: True,
            "pgcluster_physical.promote": self.promote,
            "pgcluster_physical.settle": lambda ops, model, c, leader, rec: {"stanza": "upgraded"},
        }[name]

    def promote(self, ops, model, c, member, find_leader):
        self.calls.append((member, "promote", {}))
        return dict(LEADER, name=member)

    def save(self, record):
        self.saved.append(record)
        self.calls.append(("master", "save", {"verified": bool(record and record.get("verified"))}))

    def shared(self, fun, *args, **kwarg):
        if fun == "locks_dir":
            return self.locks
        if fun == "on_pgbouncers":
            self.calls.append(("app1", args[2], kwarg))
            return {"app1": True}
        if fun == "failures":
            return {}
        if fun == "model":
            return MODEL
        if fun == "repoint_kwarg":
            return {"resume_paused": True}
        if fun == "repointed":
            return {"failed": [], "refused": []}
        raise AssertionError(fun)

    def call(self, minion, fun, *args, wait=120, **kwarg):
        self.calls.append((minion, fun, kwarg))
        self.args.append((minion, fun, args))
        if fun == "pgmigrate.progress":
            return {"shop": {"tables": {"public.orders": "ready"}}}
        if fun == "pgsql.role_digests":
            return {"app": hashlib.sha256(b"SCRAM-SHA-256$app").hexdigest()}
        if fun == "pgmigrate.freeze":
            confirmed = {"confirm_s": 0.1, "sequences": {"shop": {"public.orders_id_seq": 10}}, "views": {"shop": []}}
            return {"lsn": "0/3000060", "sessions_ended": 1, **(confirmed if kwarg.get("confirm_wait") else {})}
        if fun in ("pgmigrate.fingerprint", "pgmigrate.finish_copy"):
            return fingerprint("123" if minion == "legacy" else self.cluster_digest)
        return {}

    def steps(self) -> list[str]:
        return [f"{m} {f}" for m, f, _ in self.calls]


def record(mode: str = "logical") -> dict:
    return {"source": "legacy", "port": 5432, "mode": mode, "databases": ["shop"], "slot": "pgcluster_main",
            "row_hash": "text", "created": {"roles": []}}  # fmt: skip


def test_a_logical_cutover_pauses_freezes_verifies_then_routes_and_cleans_up(tmp_path):
    ops = FakeOps(tmp_path)
    out = cutover.cutover(ops, MODEL, MAIN, record(), LEADER, True)
    assert out["cut_over"] is True and out["databases"] == {"shop": {"tables": 1, "rows": 3, "sequences": 1}}
    steps = ops.steps()
    order = ["pg1 pgmigrate.vacuum_analyze", "app1 pgbouncer.pause", "legacy pgmigrate.freeze",
             "legacy pgmigrate.fingerprint", "master save", "app1 pgbouncer.repoint", "pg1 pgmigrate.unsubscribe",
             "legacy pgmigrate.source_close"]  # fmt: skip
    assert [steps.index(s) for s in order] == sorted(steps.index(s) for s in order)
    # Inside the pause: one job freezes and waits for the cluster's confirmation, then both ends
    # at once, the leader setting the frozen source's sequences before its own fingerprint.
    paused = steps[steps.index("app1 pgbouncer.pause") + 1 : steps.index("master save")]
    assert sorted(paused) == ["legacy pgmigrate.fingerprint", "legacy pgmigrate.freeze", "pg1 pgmigrate.finish_copy"]
    freeze = next(kw for m, f, kw in ops.calls if f == "pgmigrate.freeze")
    assert freeze["confirm_wait"] == cutover.CATCH_UP_WAIT
    finish = next(a for m, f, a in ops.args if f == "pgmigrate.finish_copy")
    assert finish == (["shop"], {"shop": {"public.orders_id_seq": 10}}, {"shop": []})
    assert ops.saved[0]["verified"] and ops.saved[-1] is None
    assert "legacy pgmigrate.thaw" not in steps
    assert {"vacuum_analyze_s", "pause_s", "freeze_s", "catch_up_s", "verify_s", "paused_s", "clean_up_s"} <= set(
        out["timings"]
    )


def test_a_difference_gives_the_source_back_thawing_only_this_migrations_databases(tmp_path):
    ops = FakeOps(tmp_path, cluster_digest="999")
    with pytest.raises(cutover.CutoverError, match="public.orders has the same 3 rows on both sides but other content"
                       r".*legacy takes writes again, PgBouncer still sends shop there"):  # fmt: skip
        cutover.cutover(ops, MODEL, MAIN, record(), LEADER, True)
    thaw = [kw for m, f, kw in ops.calls if f == "pgmigrate.thaw"]
    assert thaw == [{"port": 5432, "databases": ["shop"]}]
    steps = ops.steps()
    assert steps.index("legacy pgmigrate.thaw") < steps.index("app1 pgbouncer.resume")
    assert ops.saved == [] and "app1 pgbouncer.repoint" not in steps


def test_a_physical_standby_leader_waits_for_the_last_wal_in_one_job_before_either_end_checksums(tmp_path):
    ops = FakeOps(tmp_path)
    out = cutover.cutover(ops, MODEL, MAIN, record("physical"), {}, True)
    assert out["leader"] == "pg1" and out["settled"] == {"stanza": "upgraded"}
    # Every database of the instance frozen; then one job waits on the standby leader (no polling
    # from the master), and only then both ends checksum.
    freeze = next(kw for m, f, kw in ops.calls if f == "pgmigrate.freeze")
    assert freeze["every_database"] is True
    steps = ops.steps()
    frozen = steps.index("legacy pgmigrate.freeze")
    assert sorted(steps[frozen + 1 : frozen + 3]) == ["legacy pgmigrate.fingerprint", "pg1 pgmigrate.fingerprint"]
    standby = next(kw for m, f, kw in ops.calls if (m, f) == ("pg1", "pgmigrate.fingerprint"))
    assert standby["replayed"] == "0/3000060" and standby["replay_wait"] == cutover.CATCH_UP_WAIT
    source = next(kw for m, f, kw in ops.calls if (m, f) == ("legacy", "pgmigrate.fingerprint"))
    assert "replayed" not in source
    assert steps.index("master save") < steps.index("pg1 promote") < steps.index("app1 pgbouncer.repoint")
    assert {"catch_up_and_verify_s", "promote_s"} <= set(out["timings"])


def test_a_standby_that_does_not_replay_gives_the_source_back_without_waiting_for_its_checksum(tmp_path):
    """The standby leader's job fails (no replay within the wait) while the source still
    checksums: the source is thawed and every PgBouncer resumed at once, nothing recorded."""
    ops = FakeOps(tmp_path)
    call, checksumming = ops.call, threading.Event()

    def slow_source_standby_behind(minion, fun, *args, **kwarg):
        if fun == "pgmigrate.fingerprint" and minion == "legacy":
            checksumming.wait(30)  # a big source: ends only when the test is over
        if fun == "pgmigrate.fingerprint" and minion == "pg1":
            raise CommandExecutionError("this server did not replay the source's WAL up to 0/3000060 within 60 s")
        return call(minion, fun, *args, **kwarg)

    ops.call = slow_source_standby_behind
    t = time.monotonic()
    try:
        with pytest.raises(cutover.CutoverError, match="did not replay.*legacy takes writes again"):
            cutover.cutover(ops, MODEL, MAIN, record("physical"), {}, True)
        assert time.monotonic() - t < 5
        steps = ops.steps()
        assert "legacy pgmigrate.thaw" in steps and steps[-1] == "app1 pgbouncer.resume" and ops.saved == []
    finally:
        checksumming.set()


def test_a_give_back_says_the_source_stays_read_only_while_an_earlier_wave_stays_frozen(tmp_path):
    ops = FakeOps(tmp_path, cluster_digest="999")
    call = ops.call

    def thaw_keeps_wave_1(minion, fun, *args, **kwarg):
        out = call(minion, fun, *args, **kwarg)
        return {"frozen": ["crm"]} if fun == "pgmigrate.thaw" else out

    ops.call = thaw_keeps_wave_1
    with pytest.raises(cutover.CutoverError, match="legacy lets clients of shop in again but stays read-only by "
                       "default: crm of an earlier migration stay frozen"):  # fmt: skip
        cutover.cutover(ops, MODEL, MAIN, record(), LEADER, True)


def test_without_confirm_nothing_is_done(tmp_path):
    ops = FakeOps(tmp_path)
    with pytest.raises(cutover.CutoverError, match="run it with confirm=True"):
        cutover.cutover(ops, MODEL, MAIN, record(), LEADER, False)
    assert [s for s in ops.steps() if "pause" in s or "freeze" in s] == []


def test_a_physical_cutover_also_moves_a_database_declared_since_start(tmp_path):
    """migrate:databases gained crm after start (the routing state sends it to the source): the
    whole instance moves, so crm is paused, checksummed and repointed with shop."""
    ops = FakeOps(tmp_path)
    cluster = dict(MAIN, migrate={"source": "legacy", "mode": "physical", "databases": ["shop", "crm"]})
    cutover.cutover(ops, MODEL, cluster, record("physical"), {}, True)
    pause = next(kw for m, f, kw in ops.calls if f == "pgbouncer.pause")
    assert pause["kwarg"]["databases"] == ["crm", "shop"]
    assert next(a for m, f, a in ops.args if f == "pgmigrate.fingerprint")[0] == ["crm", "shop"]
    assert ops.saved[0]["databases"] == ["crm", "shop"]
