"""_modules/patroni.py against responses recorded from the lab's real Patroni 4.1.5."""

from __future__ import annotations

import json
import re

import pytest
import requests
from pgctest import load_module, patroni_replay, recorded

API = "http://198.18.0.11:8008"


class FakeAPI:
    """Answers requests from recorded responses; remembers what was sent."""

    def __init__(self, routes: dict[tuple[str, str], str]):
        self.routes = routes
        self.sent: list[dict] = []

    def __call__(self, method, url, json=None, auth=None, timeout=None, verify=None):
        path = url.split(":8008", 1)[1]
        self.sent.append({"method": method, "url": url, "json": json, "auth": auth})
        name = self.routes.get((method, path))
        if name is None:
            raise AssertionError(f"unexpected {method} {path}")
        if name == "refused":
            raise requests.exceptions.ConnectionError("refused")
        return recorded(name)


@pytest.fixture
def patroni(monkeypatch):
    mod = load_module("modules", "patroni")

    def use(routes):
        fake = FakeAPI(routes)
        monkeypatch.setattr(mod.requests, "request", fake)
        return fake

    mod.use = use
    mod.conn = {"url": API, "username": "patroni", "password": "pw"}
    return mod


def test_cluster_is_normalized(patroni):
    patroni.use({("GET", "/cluster"): "cluster"})
    c = patroni.cluster(**patroni.conn)
    assert c["scope"] == "main" and c["leader"] == "pg2"
    by_name = {m["name"]: m for m in c["members"]}
    assert by_name["pg2"]["role"] == "leader" and by_name["pg2"]["lag"] == 0
    assert by_name["pg1"]["role"] == "quorum_standby" and by_name["pg1"]["state"] == "streaming"
    assert all(isinstance(m["lag"], int) for m in c["members"])
    assert by_name["pg3"]["api_url"] == "http://198.18.0.13:8008/patroni"


def test_leader_is_found_through_every_member_this_node_knows():
    mod = load_module("modules", "patroni")  # real HTTP, to servers replaying the lab's answers
    leader = {"/cluster": "cluster", "/primary": "primary_on_leader"}
    replica = {"/cluster": "cluster", "/primary": "primary_on_replica"}
    with patroni_replay({"pg1": replica, "pg2": leader, "pg3": replica}) as urls:
        assert mod.leader(url=urls["pg1"]) == "pg2"
    promoting = {"/cluster": "cluster", "/primary": "primary_while_promoting"}
    with patroni_replay({"pg1": replica, "pg2": promoting, "pg3": replica}) as urls:
        assert mod.leader(url=urls["pg3"]) is None


def test_is_leader(patroni):
    patroni.use({("GET", "/primary"): "primary_on_leader"})
    assert patroni.is_leader(**patroni.conn) is True
    patroni.use({("GET", "/primary"): "primary_on_replica"})
    assert patroni.is_leader(**patroni.conn) is False


def test_a_leader_still_promoting_does_not_accept_writes(patroni):
    # Recorded during a switchover: Patroni held the lock (200) while PostgreSQL was in recovery.
    patroni.use({("GET", "/primary"): "primary_while_promoting"})
    assert patroni.is_leader(**patroni.conn) is False


def test_node_role_is_primary_for_3x_and_4x(patroni, monkeypatch):
    patroni.use({("GET", "/patroni"): "patroni_leader"})
    assert patroni.node(**patroni.conn)["role"] == "primary"
    old = recorded("patroni_leader")
    old._content = json.dumps(dict(json.loads(old.text), role="master")).encode()  # Patroni 3.x wording
    monkeypatch.setattr(patroni.requests, "request", lambda *a, **k: old)
    assert patroni.node(**patroni.conn)["role"] == "primary"


def test_switchover_sends_leader_and_candidate_with_auth(patroni):
    fake = patroni.use({("GET", "/cluster"): "cluster", ("POST", "/switchover"): "switchover_ok"})
    res = patroni.switchover(candidate="pg1", **patroni.conn)
    assert res == {"from": "pg2", "to": "pg1", "message": 'Successfully switched over to "pg1"'}
    post = fake.sent[-1]
    assert post["json"] == {"leader": "pg2", "candidate": "pg1"} and post["auth"] == ("patroni", "pw")
    assert fake.sent[0]["auth"] is None  # GETs are never authenticated


@pytest.mark.parametrize(
    "candidate, message",
    [("pg9", "no member 'pg9' in cluster 'main' (members: pg1, pg2, pg3)"),
     ("pg2", "'pg2' is already the leader of cluster 'main'")],
)  # fmt: skip
def test_switchover_bad_candidate_is_refused_before_any_write(patroni, candidate, message):
    fake = patroni.use({("GET", "/cluster"): "cluster"})
    with pytest.raises(patroni.CommandExecutionError, match=re.escape(message)):
        patroni.switchover(candidate=candidate, **patroni.conn)
    assert [s["method"] for s in fake.sent] == ["GET"]


def test_patroni_refusal_is_a_clear_error(patroni):
    patroni.use({("GET", "/cluster"): "cluster", ("POST", "/switchover"): "switchover_wrong_leader"})
    with pytest.raises(patroni.CommandExecutionError, match="POST .*/switchover: HTTP 412: leader name does not match"):
        patroni.switchover(**patroni.conn)


def test_wrong_credentials_say_so(patroni):
    patroni.use({("GET", "/cluster"): "cluster", ("POST", "/switchover"): "switchover_no_auth"})
    with pytest.raises(patroni.CommandExecutionError, match="HTTP 401: authentication failed"):
        patroni.switchover(candidate="pg1", **patroni.conn)


def test_unreachable_patroni_is_an_error_not_a_traceback(patroni):
    patroni.use({("GET", "/cluster"): "refused"})
    with pytest.raises(patroni.CommandExecutionError, match=r"GET http://198.18.0.11:8008/cluster: cannot connect"):
        patroni.cluster(**patroni.conn)


def test_restart_pending_only_with_nothing_pending(patroni):
    patroni.use({("POST", "/restart"): "restart_pending_none"})
    assert patroni.restart(pending_only=True, **patroni.conn) == "no restart pending"
    with pytest.raises(patroni.CommandExecutionError, match="restart of this node failed"):
        patroni.restart(**patroni.conn)


def test_restart_of_a_member_goes_to_that_members_api(patroni):
    fake = patroni.use({("GET", "/cluster"): "cluster", ("POST", "/restart"): "restart_pending_none"})
    patroni.restart(member="pg3", pending_only=True, **patroni.conn)
    assert fake.sent[-1]["url"] == "http://198.18.0.13:8008/restart"
    assert fake.sent[-1]["json"] == {"restart_pending": True}


def test_reinitialize_refuses_the_leader(patroni):
    patroni.use({("GET", "/cluster"): "cluster"})
    with pytest.raises(patroni.CommandExecutionError, match="'pg2' is the leader"):
        patroni.reinitialize("pg2", **patroni.conn)


def test_config_get_and_patch(patroni):
    fake = patroni.use({("GET", "/config"): "config", ("PATCH", "/config"): "config"})
    assert patroni.config_get(**patroni.conn)["synchronous_mode"] == "quorum"
    patroni.pause(**patroni.conn)
    assert fake.sent[-1]["json"] == {"pause": True}
    patroni.resume(**patroni.conn)
    assert fake.sent[-1]["json"] == {"pause": None}
    with pytest.raises(patroni.CommandExecutionError, match="patch must be a dict"):
        patroni.config_patch("ttl=30", **patroni.conn)


def test_settings_come_from_the_local_config(patroni, tmp_path):
    conf = tmp_path / "config.yml"
    conf.write_text(
        "restapi:\n  connect_address: 198.18.0.12:8008\n  authentication: {username: patroni, password: s3}\n"
    )
    s = patroni._local_settings(str(conf))
    assert s == {"url": "http://198.18.0.12:8008", "username": "patroni", "password": "s3", "verify": True}
    conf.write_text("restapi:\n  connect_address: pg2:8008\n  certfile: /c.pem\n  cafile: /ca.pem\n")
    assert patroni._local_settings(str(conf))["url"] == "https://pg2:8008"
    assert patroni._local_settings(str(conf))["verify"] == "/ca.pem"
    with pytest.raises(patroni.CommandExecutionError, match="cannot read Patroni configuration"):
        patroni._local_settings(str(tmp_path / "missing.yml"))


def before_sync() -> requests.Response:
    """The recorded /cluster as Patroni 4.1.5 answers right after bootstrap (seen in the lab):
    both replicas stream while /sync names none, so they are plain replicas, not quorum standbys."""
    resp = recorded("cluster")
    body = json.loads(resp.text)
    for m in body["members"]:
        m["role"] = "replica" if m["role"] == "quorum_standby" else m["role"]
    resp._content = json.dumps(body).encode()
    return resp


def leader_waiting_for(*names: str) -> requests.Response:
    """The recorded GET /patroni of the leader, its PostgreSQL waiting at commit for NAMES only."""
    resp = recorded("patroni_leader")
    body = json.loads(resp.text)
    for r in body["replication"]:
        r["sync_state"] = "quorum" if r["application_name"] in names else "async"
    resp._content = json.dumps(body).encode()
    return resp


def answering(patroni, monkeypatch, answers: list, leader: list | None = None) -> list:
    """GET /cluster answered by ANSWERS in turn, GET /patroni (the leader's) by LEADER in turn
    (the last one again when they run out); returns the URLs asked, in order."""
    calls = []
    leader = leader or [recorded("patroni_leader")]

    def request(method, url, **kwargs):
        calls.append(url)
        queue = leader if url.endswith("/patroni") else answers
        return queue.pop(0) if len(queue) > 1 else queue[0]

    monkeypatch.setattr(patroni.requests, "request", request)
    monkeypatch.setattr(patroni.time, "sleep", lambda s: None)
    return calls


def test_wait_healthy_waits_for_synchronous_standbys_only_when_asked(patroni, monkeypatch):
    calls = answering(patroni, monkeypatch, [before_sync()])
    assert patroni.wait_healthy(2, timeout=5, **patroni.conn)["leader"] == "pg2"
    assert len(calls) == 1
    calls = answering(patroni, monkeypatch, [before_sync(), before_sync(), recorded("cluster")])
    assert patroni.wait_healthy(2, timeout=30, sync_standbys=1, **patroni.conn)["leader"] == "pg2"
    assert len(calls) == 4 and calls[-1] == "http://198.18.0.12:8008/patroni"  # then asks the leader itself


def test_wait_healthy_waits_until_the_leaders_postgresql_waits_for_the_standbys(patroni, monkeypatch):
    """/sync may name a standby before the leader's synchronous_standby_names does."""
    waiting = [leader_waiting_for(), leader_waiting_for(), leader_waiting_for("pg1", "pg3")]
    calls = answering(patroni, monkeypatch, [recorded("cluster")], leader=waiting)
    assert patroni.wait_healthy(2, timeout=30, sync_standbys=2, **patroni.conn)["leader"] == "pg2"
    assert len(calls) == 6
    answering(patroni, monkeypatch, [recorded("cluster")], leader=[leader_waiting_for("pg3")])
    with pytest.raises(patroni.PatroniError, match=r"2 synchronous wanted\): the leader's PostgreSQL sees pg1, pg3 "
                                                    "streaming, pg3 synchronous"):  # fmt: skip
        patroni.wait_healthy(2, timeout=0, sync_standbys=2, **patroni.conn)


def test_wait_healthy_for_a_member_waits_until_the_leaders_postgresql_sees_it_stream(patroni, monkeypatch):
    """Right after its restart the DCS still shows a member as streaming (a loop old)."""
    only_pg3 = leader_waiting_for("pg3")
    body = json.loads(only_pg3.text)
    body["replication"] = [r for r in body["replication"] if r["application_name"] == "pg3"]
    only_pg3._content = json.dumps(body).encode()
    calls = answering(patroni, monkeypatch, [recorded("cluster")], leader=[only_pg3, leader_waiting_for("pg1", "pg3")])
    assert patroni.wait_healthy(2, timeout=30, sync_standbys=1, member="pg1", **patroni.conn)["leader"] == "pg2"
    assert len([u for u in calls if u.endswith("/patroni")]) == 2
    answering(patroni, monkeypatch, [recorded("cluster")], leader=[only_pg3])
    with pytest.raises(patroni.PatroniError, match="sees pg3 streaming"):
        patroni.wait_healthy(2, timeout=0, member="pg1", **patroni.conn)


def test_wait_healthy_says_it_waited_for_synchronous_standbys(patroni, monkeypatch):
    answering(patroni, monkeypatch, [before_sync()])
    with pytest.raises(patroni.PatroniError, match=r"2 replicas, 1 synchronous wanted\): leader=pg2, pg1:replica"):
        patroni.wait_healthy(2, timeout=0, sync_standbys=1, **patroni.conn)
