"""PgBouncer routing, the callback relay's checks, and the runner's refusal of forged events."""

from __future__ import annotations

import importlib.util
import json

import pytest
from pgctest import REPO, load_module

pgbouncer = load_module("modules", "pgbouncer")


def load_relay():
    spec = importlib.util.spec_from_file_location("relay", REPO / "salt/patroni/files/pgcluster-events.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_routing_sends_every_database_to_the_leader():
    text = pgbouncer.routing_text("main", "198.18.0.12", 5432, ["app", "billing"])
    assert "[databases]" in text
    assert "app = host=198.18.0.12 port=5432 dbname=app" in text
    assert "billing = host=198.18.0.12 port=5432 dbname=billing" in text
    assert "_ro" not in text


def test_read_only_entries_go_to_the_replicas():
    text = pgbouncer.routing_text("main", "198.18.0.12", 5432, ["app"], replicas=["198.18.0.11", "198.18.0.13"])
    assert "app_ro = host=198.18.0.11,198.18.0.13 port=5432 dbname=app" in text


@pytest.mark.parametrize(
    "msg, problem",
    [
        ({"action": "on_role_change", "role": "primary", "cluster": "other"}, "is not this host's cluster"),
        ({"action": "rm -rf", "role": "primary", "cluster": "main"}, "unknown action"),
        ({"action": "on_start", "role": "root", "cluster": "main"}, "unknown role"),
        (["on_start"], "not a JSON object"),
    ],
)
def test_relay_refuses_malformed_callbacks(msg, problem):
    relay = load_relay()
    with pytest.raises(ValueError, match=problem):
        relay.parse(json.dumps(msg).encode(), "main")


def test_relay_accepts_patroni_3_and_4_role_names():
    relay = load_relay()
    for role in ("primary", "master"):
        ev = relay.parse(json.dumps({"action": "on_role_change", "role": role, "cluster": "main"}).encode(), "main")
        assert ev == {"action": "on_role_change", "role": "primary", "cluster": "main"}
    for role in ("replica", "demoted", "standby_leader"):
        assert relay.parse(json.dumps({"action": "on_stop", "role": role, "cluster": "main"}).encode(), "main")


@pytest.fixture
def runner(monkeypatch):
    mod = load_module("runners", "pgcluster")
    fired, repointed = [], []
    model = {
        "hosts": {"pg1": "198.18.0.11", "pg2": "198.18.0.12", "app1": "198.18.0.30"},
        "clusters": {"main": {"members": ["pg1", "pg2"], "pgbouncer": ["app1"], "databases": {"app": {}}}},
    }
    monkeypatch.setattr(mod, "_model", lambda minion=None: model if minion in ("pg1", "pg2", None) else {})
    monkeypatch.setattr(mod, "_fire", lambda tag, data: fired.append((tag, data)))
    monkeypatch.setattr(mod, "_wait_leader", lambda *a, **k: "pg2")
    monkeypatch.setattr(mod, "_repoint", lambda m, name, leader: repointed.append(leader) or {
        "seconds": 0.1, "changed": ["app1"], "failed": {}})  # fmt: skip
    mod.fired, mod.repointed = fired, repointed
    return mod


@pytest.mark.parametrize(
    "sender, cluster",
    [("app1", "main"), ("pg1", "other"), ("pg1", None), (None, "main"), (["pg1"], "main"), ("pg1", {"x": 1})],
)
def test_forged_or_malformed_events_change_nothing(runner, sender, cluster):
    ret = runner.follow_leader(sender=sender, cluster=cluster, event_tag="pgcluster/patroni/role_change")
    assert ret["result"] is False and "is not a member of cluster" in ret["comment"]
    assert runner.repointed == []
    assert [t for t, _ in runner.fired] == ["rejected"]


def test_member_event_repoints_to_the_leader_patroni_reports(runner):
    ret = runner.follow_leader(sender="pg1", cluster="main", event_tag="pgcluster/patroni/role_change")
    assert ret["result"] is True and ret["leader"] == "pg2"  # from Patroni, not from the event
    assert runner.repointed == ["pg2"]
    assert runner.fired[-1][0] == "repointed" and "seconds_total" in runner.fired[-1][1]


def test_safety_net_resumes_paused_pgbouncers_unless_a_switchover_runs(runner, monkeypatch):
    calls = []
    monkeypatch.setattr(runner, "_leader_once", lambda model, c: "pg2")
    monkeypatch.setattr(runner, "_repoint", lambda m, name, leader, resume_paused=False: calls.append(
        resume_paused) or {"seconds": 0.1, "changed": [], "resumed": [], "failed": {}})  # fmt: skip
    running = {"main": False}
    monkeypatch.setattr(runner, "_switchover_running", lambda name, limit: running[name])
    runner.reconcile()
    running["main"] = True
    runner.reconcile()
    assert calls == [True, False]
