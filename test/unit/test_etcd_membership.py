"""etcd membership on a host: the ``pgcluster.etcd_joined`` state (new cluster, join of the running
one, a host whose identity is lost, a host that cannot tell yet) against a fake etcd, and the
execution module's reading of etcdctl's member list (recorded from the lab's etcd 3.4), and the
restart of a running etcd one host at a time (``pgcluster.etcd_restarted``)."""

from __future__ import annotations

import json

import pytest
from pgctest import REPO, load_module

PEERS = {"pg1": "https://198.18.0.11:2380", "pg2": "https://198.18.0.12:2380", "app1": "https://198.18.0.30:2380"}
ENDPOINTS = ["198.18.0.11:2379", "198.18.0.12:2379", "198.18.0.30:2379"]
TLS = {"ca": "/ca.crt", "cert": "/host.crt", "key": "/host.key"}


def member(name, url, started=True, mid="1"):
    return {"id": mid, "name": name, "peer_urls": [url], "started": started}


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


def test_the_founders_of_a_new_cluster_are_named_before_they_start(joined):
    """A cluster being founded lists every founder by name (from the initial cluster) before any
    started: this host is one of them, not a lost member."""
    founders = [member(h, u, started=False, mid=h) for h, u in PEERS.items()]
    ret, env = joined(FakeEtcd(members=founders))
    assert ret["result"] is True and 'ETCD_INITIAL_CLUSTER_STATE="new"' in env
    # The other two started meanwhile (a quorum): this one still starts as a founder.
    founders[0]["started"] = founders[1]["started"] = True
    etcd = FakeEtcd(members=founders)
    ret, env = joined(etcd)
    assert 'ETCD_INITIAL_CLUSTER_STATE="new"' in env and not [c for c in etcd.calls if c[0] == "add"]


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
    assert [m["started"] for m in found] == [bool(r.get("clientURLs")) for r in raw]
    # recorded right after a member add of app1: the new member has no name yet
    assert [(m["name"], m["started"]) for m in found][0] == ("", False)
    assert found[0]["peer_urls"] == ["https://198.18.0.30:2380"] and found[0]["id"] == "f24862f866e28d1"


class FakeHost:
    """systemd and etcdctl on a host whose etcd started AGE seconds ago; the lock's script answers
    LOCK (its output lines), the others' health answers HEALTHY."""

    def __init__(self, age, lock=("pgcluster-locked", "100.5", "101.75", "pgcluster-restarted"), healthy=True):
        self.age, self.lock, self.healthy, self.calls = age, lock, healthy, []

    def show(self, cmd, **kw):
        started = (etcd_state.time.monotonic() - self.age) * 1e6
        return f"MainPID=308\nExecMainStartTimestampMonotonic={int(started)}\n"

    def run_all(self, cmd, **kw):
        self.calls.append(cmd[cmd.index("--endpoints") + 1 :])
        if "lock" in cmd:
            return {"retcode": 0, "stdout": "\n".join(self.lock), "stderr": ""}
        return {"retcode": 0, "stdout": "is healthy" if self.healthy else "", "stderr": ""}

    def restart(self, service):
        self.calls.append(["service.restart", service])
        return True


@pytest.fixture
def restarted(tmp_path):
    def run(host, test=False, file_age=10.0):
        conf = tmp_path / "etcd"
        conf.write_text("ETCD_ELECTION_TIMEOUT=1200\n")
        when = etcd_state.time.time() - file_age
        etcd_state.os.utime(conf, (when, when))
        salt = {"cmd.run": host.show, "cmd.run_all": host.run_all, "service.restart": host.restart}
        mod = load_module("states", "pgcluster", opts={"test": test}, salt=salt)
        return mod.etcd_restarted("pg1", "etcd", ENDPOINTS, "198.18.0.11:2379", TLS, [str(conf)], timeout=5)

    return run


def test_an_etcd_started_after_its_configuration_is_not_restarted(restarted):
    host = FakeHost(age=5)
    ret = restarted(host, file_age=10)
    assert ret["result"] is True and ret["changes"] == {} and host.calls == []


def test_a_changed_configuration_restarts_under_the_lock_through_the_other_hosts(restarted):
    host = FakeHost(age=60)
    ret = restarted(host)
    assert ret["result"] is True and ret["changes"]["restarted"]["from"] == 100.5
    assert "down 1.2 s" in ret["comment"]
    lock = host.calls[0]
    assert lock[0] == "https://198.18.0.12:2379,https://198.18.0.30:2379"  # never through itself
    assert lock[lock.index("lock") + 1] == "pgcluster-etcd-restart" and "systemctl restart etcd" in lock[-1]


def test_no_restart_while_another_etcd_host_is_unhealthy(restarted):
    ret = restarted(FakeHost(age=60, lock=("pgcluster-locked", "pgcluster-others-unhealthy")))
    assert ret["result"] is False and "could cost the quorum" in ret["comment"] and ret["changes"] == {}


def test_with_no_healthy_other_host_there_is_no_quorum_to_keep(restarted):
    host = FakeHost(age=60, lock=(), healthy=False)
    ret = restarted(host)
    assert ret["result"] is True and ["service.restart", "etcd"] in host.calls
    assert ret["changes"]["restarted"].startswith("directly")


def test_a_lock_that_cannot_be_had_with_healthy_others_is_an_error(restarted):
    host = FakeHost(age=60, lock=(), healthy=True)
    ret = restarted(host)
    assert ret["result"] is False and ["service.restart", "etcd"] not in host.calls


def test_test_mode_restarts_nothing(restarted):
    host = FakeHost(age=60)
    ret = restarted(host, test=True)
    assert ret["result"] is None and host.calls == []


@pytest.mark.parametrize("service", ["**********", "etcd *", ""])
def test_retiring_etcd_stops_one_unit_by_its_plain_name(service):
    """A glob (Salt 3008 masks pillar values read through pillar.get as '**********') would stop
    every unit of the host: refused before anything is stopped."""
    stopped = []
    mod = load_module("modules", "pgcluster", salt={"service.stop": stopped.append, "service.disable": stopped.append})
    with pytest.raises(mod.CommandExecutionError, match="not a systemd unit name"):
        mod.etcd_retire("/var/lib/etcd/main", service)
    assert stopped == []
