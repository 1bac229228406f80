"""etcd membership on a host: the ``pgcluster.etcd_joined`` state (new cluster, join of the running
one, a host whose identity is lost, a host that cannot tell yet) against a fake etcd, and the
execution module's reading of etcdctl's member list (recorded from the lab's etcd 3.4)."""

from __future__ import annotations

import json

import pytest
from pgctest import REPO, load_module

PEERS = {"pg1": "https://198.18.0.11:2380", "pg2": "https://198.18.0.12:2380", "app1": "https://198.18.0.30:2380"}
ENDPOINTS = ["198.18.0.11:2379", "198.18.0.12:2379", "198.18.0.30:2379"]
TLS = {"ca": "/ca.crt", "cert": "/host.crt", "key": "/host.key"}


def member(name, url, started=True, mid="1"):
    return {"id": mid, "name": name if started else "", "peer_urls": [url], "started": started}


class FakeEtcd:
    """The other hosts' etcd: MEMBERS when it answers (None: it does not), SILENT endpoints that
    answer no TCP connection."""

    def __init__(self, members=None, silent=()):
        self.members, self.silent, self.calls = members, set(silent), []

    def list(self, endpoints, tls):
        self.calls.append(("list", tuple(endpoints)))
        if self.members is None:
            raise etcd_state.CommandExecutionError("etcdctl member list: context deadline exceeded")
        return [dict(m) for m in self.members]

    def add(self, name, peer_url, endpoints, tls):
        self.calls.append(("add", name, peer_url))
        self.members.append(member("", peer_url, started=False, mid="9"))
        return [dict(m) for m in self.members]


etcd_state = load_module("states", "pgcluster")


@pytest.fixture
def joined(tmp_path, monkeypatch):
    def run(etcd, test=False, data=False):
        data_dir = tmp_path / "main"
        data_dir.mkdir(exist_ok=True)
        if data:
            (data_dir / "member").mkdir()
        salt = {"pgcluster.etcd_members": etcd.list, "pgcluster.etcd_member_add": etcd.add}
        mod = load_module("states", "pgcluster", opts={"test": test}, salt=salt)
        monkeypatch.setattr(mod, "_answers", lambda e: e not in etcd.silent)
        monkeypatch.setattr(mod.time, "sleep", lambda s: None)
        env = tmp_path / "etcd-initial"
        ret = mod.etcd_joined("app1", PEERS, ENDPOINTS, "pgcluster-main", str(data_dir), str(env), TLS, timeout=0)
        return ret, (env.read_text() if env.exists() else None)

    return run


def test_a_member_with_its_data_is_left_alone(joined):
    etcd = FakeEtcd(members=[member("pg1", PEERS["pg1"])])
    ret, env = joined(etcd, data=True)
    assert ret["result"] is True and ret["changes"] == {} and env is None and etcd.calls == []


def test_with_no_cluster_running_the_hosts_found_a_new_one(joined):
    ret, env = joined(FakeEtcd(members=None))
    assert ret["result"] is True and "new cluster" in ret["changes"]["env_file"]
    assert 'ETCD_INITIAL_CLUSTER_STATE="new"' in env and 'ETCD_INITIAL_CLUSTER_TOKEN="pgcluster-main"' in env
    assert f'ETCD_INITIAL_CLUSTER="pg1={PEERS["pg1"]},pg2={PEERS["pg2"]},app1={PEERS["app1"]}"' in env


def test_a_host_new_to_a_running_cluster_is_added_then_starts_into_it(joined):
    pg3 = "https://198.18.0.13:2380"
    etcd = FakeEtcd(members=[member("pg1", PEERS["pg1"]), member("pg2", PEERS["pg2"]), member("pg3", pg3)])
    ret, env = joined(etcd)
    assert ("add", "app1", PEERS["app1"]) in etcd.calls
    assert ("list", ("198.18.0.11:2379", "198.18.0.12:2379")) in etcd.calls  # never its own endpoint
    assert ret["result"] is True and ret["changes"]["member"].startswith("added to the running etcd cluster")
    assert 'ETCD_INITIAL_CLUSTER_STATE="existing"' in env
    assert f'ETCD_INITIAL_CLUSTER="pg1={PEERS["pg1"]},pg2={PEERS["pg2"]},pg3={pg3},app1={PEERS["app1"]}"' in env


def test_a_host_added_before_but_never_started_is_not_added_twice(joined):
    etcd = FakeEtcd(members=[member("pg1", PEERS["pg1"]), member("pg2", PEERS["pg2"]),
                             member("", PEERS["app1"], started=False)])  # fmt: skip
    ret, env = joined(etcd)
    assert not [c for c in etcd.calls if c[0] == "add"] and 'STATE="existing"' in env and ret["result"] is True


def test_a_started_member_that_lost_its_data_is_refused(joined):
    etcd = FakeEtcd(members=[member("pg1", PEERS["pg1"]), member("app1", PEERS["app1"], mid="8e9e")])
    ret, env = joined(etcd)
    assert ret["result"] is False and "etcdctl member remove 8e9e" in ret["comment"] and env is None


def test_a_silent_host_is_not_taken_for_a_missing_cluster(joined):
    """A firewall that does not admit the host yet drops its packets: it must not found a cluster
    of its own."""
    ret, env = joined(FakeEtcd(members=None, silent=("198.18.0.11:2379",)))
    assert ret["result"] is False and "198.18.0.11:2379 do not answer" in ret["comment"] and env is None


def test_test_mode_adds_nothing_and_writes_nothing(joined):
    etcd = FakeEtcd(members=[member("pg1", PEERS["pg1"]), member("pg2", PEERS["pg2"])])
    ret, env = joined(etcd, test=True)
    assert ret["result"] is None and env is None and not [c for c in etcd.calls if c[0] == "add"]


def test_the_module_reads_etcdctl_member_list():
    recorded = (REPO / "test/fixtures/etcd/member-list.json").read_text()
    mod = load_module("modules", "pgcluster", salt={
        "cmd.run_all": lambda cmd, **kw: {"retcode": 0, "stdout": recorded, "stderr": ""}})  # fmt: skip
    found = mod.etcd_members(endpoints=ENDPOINTS, tls=TLS)
    raw = json.loads(recorded)["members"]
    assert [m["name"] for m in found] == [m.get("name", "") for m in raw]
    assert all(m["id"] == format(r["ID"], "x") for m, r in zip(found, raw, strict=True))
    assert [m["started"] for m in found] == [bool(r.get("name")) for r in raw]
    # recorded right after a member add of app1: the new member has no name yet
    assert [(m["name"], m["started"]) for m in found][0] == ("", False)
    assert found[0]["peer_urls"] == ["https://198.18.0.30:2380"] and found[0]["id"] == "f24862f866e28d1"
