"""Taking a member out (the pgcluster_members util) step by step against a fake master that plays
Patroni's and etcd's member lists: its refusals (nothing done), the order stop → key expired →
healthy for Patroni, and etcd stopped → membership removed for etcd."""

from __future__ import annotations

import pytest
from pgctest import load_module

members = load_module("utils", "pgcluster_members")
# pg3 already taken out of the model's members; Patroni still lists it.
MAIN = {"name": "main", "profile": "durable", "members": ["pg1", "pg2"], "etcd": ["pg1", "pg2", "pg3"],
        "sync_standbys": 1, "profile_settings": {"dcs": {"ttl": 0}}}  # fmt: skip
# pg3 replaced by app1 as etcd host (app1 joined etcd by highstate) and out of Patroni's members.
REPLACED = {**MAIN, "etcd": ["pg1", "pg2", "app1"]}


class FakeMaster:
    """pg1 leads pg2 and pg3 (all streaming unless DOWN). Stopping a member's Patroni makes its key
    expire after EXPIRES more looks at the member list (never when STUCK)."""

    def __init__(self, leader="pg1", down=(), stop_fails=False, expires=2, stuck=False, etcd=("pg1", "pg2", "pg3"),
                 unstarted=(), etcd_fails=False):  # fmt: skip
        self.leader, self.calls, self.stop_fails, self.expires, self.stuck = leader, [], stop_fails, expires, stuck
        self.etcd = [{"id": f"e{h}", "name": "" if h in unstarted else h, "host": h, "started": h not in unstarted}
                     for h in etcd]  # fmt: skip
        self.etcd_fails = etcd_fails
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

    def etcd_members(self, c):
        return [dict(m) for m in self.etcd]

    def etcd_retire(self, host, cluster):
        self.calls.append(("etcd_retire", host, cluster))
        return {"etcd": "stopped and disabled", "data_directory": "moved to /var/lib/etcd/main.removed-x"}

    def etcd_remove(self, c, member_id):
        self.calls.append(("etcd_remove", member_id))
        if self.etcd_fails:
            raise members.CommandExecutionError("etcdctl member remove: context deadline exceeded")
        self.etcd = [m for m in self.etcd if m["id"] != member_id]


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(members, "EXPIRY_MARGIN", 0.5)
    monkeypatch.setattr(members, "STREAMING_WAIT", 0.3)
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
        (MAIN, FakeMaster(down=("pg2",)), "without pg3, cluster main has 0 streaming replica(s) (none; pg2: stopped)"),
    ],
)
def test_refused_with_nothing_done(cluster, master, message):
    with pytest.raises(members.MembersError, match="nothing done") as err:
        members.remove(master, cluster, "pg3")
    assert message in str(err.value)
    assert master.calls == [] and "pg3" in master.state


class Reconnecting(FakeMaster):
    """pg2 is "running" (its walreceiver reconnecting) for the first LOOKS looks, then streams."""

    def __init__(self, looks):
        super().__init__()
        self.looks = looks
        self.state["pg2"]["state"] = "running"

    def members_state(self, c):
        self.looks -= 1
        if self.looks < 0:
            self.state["pg2"]["state"] = "streaming"
        return super().members_state(c)


def test_a_replica_that_streams_again_within_the_wait_does_not_refuse_the_removal():
    master = Reconnecting(looks=3)
    steps = members.remove(master, MAIN, "pg3")
    assert steps["result"] is True and master.calls[0] == ("stop_patroni", "pg3")


def test_a_replica_that_does_not_stream_again_refuses_it_after_the_wait_naming_its_state():
    master = Reconnecting(looks=10**9)
    with pytest.raises(members.MembersError, match=r"0 streaming replica\(s\) \(none; pg2: running\)"):
        members.remove(master, MAIN, "pg3")
    assert master.calls == [] and 10**9 - master.looks > 1


def test_a_replaced_etcd_host_leaves_patroni_then_etcd_stopped_before_its_removal():
    master = FakeMaster(etcd=("pg1", "pg2", "pg3", "app1"))
    steps = members.remove(master, REPLACED, "pg3")
    assert master.calls == [("stop_patroni", "pg3"), ("wait_healthy", "pg1", None), ("etcd_retire", "pg3", "main"),
                            ("etcd_remove", "epg3")]  # fmt: skip
    assert [m["name"] for m in master.etcd] == ["pg1", "pg2", "app1"]
    assert steps["etcd"].startswith("removed from etcd (id epg3); etcd stopped and disabled on pg3")
    assert "main.removed-" in steps["etcd"] and steps["result"] is True


def test_a_database_server_that_stays_only_leaves_etcd():
    stays = {**REPLACED, "members": ["pg1", "pg2", "pg3"]}
    master = FakeMaster(etcd=("pg1", "pg2", "pg3", "app1"))
    steps = members.remove(master, stays, "pg3")
    assert master.calls == [("etcd_retire", "pg3", "main"), ("etcd_remove", "epg3")]
    assert "patroni" not in steps and "data_directory" not in steps


def test_etcd_is_left_only_once_its_replacement_has_started():
    master = FakeMaster(etcd=("pg1", "pg2", "pg3", "app1"), unstarted=("app1",))
    with pytest.raises(members.MembersError, match=r"app1 of clusters:main:etcd is not a started etcd member yet: "
                                                   r"run highstate on it first.*nothing done"):  # fmt: skip
        members.remove(master, REPLACED, "pg3")
    assert master.calls == []


def test_a_failed_etcd_removal_says_to_run_it_again():
    master = FakeMaster(etcd=("pg1", "pg2", "pg3", "app1"), etcd_fails=True)
    with pytest.raises(members.MembersError, match="pg3: its etcd is stopped, but its removal from etcd failed"):
        members.remove(master, REPLACED, "pg3")


def test_an_unstarted_etcd_member_is_found_by_its_host():
    master = FakeMaster(etcd=("pg1", "pg2", "pg3", "app1"), unstarted=("pg3",))
    members.remove(master, REPLACED, "pg3")
    assert ("etcd_remove", "epg3") in master.calls


def test_an_asynchronous_profile_lets_the_last_replica_go():
    fast = {**MAIN, "profile": "fast", "sync_standbys": 0}
    master = FakeMaster(down=("pg2",))
    assert members.remove(master, fast, "pg3")["result"] is True


def test_a_member_patroni_no_longer_lists_is_nothing_to_do():
    master = FakeMaster()
    del master.state["pg3"]
    steps = members.remove(master, MAIN, "pg3")
    assert steps["result"] is True and "nothing to do" in steps["comment"] and master.calls == []
    assert "nor in its etcd" in steps["comment"]


def test_a_dead_host_is_waited_out_and_said():
    master = FakeMaster(stop_fails=True)
    steps = members.remove(master, MAIN, "pg3")
    assert steps["result"] is True and steps["patroni"].startswith("not stopped (pg3 did not answer)")
    assert "before the host comes back" in steps["patroni"]


def test_a_key_that_never_expires_is_an_error_naming_it():
    with pytest.raises(members.MembersError, match="Patroni still lists it in cluster main"):
        members.remove(FakeMaster(stuck=True), MAIN, "pg3")
