"""The runner's routing paths: the leader comes from Patroni (replayed from recordings by local
servers, through the real leader finder), never from the event; every value it sends a PgBouncer
host comes from the one model, non-default ports included."""

from __future__ import annotations

import copy
import json
import re
import threading
import time

import pytest
import yaml
from pgctest import REPO, load_module, make_pki, patroni_replay

DEFAULTS = yaml.safe_load((REPO / "salt/pgcluster/defaults.yaml").read_text())
OSMAP = yaml.safe_load((REPO / "salt/pgcluster/osfamilymap.yaml").read_text())
LAB = yaml.safe_load((REPO / "pillar/pgcluster/lab_model.yaml").read_text())["pgcluster"]
LEADER = {"/cluster": "cluster", "/primary": "primary_on_leader"}  # pg2 leads in the recording
REPLICA = {"/cluster": "cluster", "/primary": "primary_on_replica"}
PKI_DIR: list = []


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """The replay servers' TLS material; the model's pki:dir points at it (its CA verifies them)."""
    return make_pki(tmp_path_factory.mktemp("pki"), ["127.0.0.11", "127.0.0.12", "127.0.0.13"])


def lab_model(utils: dict, **tweaks) -> dict:
    """The lab's model with the members on the replay servers (and TWEAKS merged into pillar)."""
    pillar = copy.deepcopy(LAB)
    pillar["hosts"].update(patroni_replay.hosts)
    pillar.setdefault("patroni", {})["restapi_port"] = patroni_replay.port
    pillar["pki"]["dir"] = str(PKI_DIR[0])
    for key, value in tweaks.items():
        pillar.setdefault(key, {}).update(value)
    return utils["pgcluster_model.settings"](DEFAULTS, OSMAP, pillar, {"id": "salt", "os_family": "Debian"})


@pytest.fixture
def runner(monkeypatch, pki, tmp_path):
    PKI_DIR[:] = [pki]
    mod = load_module("runners", "pgcluster", opts={"cachedir": str(tmp_path)})
    mod.jobs, mod.fired = [], []

    def on_pgbouncers(c, fun, args, timeout=8, kwarg=None, verifies=False):
        mod.jobs.append((fun, args, kwarg))
        return {h: {"ret": {"changed": True, "resumed": []}, "retcode": 0} for h in c["pgbouncer"]}

    monkeypatch.setattr(mod, "_on_pgbouncers", on_pgbouncers)
    monkeypatch.setattr(mod, "_fire", lambda tag, data, prefix=None: mod.fired.append((tag, data)))
    return mod


def use_model(runner, monkeypatch, model):
    monkeypatch.setattr(runner, "_model", lambda minion=None: model if minion in ("pg1", "pg2", "pg3", None) else {
        "clusters": {}})  # fmt: skip


@pytest.mark.parametrize(
    "sender, cluster",
    [("app1", "main"), ("pg1", "other"), ("pg1", None), (None, "main"), (["pg1"], "main"), ("pg1", {"x": 1})],
)
def test_forged_or_malformed_events_change_nothing(runner, monkeypatch, sender, cluster):
    with patroni_replay({"pg1": REPLICA, "pg2": LEADER, "pg3": REPLICA}, tls=PKI_DIR[0]):
        use_model(runner, monkeypatch, lab_model(runner.__utils__))
        ret = runner.follow_leader(sender=sender, cluster=cluster, event_tag="pgcluster/patroni/role_change")
    assert ret["result"] is False and "is not a member of cluster" in ret["comment"]
    assert runner.jobs == []
    assert [t for t, _ in runner.fired] == ["rejected"]


def test_an_event_from_pg1_repoints_to_the_leader_patroni_reports_with_its_timeline(runner, monkeypatch):
    with patroni_replay({"pg1": REPLICA, "pg2": LEADER, "pg3": REPLICA}, tls=PKI_DIR[0]) as urls:
        use_model(runner, monkeypatch, lab_model(runner.__utils__))
        ret = runner.follow_leader(sender="pg1", cluster="main", event_tag="pgcluster/patroni/role_change")
    assert ret["result"] is True and ret["leader"] == "pg2" and ret["timeline"] == 1  # Patroni's, not the event's
    fun, args, kwarg = runner.jobs[-1]
    assert fun == "pgbouncer.repoint" and args == ["main", patroni_replay.hosts["pg2"]]
    assert kwarg["timeline"] == 1 and kwarg["spec"]["members"]["pg2"]["api"] == urls["pg2"]
    assert kwarg["system"] == "7712164727101477447"  # the fence: the route says which database system
    assert runner.fired[-1][0] == "repointed" and "seconds_total" in runner.fired[-1][1]


def test_a_leader_still_promoting_is_not_routed_to(runner, monkeypatch):
    promoting = {"/cluster": "cluster", "/primary": "primary_while_promoting"}
    with patroni_replay({"pg1": REPLICA, "pg2": promoting, "pg3": REPLICA}, tls=PKI_DIR[0]):
        use_model(runner, monkeypatch, lab_model(runner.__utils__))
        ret = runner.follow_leader(sender="pg1", cluster="main", timeout=0.5)
    assert ret["result"] is False and "no leader accepting writes" in ret["comment"]
    assert runner.jobs == []


def test_non_default_ports_reach_every_pgbouncer_host(runner, monkeypatch):
    with patroni_replay({"pg1": REPLICA, "pg2": LEADER, "pg3": REPLICA}, tls=PKI_DIR[0]):
        model = lab_model(runner.__utils__, postgresql={"port": 5433}, pgbouncer={"port": 6433, "conf_dir": "/etc/pgb"})
        use_model(runner, monkeypatch, model)
        runner.reconcile()
        runner.switchover_spec = runner._spec(model, model["clusters"]["main"])
    spec = runner.jobs[-1][2]["spec"]
    assert (spec["port"], spec["admin_port"], spec["path"]) == (5433, 6433, "/etc/pgb/routing-main.ini")
    assert spec == runner.switchover_spec


def hold(runner, what: str):
    """Cluster main's routing lock, held as another operation would hold it."""
    lock, _ = runner.__utils__["pgcluster_lock.take"](runner._locks(), "main", what)
    assert lock is not None
    return lock


def test_the_safety_net_skips_a_cluster_whose_routing_lock_is_held_and_resumes_otherwise(runner, monkeypatch):
    with patroni_replay({"pg1": REPLICA, "pg2": LEADER, "pg3": REPLICA}, tls=PKI_DIR[0]):
        use_model(runner, monkeypatch, lab_model(runner.__utils__))
        with hold(runner, "switchover from pg2"):
            ret = runner.reconcile()
        assert ret["main"]["result"] is True and ret["main"]["comment"].startswith("skipped: switchover from pg2")
        assert runner.jobs == []
        runner.reconcile()
    # Nothing holds the lock: no switchover runs, a PgBouncer left paused is resumed.
    assert [kwarg["resume_paused"] for _, _, kwarg in runner.jobs] == [True]


def test_a_switchover_or_restore_is_refused_while_another_operation_holds_the_lock(runner, monkeypatch):
    with patroni_replay({"pg1": REPLICA, "pg2": LEADER, "pg3": REPLICA}, tls=PKI_DIR[0]):
        use_model(runner, monkeypatch, lab_model(runner.__utils__))
        with hold(runner, "restore to latest"):
            ret = runner.switchover("main", candidate="pg3")
            assert ret["retcode"] == 1
            assert re.match(r"cluster main: restore to latest \(pid \d+, since [\d:]+\) holds its routing lock: "
                            r"nothing done", ret["error"])  # fmt: skip
        with hold(runner, "switchover from pg2"):
            ret = runner.restore("main", confirm=True)
            assert "switchover from pg2" in ret["error"] and "holds its routing lock" in ret["error"]
    assert runner.jobs == []  # nothing paused, nothing repointed


def test_an_event_while_another_lookup_waits_is_coalesced(runner, monkeypatch):
    queued = runner.__utils__["pgcluster_lock.Lock"](runner._locks(), "main", "queue")
    assert queued.acquire("follow_leader (waiting)")
    with patroni_replay({"pg1": REPLICA, "pg2": LEADER, "pg3": REPLICA}, tls=PKI_DIR[0]):
        model = lab_model(runner.__utils__)
        loads = []
        monkeypatch.setattr(runner, "_model", lambda minion=None: loads.append(minion) or model)
        for _ in range(20):
            ret = runner.follow_leader(sender="pg1", cluster="main", event_tag="pgcluster/patroni/role_change")
            assert ret == {"result": True, "comment": "coalesced: another lookup of this cluster is already waiting"}
        assert runner.jobs == [] and loads == []  # a coalesced event costs no model load, no lookup
        queued.release()
        assert runner.follow_leader(sender="pg1", cluster="main")["leader"] == "pg2"
    assert [fun for fun, _, _ in runner.jobs] == ["pgbouncer.repoint"]


def test_a_refused_switchover_resumes_every_pgbouncer_and_says_why(runner, monkeypatch):
    __context__ = runner.__context__

    calls = []

    def call(minion, fun, *args, **kwargs):
        calls.append((minion, fun, args))
        if fun == "pgsql.query":
            return []
        assert (minion, fun) == ("pg2", "patroni.switchover")  # on the leader, with its own credentials
        raise runner.PgclusterError("pg2: patroni.switchover: Patroni REST API POST ...: HTTP 412: candidate lags")

    monkeypatch.setattr(runner, "_call", call)
    with patroni_replay({"pg1": REPLICA, "pg2": LEADER, "pg3": REPLICA}, tls=PKI_DIR[0]):
        use_model(runner, monkeypatch, lab_model(runner.__utils__))
        ret = runner.switchover("main", candidate="pg3")
    assert ret["retcode"] == 1 and __context__["retcode"] == 1
    assert "switchover of main failed (every PgBouncer resumed)" in ret["error"] and "candidate lags" in ret["error"]
    assert [fun for fun, _, _ in runner.jobs] == ["pgbouncer.pause", "pgbouncer.resume"]
    assert [t for t, _ in runner.fired] == ["switchover"]
    # A checkpoint on the leader before the PAUSE: its shutdown checkpoint is short inside it.
    assert calls == [("pg2", "pgsql.query", ("CHECKPOINT",)), ("pg2", "patroni.switchover", ())]


def test_a_switchover_to_the_leader_or_a_stranger_touches_nothing(runner, monkeypatch):
    with patroni_replay({"pg1": REPLICA, "pg2": LEADER, "pg3": REPLICA}, tls=PKI_DIR[0]):
        use_model(runner, monkeypatch, lab_model(runner.__utils__))
        assert "pg2 already leads cluster main: nothing done" in runner.switchover("main", candidate="pg2")["error"]
        assert "unknown candidate 'pg9'" in runner.switchover("main", candidate="pg9")["error"]
    assert runner.jobs == []


class FakeLocal:
    """Salt's LocalClient at its edge: every PgBouncer job is recorded and answers as the real
    ``pgbouncer.repoint`` does; hosts in DOWN do not answer."""

    jobs: list = []
    down: set = set()

    def __init__(self, mopts=None):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def cmd(self, hosts, fun, args, tgt_type=None, timeout=None, full_return=False, kwarg=None):
        FakeLocal.jobs.append((fun, list(hosts), kwarg))
        return {h: {"ret": {"changed": False, "resumed": []}, "retcode": 0} for h in hosts if h not in FakeLocal.down}


@pytest.fixture
def net(runner, monkeypatch):
    """The runner with its PgBouncer jobs going through the real util down to a fake LocalClient,
    two PgBouncer hosts in cluster main; returns a function running one reconcile round."""
    monkeypatch.undo()  # the runner fixture's _on_pgbouncers stand-in: the real one here
    monkeypatch.setattr(runner, "_fire", lambda tag, data, prefix=None: runner.fired.append((tag, data)))
    monkeypatch.setattr("salt.client.LocalClient", FakeLocal)
    FakeLocal.jobs, FakeLocal.down = [], set()

    tweaks: dict = {}

    def round_(**kwargs):
        FakeLocal.jobs = []
        m = lab_model(runner.__utils__, **tweaks)
        m["clusters"]["main"]["pgbouncer"] = ["app1", "pg1"]
        use_model(runner, monkeypatch, m)
        round_.cluster = m["clusters"]["main"]
        return runner.reconcile(**kwargs)["main"]

    round_.tweaks = tweaks
    # One replay for every round: its port is in the routing spec (the start-up hook's API URLs).
    with patroni_replay({"pg1": REPLICA, "pg2": LEADER, "pg3": REPLICA}, tls=PKI_DIR[0]):
        yield round_


def test_the_safety_net_sends_no_job_while_the_route_it_verified_still_holds(net):
    first = net()
    assert first.get("checked") == ["app1", "pg1"] and [f for f, _, _ in FakeLocal.jobs] == ["pgbouncer.repoint"]
    assert FakeLocal.jobs[0][2]["resume_paused"] is True
    idle = net()
    assert idle["result"] is True and idle["checked"] == [] and FakeLocal.jobs == []


def test_any_other_routing_job_makes_the_next_round_check_every_host_again(net, runner):
    net()
    c = net.cluster
    # A switchover's PAUSE (its runner may die before its RESUME), an event's repoint, a migration's.
    for fun in ("pgbouncer.pause", "pgbouncer.repoint", "pgbouncer.resume"):
        runner._on_pgbouncers(c, fun, ["main"])
        assert net()["checked"] == ["app1", "pg1"], fun
    runner._on_pgbouncers(c, "pgbouncer.targets", ["main"])  # reading routes changes nothing
    assert net()["checked"] == []


def test_a_changed_route_a_host_that_failed_or_an_old_check_gets_a_job(net, runner, monkeypatch):
    net()
    FakeLocal.down = {"pg1"}
    net.tweaks["pgbouncer"] = {"port": 6433}  # the routing spec changed
    assert net()["checked"] == ["app1", "pg1"]
    FakeLocal.down = set()
    monkeypatch.setattr(runner, "FAILED_RETRY", 0)
    assert net()["checked"] == ["pg1"]  # it did not answer: not verified
    assert net()["checked"] == []
    assert net(full_every=0)["checked"] == ["app1", "pg1"]


def test_a_host_that_did_not_answer_is_tried_again_after_a_while_not_every_round(net, runner, monkeypatch):
    """Each try holds the routing lock while Salt waits for the silent host: the events' leader
    lookups would wait behind the safety net every round while a PgBouncer host is down."""
    net()
    FakeLocal.down = {"pg1"}
    assert net(full_every=0)["checked"] == ["app1", "pg1"]
    assert net(full_every=0)["checked"] == ["app1"]  # pg1 failed a moment ago: not yet again
    assert [hosts for _, hosts, _ in FakeLocal.jobs] == [["app1"]]
    monkeypatch.setattr(runner, "FAILED_RETRY", 0)
    assert net()["checked"] == ["pg1"]
    FakeLocal.down = set()
    assert net()["checked"] == ["pg1"] and net()["checked"] == []


@pytest.mark.parametrize(
    "record",
    ["not json", "[1, 2]", '{"app1": "x", "pg1": {"route": 1, "at": 0}}', '{"app1": {"route": "r"}}',
     '{"app1": {"route": "ROUTE", "at": true}}', '{"app1": {"route": "ROUTE", "at": FUTURE}, "pg1": []}',
     '{"app1": {"failed": "soon"}, "pg1": {"failed": FUTURE}}'],
)  # fmt: skip
def test_a_damaged_record_or_a_check_dated_in_the_future_means_check_again(net, runner, record):
    """What the safety net recorded is only a saving: a file it cannot trust (or a clock that went
    back) makes it check the hosts again, never skip them or fail."""
    net()
    path = f"{runner.__opts__['cachedir']}/pgcluster/verified/main.json"
    with open(path) as f:
        route = json.load(f)["app1"]["route"]
    with open(path, "w") as f:
        f.write(record.replace("ROUTE", route).replace("FUTURE", str(time.time() + 3600)))
    ret = net()
    assert ret["result"] is True and ret["checked"] == ["app1", "pg1"], ret
    assert net()["checked"] == []


@pytest.mark.parametrize("value", [-1, "often", True, None])
def test_a_bad_full_every_is_one_message(runner, value):
    ret = runner.reconcile(full_every=value)
    assert ret["result"] is False and "full_every=" in ret["comment"] and runner.__context__["retcode"] == 1


def test_the_route_digest_ignores_whether_the_job_also_resumes(runner):
    digest = runner.__utils__["pgcluster_master.route_digest"]
    assert digest(["main", "a"], {"timeline": 2, "resume_paused": True}) == digest(["main", "a"], {"timeline": 2})
    assert digest(["main", "a"], {"timeline": 2}) != digest(["main", "a"], {"timeline": 3})


def test_a_switchover_routes_and_resumes_in_one_job_once_the_new_leader_takes_writes(runner, monkeypatch):
    """The new leader is polled while Patroni's switchover job runs (its API answers a whole second
    later): repoint and RESUME go out in one job as soon as the new leader accepts writes."""
    lookups = []

    def leader(model, c, timeout=None):  # pg2 leads, then nobody for a while, then pg3
        lookups.append(1)
        return {"name": "pg2", "timeline": 7, "system": "1"} if len(lookups) == 1 else (
            None if len(lookups) < 4 else {"name": "pg3", "timeline": 8, "system": "1"})  # fmt: skip

    monkeypatch.setattr(runner, "_leader", leader)

    def call(minion, fun, *args, **kwargs):
        if fun == "patroni.switchover":
            time.sleep(1.5)  # Patroni answers at a whole second after the leader changed, then Salt returns
        return []

    monkeypatch.setattr(runner, "_call", call)
    with patroni_replay({"pg1": REPLICA, "pg2": LEADER, "pg3": REPLICA}, tls=PKI_DIR[0]):
        use_model(runner, monkeypatch, lab_model(runner.__utils__))
        ret = runner.switchover("main", candidate="pg3")
    assert ret["result"] is True and ret["to"] == "pg3" and ret["timeline"] == 8, ret
    assert ret["leader_after"] < 1.5 and ret["paused_seconds"] < 1.5, ret
    jobs = [(fun, kwarg.get("resume_paused")) for fun, _, kwarg in runner.jobs]
    assert jobs == [("pgbouncer.pause", None), ("pgbouncer.repoint", True)]


def test_the_switchover_returns_the_new_leader_without_waiting_for_patronis_job(runner, monkeypatch):
    """The Patroni job's return comes a second or more after the leader changed: the poll does
    not wait for it, and neither does the runner's exit (a daemon thread)."""
    views = iter([None, {"name": "pg1"}, {"name": "pg2", "timeline": 2}])
    monkeypatch.setattr(runner, "_leader", lambda model, c: next(views))
    monkeypatch.setattr(runner, "_call", lambda *a, **k: time.sleep(5))
    start = time.monotonic()
    assert runner._switch({}, {"name": "main"}, "pg1", "pg2", timeout=10) == {"name": "pg2", "timeline": 2}
    assert time.monotonic() - start < 2
    # Nothing left that the interpreter would wait for at exit (the job still sleeps).
    assert not [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]


def test_a_switchover_patroni_refuses_is_one_clear_error(runner, monkeypatch):
    def refused(*args, **kwargs):
        raise runner.PgclusterError("pg1: patroni: switchover refused: candidate pg3 is not healthy")

    monkeypatch.setattr(runner, "_leader", lambda model, c: {"name": "pg1"})
    monkeypatch.setattr(runner, "_call", refused)
    with pytest.raises(runner.PgclusterError, match="^pg1: patroni: switchover refused: candidate pg3 is not healthy$"):
        runner._switch({}, {"name": "main"}, "pg1", "pg3", timeout=10)
    monkeypatch.setattr(runner, "_call", lambda *a, **k: 1 / 0)
    with pytest.raises(runner.PgclusterError, match="^ZeroDivisionError: division by zero$"):
        runner._switch({}, {"name": "main"}, "pg1", "pg3", timeout=10)


def test_the_installed_postgresql_is_read_on_every_member_in_one_job_and_a_failure_says_what_it_said(
    runner, monkeypatch
):
    jobs = []
    said = {"pg1": (0, "postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)", ""),
            "pg2": (0, "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)", "")}  # fmt: skip

    def call_each(opts, minions, fun, *args, **kwargs):
        jobs.append((list(minions), fun, args, kwargs))
        return {m: dict(zip(("retcode", "stdout", "stderr"), said[m], strict=True)) for m in minions}

    monkeypatch.setitem(runner.__utils__, "pgcluster_master.call_each", call_each)
    master = runner._Master({"postgresql": {"bin_dir": "/usr/lib/postgresql/15/bin"}})
    assert master.postgres_installed({"members": ["pg1", "pg2"]}) == {"pg1": 150020, "pg2": 150018}
    assert jobs == [(["pg1", "pg2"], "cmd.run_all", ("/usr/lib/postgresql/15/bin/postgres -V",),
                     {"python_shell": True, "ignore_retcode": True, "wait": 30})]  # fmt: skip
    said["pg2"] = (127, "", "sh: 1: /usr/lib/postgresql/15/bin/postgres: not found")
    binary = "/usr/lib/postgresql/15/bin/postgres"
    with pytest.raises(runner.PgclusterError, match=rf"^pg2: {binary} -V \(exit 127\): sh: 1: {binary}: not found$"):
        master.postgres_installed({"members": ["pg1", "pg2"]})
