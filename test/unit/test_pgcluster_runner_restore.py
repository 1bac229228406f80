"""The restore runner's refusals that need no lab: the confirmation and the target."""

from __future__ import annotations

import datetime

import pytest
from pgctest import load_module, recorded

MODEL = {
    "hosts": {"pg1": "198.18.0.11", "pg2": "198.18.0.12", "pg3": "198.18.0.13"},
    "clusters": {"main": {"members": ["pg1", "pg2", "pg3"], "backup": "backup"}, "nobackup": {"members": ["pg1"]}},
}


@pytest.fixture
def runner(monkeypatch):
    mod = load_module("runners", "pgcluster")
    mod.__context__ = {}
    monkeypatch.setattr(mod, "_model", lambda minion=None: MODEL)

    def no_minion_call(*args, **kwargs):
        raise AssertionError(f"a minion was called: {args}")

    monkeypatch.setattr(mod, "_call", no_minion_call)
    return mod


@pytest.mark.parametrize(
    "cluster, kwargs, message",
    [
        ("main", {"target": "latest"}, "replaces the data of every member (pg1, pg2, pg3): nothing done; "
                                       "run again with confirm=True"),
        ("main", {"target": "latest", "confirm": "yes"}, "run again with confirm=True"),
        ("main", {"target": "yesterday", "confirm": True}, "restore target 'yesterday': give 'latest' or a time"),
        ("main", {"target": "2026-11-26T01:40:00", "confirm": True}, "give a UTC offset"),
        ("main", {"target": "2999-01-01T00:00:00+00:00", "confirm": True}, "is in the future"),
        ("nobackup", {"confirm": True}, "cluster nobackup has no backup host"),
        ("nope", {"confirm": True}, "unknown cluster 'nope' (clusters: main, nobackup)"),
    ],
)  # fmt: skip
def test_refusals_call_no_minion_and_exit_non_zero(runner, cluster, kwargs, message):
    ret = runner.restore(cluster, **kwargs)
    assert message in ret["error"] and ret["retcode"] == 1
    assert runner.__context__["retcode"] == 1


def test_a_target_is_taken_in_utc_whatever_its_offset(runner):
    when = runner._restore_target("2025-11-26T03:40:00.5+02:00")
    assert when == datetime.datetime(2025, 11, 26, 1, 40, 0, 500000, tzinfo=datetime.UTC)
    parsed = datetime.datetime(2025, 11, 26, 1, 40, tzinfo=datetime.timezone(datetime.timedelta(hours=-5)))
    assert runner._restore_target(parsed).hour == 6  # salt-run's YAML may hand over a datetime
    assert runner._restore_target("latest") is None


READ_ONLY = {"test.ping", "pgbackrest.info", "pgbackrest.check"}
INFO = {"recoverable_from": "2025-01-01T00:00:00+00:00", "backups": [{"label": "F1"}]}


@pytest.fixture
def restoring(runner, monkeypatch):
    """The runner with a cluster led by pg2; minion calls are recorded, FAIL makes one raise."""
    runner.calls, runner.fail = [], ()  # FAIL: (minion, function[, the how-many-th call fails])

    def call(minion, fun, *args, wait=120, **kwargs):
        runner.calls.append((minion, fun))
        if (minion, fun) == runner.fail[:2] and runner.calls.count((minion, fun)) >= (runner.fail[2:] or (1,))[0]:
            raise runner.PgclusterError(f"{minion}: {fun}: it broke")
        return {"pgbackrest.info": INFO, "pgbackrest.backup": {"label": "F2"}}.get(fun, True)

    runner.records = {}
    # Patroni's view: pg2 leads on timeline 7 before the restore, on 9 after it (replicas then stopped).
    runner.members = {"pg1": {"role": "replica", "state": "streaming", "timeline": 7},
                      "pg2": {"role": "leader", "state": "running", "timeline": 7},
                      "pg3": {"role": "replica", "state": "streaming", "timeline": 7}}  # fmt: skip

    def leader_up(*args, **kwargs):
        runner.members = {"pg2": {"role": "leader", "state": "running", "timeline": 9}}
        return "pg2"

    monkeypatch.setattr(runner, "_call", call)
    monkeypatch.setattr(runner, "_leader_once", lambda model, c, **kw: "pg2")
    monkeypatch.setattr(runner, "_wait_leader", leader_up)
    monkeypatch.setattr(runner, "_members_state", lambda model, c: runner.members)
    monkeypatch.setattr(runner, "_timeline", lambda model, m: (runner.members.get(m) or {}).get("timeline"))
    monkeypatch.setattr(runner, "_wait_streaming", lambda leader, count, timeout: ["pg1", "pg3"])
    monkeypatch.setattr(runner, "_repoint", lambda model, name, leader: {"failed": {}})
    monkeypatch.setattr(runner, "_fire", lambda tag, data, prefix=None: None)
    monkeypatch.setattr(runner, "_pending", lambda name: dict(runner.records.get(name) or {}))
    monkeypatch.setattr(runner, "_record", lambda name, rec: runner.records.update({name: rec}))
    # GET /config on the leader: the durable profile's dynamic configuration, recorded from the lab.
    monkeypatch.setattr(runner.requests, "get", lambda url, timeout: recorded("config"))
    return runner


def test_steps_run_in_an_order_that_never_loses_the_only_good_copy(restoring):
    ret = restoring.restore("main", target="latest", confirm=True)
    assert "error" not in ret, ret
    preflight = [
        ("backup", "test.ping"),
        ("pg1", "test.ping"),
        ("pg2", "test.ping"),
        ("pg3", "test.ping"),
        ("backup", "pgbackrest.info"),
        ("pg2", "pgbackrest.info"),
        ("backup", "pgbackrest.check"),
    ]
    assert restoring.calls == [
        *preflight,
        ("pg2", "patroni.psql"),  # a commit after any time target
        ("pg1", "patroni.stop"), ("pg3", "patroni.stop"),  # replicas first
        ("backup", "pgbackrest.check"),  # the leader's last WAL archived
        ("pg2", "patroni.stop"),
        ("pg2", "patroni.remove_cluster"),
        ("pg2", "pgbackrest.restore_primary"),
        ("pg2", "service.start"),
        ("backup", "pgbackrest.backup"),  # the new timeline is in the repository...
        ("pg1", "patroni.stop"), ("pg1", "patroni.clear_data_dir"), ("pg1", "service.start"),  # ...before
        ("pg3", "patroni.stop"), ("pg3", "patroni.clear_data_dir"), ("pg3", "service.start"),  # a replica is emptied
        ("backup", "pgbackrest.check"),
    ]  # fmt: skip
    assert ret["leader"] == "pg2" and ret["backup"] == "F2"
    assert restoring.records == {"main": None}  # nothing left to finish


def test_the_marker_commits_without_waiting_for_a_standby(restoring):
    sent = []
    call = restoring._call
    restoring._call = lambda minion, fun, *args, **kw: sent.append(args) if fun == "patroni.psql" else call(
        minion, fun, *args, **kw)  # fmt: skip
    restoring.restore("main", confirm=True)
    # Strict synchronous mode with the replicas stopped (a restore run again) must not hang the marker.
    assert "SET LOCAL synchronous_commit TO local" in sent[0][0] and "pg_current_xact_id()" in sent[0][0]


@pytest.mark.parametrize(
    "fail",
    [("pg3", "test.ping"), ("backup", "pgbackrest.info"), ("pg2", "pgbackrest.info"), ("backup", "pgbackrest.check")],
)
def test_a_failed_preflight_changes_nothing(restoring, fail):
    restoring.fail = fail
    ret = restoring.restore("main", target="latest", confirm=True)
    assert ret["retcode"] == 1 and "it broke" in ret["error"]
    assert {fun for _, fun in restoring.calls} <= READ_ONLY


def test_a_failed_backup_of_the_new_timeline_leaves_the_replicas_data_alone(restoring):
    restoring.fail = ("backup", "pgbackrest.backup")
    ret = restoring.restore("main", target="latest", confirm=True)
    assert "stopped at 'full backup of the new timeline'" in ret["error"]
    assert not [c for c in restoring.calls if c[1] == "patroni.clear_data_dir"]


def test_a_restore_that_stops_after_its_leader_is_up_says_the_state_and_is_finished_by_running_it_again(restoring):
    restoring.fail = ("backup", "pgbackrest.backup")
    ret = restoring.restore("main", target="2025-06-01T00:00:00+00:00", confirm=True)
    assert ret["retcode"] == 1
    assert ("Cluster now: pg1 Patroni stopped; pg2 leader running on timeline 9; pg3 Patroni stopped; "
            "pg2 confirms no commit until a replica streams (strict synchronous mode)") in ret["error"]  # fmt: skip
    assert ret["error"].endswith(
        "To finish: salt-run pgcluster.restore main confirm=True (it resumes at 'full backup of the new timeline')"
    )
    assert restoring.records["main"]["leader"] == "pg2" and restoring.records["main"]["timeline"] == 9
    # Another target is refused while the restore is unfinished: nothing is called but lookups.
    restoring.fail, restoring.calls = (), []
    ret = restoring.restore("main", target="latest", confirm=True)
    assert "an unfinished restore of main to 2025-06-01T00:00:00+00:00 is recorded" in ret["error"]
    assert restoring.calls == []
    # Run again as the message says: it resumes where it stopped, restores nothing again.
    ret = restoring.restore("main", confirm=True)
    assert "error" not in ret and ret["resumed"] and ret["backup"] == "F2"
    assert restoring.calls == [
        ("backup", "pgbackrest.backup"),
        ("pg1", "patroni.stop"), ("pg1", "patroni.clear_data_dir"), ("pg1", "service.start"),
        ("pg3", "patroni.stop"), ("pg3", "patroni.clear_data_dir"), ("pg3", "service.start"),
        ("backup", "pgbackrest.check"),
    ]  # fmt: skip
    assert restoring.records == {"main": None}


def test_a_resumed_restore_keeps_the_replicas_already_rebuilt(restoring):
    restoring.fail = ("backup", "pgbackrest.check", 3)  # preflight, the leader's last WAL, then this one
    calls = restoring.calls
    ret = restoring.restore("main", confirm=True)
    assert ret["error"].startswith("restore of main stopped at 'check archiving'")
    restoring.members.update({m: {"role": "replica", "state": "streaming", "timeline": 9} for m in ("pg1", "pg3")})
    restoring.fail, restoring.calls = (), []
    ret = restoring.restore("main", confirm=True)
    assert "error" not in ret, ret
    assert restoring.calls == [("backup", "pgbackrest.check")] and calls


def test_a_record_the_cluster_no_longer_matches_is_not_resumed(restoring):
    restoring.records["main"] = {"target": "latest", "primary": "pg2", "leader": "pg2", "timeline": 4}
    ret = restoring.restore("main", confirm=True)
    assert "error" not in ret and "resumed" not in ret
    assert ("pg2", "pgbackrest.restore_primary") in restoring.calls


@pytest.mark.parametrize(
    "returned, message",
    [
        ({}, "pg1 does not answer (test.ping)"),
        ({"pg1": {"ret": "Minion did not return. [Not connected]", "retcode": 1}},
         "pg1 does not answer (test.ping: Minion did not return. [Not connected])"),
        ({"pg1": {"ret": "ERROR: pgbackrest info: stanza main: [HostConnectError] refused", "retcode": 1}},
         "pg1: pgbackrest info: stanza main: [HostConnectError] refused"),
    ],
)  # fmt: skip
def test_minion_failures_are_one_message(monkeypatch, returned, message):
    mod = load_module("runners", "pgcluster", opts={})

    class Client:
        def __init__(self, mopts):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def cmd(self, *args, **kwargs):
            return returned

    monkeypatch.setattr(mod.salt.client, "LocalClient", Client)
    fun = "pgbackrest.info" if "pgbackrest" in message else "test.ping"
    with pytest.raises(mod.PgclusterError) as exc:
        mod._call("pg1", fun)
    assert str(exc.value) == message
