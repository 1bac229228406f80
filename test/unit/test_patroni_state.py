"""_states/patroni.py: only differing keys are patched; test=True changes nothing."""

from __future__ import annotations

import json

import pytest
from pgctest import FIXTURES, load_module

CONFIG = json.loads(json.loads((FIXTURES / "patroni" / "config.json").read_text())["body"])


@pytest.fixture
def state():
    calls = []
    salt = {
        "patroni.config_get": lambda **k: CONFIG,
        "patroni.config_patch": lambda patch, **k: calls.append(patch) or CONFIG,
        "patroni.leader": lambda **k: "pg2",
        "patroni.switchover": lambda **k: calls.append(("switchover", k)),
    }
    mod = load_module("states", "patroni", salt=salt, opts={"test": False})
    mod.calls = calls
    return mod


def test_diff_keeps_only_what_differs():
    diff = load_module("states", "patroni").config_diff
    assert diff(CONFIG, {"ttl": 20, "postgresql": {"parameters": {"max_connections": "100"}}}) is None
    assert diff(CONFIG, {"ttl": 30, "loop_wait": 5}) == {"ttl": 30}
    assert diff(CONFIG, {"postgresql": {"parameters": {"work_mem": "8MB", "wal_level": "replica"}}}) == {
        "postgresql": {"parameters": {"work_mem": "8MB"}}
    }
    assert diff(CONFIG, {"failsafe_mode": False}) == {"failsafe_mode": False}
    assert diff(CONFIG, {"nonexistent": None}) is None  # deleting an absent key is no change
    assert diff(CONFIG, {"ttl": None}) == {"ttl": None}


def test_dynamic_config_noop(state):
    ret = state.dynamic_config("c", {"ttl": 20})
    assert ret["result"] is True and ret["changes"] == {} and state.calls == []


def test_dynamic_config_patches_only_the_difference(state):
    ret = state.dynamic_config("c", {"ttl": 30, "loop_wait": 5})
    assert ret["result"] is True and ret["changes"] == {"patch": {"ttl": 30}}
    assert state.calls == [{"ttl": 30}]


def test_dynamic_config_reads_again_after_another_member_patched_it_first(state, monkeypatch):
    """Every member runs the same highstate: a PATCH between our read and our write is HTTP 409."""
    monkeypatch.setattr(state.time, "sleep", lambda s: None)
    seen = [CONFIG, dict(CONFIG, ttl=30)]

    def conflict(patch, **k):
        raise state.CommandExecutionError("Patroni REST API PATCH https://pg1:8008/config: HTTP 409: Conflict")

    state.__salt__.update({"patroni.config_get": lambda **k: seen.pop(0), "patroni.config_patch": conflict})
    ret = state.dynamic_config("c", {"ttl": 30})
    assert ret["result"] is True and ret["changes"] == {} and "already as wanted" in ret["comment"]
    state.__salt__["patroni.config_get"] = lambda **k: CONFIG  # a conflict every time: the error in the end
    ret = state.dynamic_config("c", {"ttl": 30})
    assert ret["result"] is False and "HTTP 409" in ret["comment"] and ret["changes"] == {}


def test_dynamic_config_test_mode_changes_nothing(state):
    state.__opts__["test"] = True
    ret = state.dynamic_config("c", {"ttl": 30})
    assert ret["result"] is None and ret["changes"] == {"patch": {"ttl": 30}}
    assert state.calls == []


def test_leader_is_noop_when_already_leading(state):
    ret = state.leader("pg2")
    assert ret["result"] is True and ret["changes"] == {} and state.calls == []


def test_leader_test_mode_reports_the_switchover(state):
    state.__opts__["test"] = True
    ret = state.leader("pg1")
    assert ret["result"] is None and ret["changes"] == {"leader": {"old": "pg2", "new": "pg1"}}
    assert state.calls == []
