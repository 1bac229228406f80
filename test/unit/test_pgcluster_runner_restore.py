"""The restore: the runner's refusals, and the procedure (the pgcluster_restore util) step by step
against a fake master that records every call."""

from __future__ import annotations

import datetime
import json

import pytest
from pgctest import load_module, recorded

MAIN = {"name": "main", "scope": "main", "members": ["pg1", "pg2", "pg3"], "backup": "backup", "pgbouncer": []}
MODEL = {
    "hosts": {"pg1": "198.18.0.11", "pg2": "198.18.0.12", "pg3": "198.18.0.13"},
    "clusters": {"main": MAIN, "nobackup": {"name": "nobackup", "members": ["pg1"]}},
}
restore_util = load_module("utils", "pgcluster_restore")


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


def test_a_target_is_taken_in_utc_whatever_its_offset():
    when = restore_util.target("2025-11-26T03:40:00.5+02:00")
    assert when == datetime.datetime(2025, 11, 26, 1, 40, 0, 500000, tzinfo=datetime.UTC)
    parsed = datetime.datetime(2025, 11, 26, 1, 40, tzinfo=datetime.timezone(datetime.timedelta(hours=-5)))
    assert restore_util.target(parsed).hour == 6  # salt-run's YAML may hand over a datetime
    assert restore_util.target("latest") is None


READ_ONLY = {"test.ping", "pgbackrest.info", "pgbackrest.check"}
INFO = {"recoverable_from": "2025-01-01T00:00:00+00:00", "backups": [{"label": "F1"}]}
# GET /config on the leader: the durable profile's dynamic configuration, recorded from the lab.
DURABLE = json.loads(recorded("config").text)


class FakeMaster:
    """Records every call; Patroni's view: pg2 leads on timeline 7 before the restore, on 9 after
    it (replicas stopped). FAIL = (minion, function[, the how-many-th call fails])."""

    def __init__(self):
        self.calls, self.fail, self.records, self.fired = [], (), {}, []
        self.members = {"pg1": {"role": "replica", "state": "streaming", "timeline": 7},
                        "pg2": {"role": "leader", "state": "running", "timeline": 7},
                        "pg3": {"role": "replica", "state": "streaming", "timeline": 7}}  # fmt: skip

    def call(self, minion, fun, *args, wait=120, **kwargs):
        self.calls.append((minion, fun))
        if (minion, fun) == self.fail[:2] and self.calls.count((minion, fun)) >= (self.fail[2:] or (1,))[0]:
            raise restore_util.CommandExecutionError(f"{minion}: {fun}: it broke")
        self.args = getattr(self, "args", []) + [(fun, args)]
        return {"pgbackrest.info": INFO, "pgbackrest.backup": {"label": "F2"}}.get(fun, True)

    def ping(self, minions, wait=10):
        for minion in minions:
            self.call(minion, "test.ping", wait=wait)

    def find_leader(self, c):
        return next((m for m, s in self.members.items() if s["role"] == "leader"), None)

    def wait_leader(self, c, timeout):
        self.members = {"pg2": {"role": "leader", "state": "running", "timeline": 9}}
        return "pg2"

    def timeline(self, member):
        return (self.members.get(member) or {}).get("timeline")

    def members_state(self, c):
        return self.members

    def apply_configuration(self, c, leader):
        self.call(leader, "apply_configuration")

    def dynamic_config(self, c, leader):
        return DURABLE

    def wait_streaming(self, leader, count, timeout):
        return ["pg1", "pg3"]

    def pending(self, name):
        return dict(self.records.get(name) or {})

    def record(self, name, rec):
        self.records[name] = rec

    def fire(self, tag, data):
        self.fired.append(tag)

    def repoint(self, c, leader):
        return {"failed": {}}

    def log(self, message):
        pass


@pytest.fixture
def master():
    return FakeMaster()


def restore(master, target=None, source=None):
    """The procedure as the runner runs it; a refusal or failure as {"error": message}."""
    try:
        return restore_util.run(master, MAIN, target, 3600, source)
    except restore_util.CommandExecutionError as exc:
        return {"error": str(exc)}


def test_steps_run_in_an_order_that_never_loses_the_only_good_copy(master):
    ret = restore(master, "latest")
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
    assert master.calls == [
        *preflight,
        ("pg2", "patroni.psql"),  # a commit after any time target
        ("pg1", "patroni.stop"), ("pg3", "patroni.stop"),  # replicas first
        ("backup", "pgbackrest.check"),  # the leader's last WAL archived
        ("pg2", "patroni.stop"),
        ("pg2", "patroni.remove_cluster"),
        ("pg2", "pgbackrest.restore_primary"),
        ("pg2", "service.start"),
        ("pg2", "apply_configuration"),  # created anew with another configuration: pillar's back
        ("backup", "pgbackrest.backup"),  # the new timeline is in the repository...
        ("pg1", "patroni.stop"), ("pg1", "patroni.clear_data_dir"), ("pg1", "service.start"),  # ...before
        ("pg3", "patroni.stop"), ("pg3", "patroni.clear_data_dir"), ("pg3", "service.start"),  # a replica is emptied
        ("backup", "pgbackrest.check"),
    ]  # fmt: skip
    assert ret["leader"] == "pg2" and ret["backup"] == "F2"
    assert master.records == {"main": None}  # nothing left to finish
    assert master.fired == ["done"]


def test_the_marker_commits_without_waiting_for_a_standby(master):
    restore(master)
    sql = next(args[0] for fun, args in master.args if fun == "patroni.psql")
    # Strict synchronous mode with the replicas stopped (a restore run again) must not hang the marker.
    assert "SET LOCAL synchronous_commit TO local" in sql and "pg_current_xact_id()" in sql


@pytest.mark.parametrize(
    "fail",
    [("pg3", "test.ping"), ("backup", "pgbackrest.info"), ("pg2", "pgbackrest.info"), ("backup", "pgbackrest.check")],
)
def test_a_failed_preflight_changes_nothing(master, fail):
    master.fail = fail
    ret = restore(master)
    assert "it broke" in ret["error"]
    assert {fun for _, fun in master.calls} <= READ_ONLY
    assert master.records == {}


def test_a_failed_backup_of_the_new_timeline_leaves_the_replicas_data_alone(master):
    master.fail = ("backup", "pgbackrest.backup")
    ret = restore(master)
    assert "stopped at 'full backup of the new timeline'" in ret["error"]
    assert not [c for c in master.calls if c[1] == "patroni.clear_data_dir"]


def test_a_restore_that_stops_after_its_leader_is_up_says_the_state_and_is_finished_by_running_it_again(master):
    master.fail = ("backup", "pgbackrest.backup")
    ret = restore(master, "2025-06-01T00:00:00+00:00")
    assert ("Cluster now: pg1 Patroni stopped; pg2 leader running on timeline 9; pg3 Patroni stopped; "
            "writes blocked: pg2 confirms no commit until a replica streams (strict synchronous mode)"
            ) in ret["error"]  # fmt: skip
    assert "It resumes at 'full backup of the new timeline'." in ret["error"]
    assert ret["error"].endswith("To finish: salt-run pgcluster.restore main confirm=True")
    assert master.records["main"]["leader"] == "pg2" and master.records["main"]["timeline"] == 9
    # Another target is refused while the restore is unfinished: nothing is called.
    master.fail, master.calls = (), []
    ret = restore(master, "latest")
    assert "an unfinished restore of main to 2025-06-01T00:00:00+00:00 is recorded" in ret["error"]
    assert master.calls == []
    # Run again as the message says: it resumes where it stopped, restores nothing again.
    ret = restore(master)
    assert "error" not in ret and ret["resumed"] and ret["backup"] == "F2"
    assert master.calls == [
        ("pg2", "apply_configuration"),  # idempotent: applied on every run once the leader is up
        ("backup", "pgbackrest.backup"),
        ("pg1", "patroni.stop"), ("pg1", "patroni.clear_data_dir"), ("pg1", "service.start"),
        ("pg3", "patroni.stop"), ("pg3", "patroni.clear_data_dir"), ("pg3", "service.start"),
        ("backup", "pgbackrest.check"),
    ]  # fmt: skip
    assert master.records == {"main": None}


def test_a_resumed_restore_keeps_the_replicas_already_rebuilt(master):
    master.fail = ("backup", "pgbackrest.check", 3)  # preflight, the leader's last WAL, then this one
    ret = restore(master)
    assert ret["error"].startswith("restore of main stopped at 'check archiving'")
    master.members.update({m: {"role": "replica", "state": "streaming", "timeline": 9} for m in ("pg1", "pg3")})
    master.fail, master.calls = (), []
    ret = restore(master)
    assert "error" not in ret, ret
    assert master.calls == [("pg2", "apply_configuration"), ("backup", "pgbackrest.check")]


def test_a_record_the_cluster_no_longer_matches_is_not_resumed(master):
    master.records["main"] = {"target": "latest", "primary": "pg2", "leader": "pg2", "timeline": 4}
    ret = restore(master)
    assert "error" not in ret and "resumed" not in ret
    assert ("pg2", "pgbackrest.restore_primary") in master.calls


def test_a_restore_that_fails_before_its_leader_is_up_restores_the_same_member_again(master):
    master.fail = ("pg2", "pgbackrest.restore_primary")
    assert "stopped at 'restore pg2'" in restore(master)["error"]
    master.members = {}  # every Patroni stopped: no leader
    master.fail, master.calls = (), []
    ret = restore(master)
    assert "error" not in ret and ("pg2", "pgbackrest.restore_primary") in master.calls
    assert ("pg1", "pgbackrest.restore_primary") not in master.calls


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


def test_ping_asks_every_host_in_one_job_and_names_the_first_silent_one(monkeypatch):
    mod = load_module("runners", "pgcluster", opts={})
    jobs = []

    class Client:
        def __init__(self, mopts):
            self.mopts = mopts

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def cmd(self, tgt, fun, args, **kwargs):
            jobs.append((tgt, fun, kwargs["tgt_type"], kwargs["timeout"], self.mopts["gather_job_timeout"]))
            return {"backup": {"ret": True, "retcode": 0}, "pg1": {"ret": True, "retcode": 0}}

    monkeypatch.setattr(mod.salt.client, "LocalClient", Client)
    with pytest.raises(mod.PgclusterError) as exc:
        mod._Master.ping(["backup", "pg1", "pg2", "pg3"])
    assert str(exc.value) == "pg2 does not answer (test.ping)"
    assert jobs == [(["backup", "pg1", "pg2", "pg3"], "test.ping", "list", 10, 5)]
    mod._Master.ping(["backup", "pg1"])  # every host answers: no error


def test_without_a_leader_the_member_to_restore_from_must_be_named(master):
    # The leader crashed with changes not yet archived, the others stopped: which member holds the
    # newest WAL is for the operator to say; nothing is touched until then.
    master.members = {"pg1": {"role": "replica", "state": "stopped", "timeline": 7}}
    ret = restore(master)
    assert "main has no leader accepting writes (pg1 replica stopped on timeline 7; pg2 Patroni stopped" in ret["error"]
    assert "restore from: salt-run pgcluster.restore main source=<member> confirm=True" in ret["error"]
    assert {fun for _, fun in master.calls} <= READ_ONLY and master.records == {}
    ret = restore(master, source="pg3")
    assert "error" not in ret and ("pg3", "pgbackrest.restore_primary") in master.calls
    assert ("pg2", "pgbackrest.restore_primary") not in master.calls


@pytest.mark.parametrize(
    "source, message",
    [("pg3", "pg2 leads main: the leader is the one restored (source=pg3 is for a cluster without a leader)"),
     ("pg9", "source='pg9' is not a member of main (pg1, pg2, pg3)")],
)  # fmt: skip
def test_a_source_that_does_not_fit_is_refused_and_changes_nothing(master, source, message):
    assert message in restore(master, source=source)["error"]
    assert {fun for _, fun in master.calls} <= READ_ONLY and master.records == {}


def test_commits_says_blocked_accepted_or_unknown(master):
    """What status's 'writes' says: strict synchronous mode with no streaming replica blocks every
    commit; an unreadable /config is no reason to claim writes are accepted."""
    assert restore_util.commits(master, MAIN, "pg2") == "pg2 accepts writes"
    master.members = {"pg2": {"role": "leader", "state": "running", "timeline": 7},
                      "pg1": {"role": "replica", "state": "stopped", "timeline": 7}}  # fmt: skip
    assert restore_util.commits(master, MAIN, "pg2").startswith("writes blocked: pg2 confirms no commit")
    master.dynamic_config = lambda c, leader: {}
    assert restore_util.commits(master, MAIN, "pg2").startswith("unknown: pg2 leads but its dynamic configuration")
    assert restore_util.commits(master, MAIN, None) == "no leader accepts writes"
