"""Taking a member out (the pgcluster_members util) step by step against a fake master that plays
Patroni's member list: its refusals (nothing done), and the order stop → key expired → healthy."""

from __future__ import annotations

import pytest
from pgctest import load_module

members = load_module("utils", "pgcluster_members")
# pg3 already taken out of the model's members; Patroni still lists it.
MAIN = {"name": "main", "profile": "durable", "members": ["pg1", "pg2"], "sync_standbys": 1,
        "profile_settings": {"dcs": {"ttl": 0}}}  # fmt: skip


class FakeMaster:
    """pg1 leads pg2 and pg3 (all streaming unless DOWN). Stopping a member's Patroni makes its key
    expire after EXPIRES more looks at the member list (never when STUCK)."""

    def __init__(self, leader="pg1", down=(), stop_fails=False, expires=2, stuck=False):
        self.leader, self.calls, self.stop_fails, self.expires, self.stuck = leader, [], stop_fails, expires, stuck
        self.state = {m: {"role": "leader" if m == leader else "quorum_standby",
                          "state": "running" if m == leader else ("stopped" if m in down else "streaming")}
                      for m in ("pg1", "pg2", "pg3")}  # fmt: skip
        self.stopped = None

    def members_state(self, c):
        if self.stopped and not self.stuck:
            self.expires -= 1
            if self.expires <= 0:
                self.state.pop(self.stopped, None)
        return {m: dict(s) for m, s in self.state.items()}

    def find_leader(self, c):
        return self.leader

    def stop_patroni(self, member):
        self.calls.append(("stop_patroni", member))
        self.stopped = member
        if self.stop_fails:
            raise members.CommandExecutionError(f"{member} did not answer")

    def wait_healthy(self, c, leader, member, timeout):
        self.calls.append(("wait_healthy", leader, member))


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(members, "EXPIRY_MARGIN", 0.5)
    monkeypatch.setattr(members.time, "sleep", lambda s: None)


def test_stops_it_waits_until_patroni_forgets_it_then_for_the_others():
    master = FakeMaster()
    steps = members.remove(master, MAIN, "pg3")
    assert master.calls == [("stop_patroni", "pg3"), ("wait_healthy", "pg1", None)]
    assert "pg3" not in master.state
    assert steps["result"] is True and steps["patroni"] == "stopped and disabled" and steps["was"] == "streaming"
    assert "highstate" in steps["next"] and "kept on pg3" in steps["data_directory"]


@pytest.mark.parametrize(
    ("cluster", "master", "message"),
    [
        ({**MAIN, "members": ["pg1", "pg2", "pg3"]}, FakeMaster(), "pg3 is still in clusters:main:members"),
        (MAIN, FakeMaster(leader="pg3"), "pg3 is the leader of cluster main: switch over first"),
        (MAIN, FakeMaster(leader=None), "cluster main has no leader accepting writes"),
        (MAIN, FakeMaster(down=("pg2",)), "without pg3, cluster main has 0 streaming replica(s) (none)"),
    ],
)
def test_refused_with_nothing_done(cluster, master, message):
    with pytest.raises(members.MembersError, match="nothing done") as err:
        members.remove(master, cluster, "pg3")
    assert message in str(err.value)
    assert master.calls == [] and "pg3" in master.state


def test_an_asynchronous_profile_lets_the_last_replica_go():
    fast = {**MAIN, "profile": "fast", "sync_standbys": 0}
    master = FakeMaster(down=("pg2",))
    assert members.remove(master, fast, "pg3")["result"] is True


def test_a_member_patroni_no_longer_lists_is_nothing_to_do():
    master = FakeMaster()
    del master.state["pg3"]
    steps = members.remove(master, MAIN, "pg3")
    assert steps["result"] is True and "nothing to do" in steps["comment"] and master.calls == []


def test_a_dead_host_is_waited_out_and_said():
    master = FakeMaster(stop_fails=True)
    steps = members.remove(master, MAIN, "pg3")
    assert steps["result"] is True and steps["patroni"].startswith("not stopped (pg3 did not answer)")
    assert "before the host comes back" in steps["patroni"]


def test_a_key_that_never_expires_is_an_error_naming_it():
    with pytest.raises(members.MembersError, match="Patroni still lists it in cluster main"):
        members.remove(FakeMaster(stuck=True), MAIN, "pg3")
