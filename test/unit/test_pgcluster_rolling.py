"""The rolling restart: the runner's refusals, and the procedure (the pgcluster_rolling util) step
by step against a fake master that plays Patroni's pending_restart flags."""

from __future__ import annotations

import pytest
from pgctest import load_module

MAIN = {"name": "main", "members": ["pg1", "pg2", "pg3"], "sync_standbys": 1, "pgbouncer": []}
rolling = load_module("utils", "pgcluster_rolling")


class FakeMaster:
    """pg2 leads; PENDING members have a restart pending. A restart clears the member's flag; a
    switchover demotes the leader (its PostgreSQL restarts: flag cleared unless STICKY)."""

    def __init__(self, pending=(), down=(), sticky=False, fail=None, wanted=None, running=None, installed=None,
                 binaries=None, servers=None):  # fmt: skip
        self.leader, self.calls, self.sticky, self.fail = "pg2", [], sticky, fail
        # PostgreSQL: the binaries installed on each member and the server it runs (default 15.18).
        self.binaries = {m: (binaries or {}).get(m, 150018) for m in MAIN["members"]}
        self.servers = {m: (servers or {}).get(m, self.binaries[m]) for m in MAIN["members"]}
        # Patroni versions: pillar's, and each member's running and installed one (default: pillar's).
        self.wanted = wanted
        self.running = {m: (running or {}).get(m, wanted) for m in MAIN["members"]}
        self.installed = {m: (installed or {}).get(m, wanted) for m in MAIN["members"]}
        self.members = {
            m: {"role": "leader" if m == "pg2" else "quorum_standby", "state": "running" if m == "pg2" else "streaming",
                "lag": 0, "pending_restart": m in pending}
            for m in MAIN["members"]
        }  # fmt: skip
        for m in down:
            self.members[m]["state"] = "stopped"

    def find_leader(self, c):
        return self.leader

    def members_state(self, c):
        return {m: dict(s) for m, s in self.members.items()}

    def restart(self, member, timeout):
        self.calls.append(("restart", member))
        if self.fail == member:
            raise rolling.CommandExecutionError(f"restart of {member} failed: it broke")
        self.members[member]["pending_restart"] = False
        self.servers[member] = self.binaries[member]

    def restart_patroni(self, member, timeout):
        self.calls.append(("restart_patroni", member))
        self.running[member] = self.installed[member]
        self.members[member]["pending_restart"] = False
        self.servers[member] = self.binaries[member]

    def patroni_wanted(self):
        return self.wanted

    def patroni_running(self, c):
        return dict(self.running)

    def patroni_installed(self, c):
        return dict(self.installed)

    def postgres_running(self, c):
        return dict(self.servers)

    def postgres_installed(self, c):
        return dict(self.binaries)

    def wait_healthy(self, c, leader, member, timeout):
        self.calls.append(("wait_healthy", leader, member))

    def switchover(self, c, candidate, timeout):
        self.calls.append(("switchover", candidate))
        old, self.leader = self.leader, candidate
        self.members[old].update(role="quorum_standby", state="streaming")
        self.members[old]["pending_restart"] = self.members[old]["pending_restart"] and self.sticky
        self.servers[old] = self.binaries[old]  # the demotion restarts its PostgreSQL
        self.members[candidate].update(role="leader", state="running")
        return {"from": old, "to": candidate, "paused_seconds": 1.5}


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(rolling, "SETTLE", 0)


def test_replicas_first_one_at_a_time_then_the_leader_hands_over():
    master = FakeMaster(pending=("pg1", "pg2", "pg3"))
    steps = rolling.run(master, MAIN)
    assert master.calls == [
        ("restart", "pg1"), ("wait_healthy", "pg2", "pg1"),
        ("restart", "pg3"), ("wait_healthy", "pg2", "pg3"),
        ("switchover", "pg1"), ("wait_healthy", "pg1", "pg2"),
    ]  # fmt: skip
    assert [r["member"] for r in steps["restarted"]] == ["pg1", "pg3", "pg2"]
    assert steps["switchover"] == {"from": "pg2", "to": "pg1", "paused_seconds": 1.5}
    assert steps["leader_after"] == "pg1" and steps["pending_after"] == [] and steps["result"] is True


def test_the_former_leader_is_restarted_again_only_when_the_demotion_did_not_apply_the_change():
    master = FakeMaster(pending=("pg2",), sticky=True)
    steps = rolling.run(master, MAIN)
    assert master.calls == [("switchover", "pg1"), ("wait_healthy", "pg1", "pg2"), ("restart", "pg2"),
                            ("wait_healthy", "pg1", "pg2")]  # fmt: skip
    assert steps["result"] is True


def test_only_pending_members_are_restarted_and_nothing_pending_does_nothing():
    master = FakeMaster(pending=("pg3",))
    rolling.run(master, MAIN)
    assert master.calls == [("restart", "pg3"), ("wait_healthy", "pg2", "pg3")]
    idle = FakeMaster()
    steps = rolling.run(idle, MAIN)
    assert idle.calls == [] and "no member of main has a restart pending" in steps["comment"]
    every = FakeMaster()
    rolling.run(every, MAIN, every=True)
    assert [c for c in every.calls if c[0] != "wait_healthy"] == [("restart", "pg1"), ("restart", "pg3"),
                                                                   ("switchover", "pg1")]  # fmt: skip


def test_a_synchronous_replica_is_preferred_for_the_handover():
    master = FakeMaster(pending=("pg2",))
    master.members["pg1"].update(role="replica", lag=0)
    master.members["pg3"].update(role="quorum_standby", lag=100)
    rolling.run(master, MAIN)
    assert ("switchover", "pg3") in master.calls


def test_a_replica_not_streaming_counts_as_down_and_an_unknown_lag_is_no_crash():
    master = FakeMaster(pending=("pg1",))
    master.members["pg3"]["state"] = "running"  # Patroni up, not replicating
    with pytest.raises(rolling.RollingError, match="pg3 running: a rolling restart needs every member up"):
        rolling.run(master, MAIN)
    assert rolling.candidate({"pg1": {"state": "streaming", "lag": "unknown"}, "pg3": {"state": "streaming", "lag": 5}},
                             "pg2") == "pg3"  # fmt: skip


def test_a_member_down_or_no_leader_refuses_with_nothing_done():
    master = FakeMaster(pending=("pg1",), down=("pg3",))
    with pytest.raises(rolling.RollingError, match="pg3 stopped: a rolling restart needs every member up"):
        rolling.run(master, MAIN)
    master.leader = None
    with pytest.raises(rolling.RollingError, match="has no leader accepting writes: nothing done"):
        rolling.run(master, MAIN)
    assert master.calls == []


def test_a_failed_step_says_where_it_stopped_and_what_was_done():
    master = FakeMaster(pending=("pg1", "pg2", "pg3"), fail="pg3")
    with pytest.raises(rolling.RollingError) as exc:
        rolling.run(master, MAIN)
    assert "stopped at 'restart pg3': restart of pg3 failed: it broke (restarted so far: pg1)" in str(exc.value)
    assert ("switchover", "pg1") not in master.calls  # the leader is not moved after a failure


def test_a_replica_whose_flag_comes_back_is_restarted_once_more():
    master = FakeMaster(pending=("pg3",))
    real = master.restart
    master.restart = lambda member, timeout: (real(member, timeout), master.members["pg3"].update(pending_restart=
                                              master.calls.count(("restart", "pg3")) < 2))  # fmt: skip
    steps = rolling.run(master, MAIN)
    assert master.calls.count(("restart", "pg3")) == 2 and steps["restarted_again"] == ["pg3"]
    assert steps["result"] is True


def test_a_flag_that_stays_up_fails_the_run():
    master = FakeMaster(pending=("pg3",))
    master.restart = lambda member, timeout: None  # restarted, but Patroni still flags it
    with pytest.raises(rolling.RollingError, match="pg3 still have a restart pending after being restarted "
                                                   r"\(lowering one of max_connections"):  # fmt: skip
        rolling.run(master, MAIN)


def test_a_new_patroni_version_restarts_patroni_itself_replicas_first_the_leader_after_its_handover():
    old = {m: "4.1.5" for m in MAIN["members"]}
    master = FakeMaster(pending=("pg1",), wanted="4.1.4", running=old)
    steps = rolling.run(master, MAIN)
    assert master.calls == [
        ("restart_patroni", "pg1"), ("wait_healthy", "pg2", "pg1"),
        ("restart_patroni", "pg3"), ("wait_healthy", "pg2", "pg3"),
        ("switchover", "pg1"), ("wait_healthy", "pg1", "pg2"),
        ("restart_patroni", "pg2"), ("wait_healthy", "pg1", "pg2"),
    ]  # fmt: skip
    assert steps["patroni_version"] == {"to": "4.1.4", "members": ["pg1", "pg2", "pg3"]} and steps["result"] is True
    assert set(master.running.values()) == {"4.1.4"}


def test_only_members_running_another_version_are_restarted_for_it():
    master = FakeMaster(wanted="4.1.4", running={"pg3": "4.1.5"})
    rolling.run(master, MAIN)
    assert master.calls == [("restart_patroni", "pg3"), ("wait_healthy", "pg2", "pg3")]


def test_a_version_not_installed_yet_refuses_with_nothing_done():
    master = FakeMaster(wanted="4.1.4", running={"pg3": "4.1.5"}, installed={"pg1": "4.1.5", "pg3": None})
    with pytest.raises(rolling.RollingError, match="pg1 has 4.1.5 installed, pg3 has no Patroni installed while "
                                                   "pillar wants Patroni 4.1.4: run highstate"):  # fmt: skip
        rolling.run(master, MAIN)
    assert master.calls == []


def test_a_member_still_running_the_old_version_after_its_restart_fails_the_run():
    master = FakeMaster(wanted="4.1.4", running={"pg3": "4.1.5"})
    master.restart_patroni = lambda member, timeout: None  # restarted, still the old one
    with pytest.raises(rolling.RollingError, match=r"\{'pg3': '4.1.5'\} still run another version than 4.1.4"):
        rolling.run(master, MAIN)


@pytest.fixture
def runner(monkeypatch, tmp_path):
    mod = load_module("runners", "pgcluster", opts={"cachedir": str(tmp_path)})
    mod.__context__ = {}
    monkeypatch.setattr(mod, "_model", lambda minion=None: {"clusters": {"main": MAIN}, "hosts": {}})
    monkeypatch.setattr(mod, "_cluster", lambda model, name: MAIN)
    return mod


def test_the_runner_refuses_bad_arguments_and_a_second_operation(runner):
    ret = runner.rolling_restart("main", every="yes")
    assert ret == {"error": "every='yes': give True or False", "retcode": 1}
    lock, _ = runner.__utils__["pgcluster_lock.operation"](runner._locks(), "main", "rolling restart")
    try:
        ret = runner.rolling_restart("main")
    finally:
        lock.release()
    assert "cluster main: rolling restart (pid" in ret["error"] and "is running: nothing done" in ret["error"]


def test_a_restore_is_refused_while_a_rolling_restart_runs(runner):
    MAIN["backup"] = "backup"
    lock, _ = runner.__utils__["pgcluster_lock.operation"](runner._locks(), "main", "rolling restart")
    try:
        ret = runner.restore("main", confirm=True)
    finally:
        lock.release()
        del MAIN["backup"]
    assert "cluster main: rolling restart (pid" in ret["error"] and ret["retcode"] == 1


NEW = {m: 150020 for m in MAIN["members"]}


def test_postgres_minus_v_reads_as_server_version_num():
    assert rolling.version_num("postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)") == 150020
    assert rolling.version_num("postgres (PostgreSQL) 16.4") == 160004
    assert rolling.version_num("bash: postgres: not found") is None and rolling.version_num(None) is None
    assert rolling.version_name(150020) == "15.20" and rolling.version_name(None) == "unknown"


def test_a_new_minor_installed_restarts_every_member_replicas_first_the_leader_by_its_handover():
    master = FakeMaster(binaries=NEW, servers={m: 150018 for m in MAIN["members"]})
    steps = rolling.run(master, MAIN)
    assert master.calls == [
        ("restart", "pg1"), ("wait_healthy", "pg2", "pg1"),
        ("restart", "pg3"), ("wait_healthy", "pg2", "pg3"),
        ("switchover", "pg1"), ("wait_healthy", "pg1", "pg2"),
    ]  # fmt: skip
    assert steps["postgresql_version"] == {"to": "15.20", "members": ["pg1", "pg2", "pg3"]} and steps["result"]
    assert set(master.servers.values()) == {150020}


def test_only_members_running_older_binaries_are_restarted_for_them():
    master = FakeMaster(binaries=NEW, servers={"pg3": 150018})
    steps = rolling.run(master, MAIN)
    assert master.calls == [("restart", "pg3"), ("wait_healthy", "pg2", "pg3")]
    assert steps["postgresql_version"] == {"to": "15.20", "members": ["pg3"]}


def test_members_with_different_minors_installed_are_each_compared_with_their_own():
    # Nothing pinned the minor: pg1 got 15.20 when it was added, the others run the 15.18 they have.
    master = FakeMaster(binaries={"pg1": 150020}, servers={"pg1": 150020, "pg3": 150017})
    steps = rolling.run(master, MAIN)
    assert master.calls == [("restart", "pg3"), ("wait_healthy", "pg2", "pg3")]
    assert steps["postgresql_version"] == {"to": "15.18", "members": ["pg3"]} and steps["result"] is True


def test_an_unknown_installed_version_or_a_failed_lookup_refuses_with_nothing_done():
    unknown = FakeMaster(binaries={"pg3": None})
    with pytest.raises(rolling.RollingError, match="cannot tell which PostgreSQL is installed on pg3: nothing done"):
        rolling.run(unknown, MAIN)

    def broken(c):
        raise rolling.CommandExecutionError("pg3: '/usr/lib/postgresql/15/bin/postgres' -V (exit 127): not found")

    failing = FakeMaster(pending=("pg1",))
    failing.postgres_installed = broken
    with pytest.raises(rolling.RollingError, match="^cluster main: cannot read the PostgreSQL installed: pg3: "
                                                   ".* -V \\(exit 127\\): not found: nothing done$"):  # fmt: skip
        rolling.run(failing, MAIN)
    assert unknown.calls == [] and failing.calls == []


def test_a_member_down_is_refused_before_any_member_is_asked_for_versions():
    master = FakeMaster(pending=("pg1",), down=("pg3",), wanted="4.1.5")

    def asked(c):
        raise AssertionError("a member was asked for its versions while pg3 is down")

    master.postgres_installed = master.patroni_installed = asked
    with pytest.raises(rolling.RollingError, match="pg3 stopped: a rolling restart needs every member up"):
        rolling.run(master, MAIN)


def test_a_leader_whose_demotion_kept_the_old_binaries_is_restarted_once_more():
    master = FakeMaster(binaries=NEW, servers={m: 150018 for m in MAIN["members"]})
    switch = master.switchover

    def switchover_keeping_old_binaries(c, candidate, timeout):
        ret = switch(c, candidate, timeout)
        master.servers["pg2"] = 150018  # e.g. a demotion that did not restart PostgreSQL
        return ret

    master.switchover = switchover_keeping_old_binaries
    steps = rolling.run(master, MAIN)
    assert master.calls[-4:] == [("switchover", "pg1"), ("wait_healthy", "pg1", "pg2"), ("restart", "pg2"),
                                 ("wait_healthy", "pg1", "pg2")]  # fmt: skip
    assert set(master.servers.values()) == {150020} and steps["result"] is True


def test_a_member_still_running_the_old_binaries_after_its_restart_fails_the_run():
    master = FakeMaster(binaries=NEW, servers={"pg3": 150018})
    master.restart = lambda member, timeout: None  # restarted, still the old server
    with pytest.raises(rolling.RollingError, match=r"\{'pg3': '15.18'\} still run another PostgreSQL than the one "
                                                   r"installed \(15.20\)"):  # fmt: skip
        rolling.run(master, MAIN)
