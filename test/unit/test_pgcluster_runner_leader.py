"""The runner's leader lookup against responses recorded from the lab's real Patroni 4.1.5."""

from __future__ import annotations

import pytest
import requests
from pgctest import load_module, recorded

MODEL = {
    "hosts": {"pg1": "198.18.0.11", "pg2": "198.18.0.12", "pg3": "198.18.0.13"},
    "clusters": {"main": {"members": ["pg1", "pg2", "pg3"]}},
}


@pytest.fixture
def runner(monkeypatch):
    mod = load_module("runners", "pgcluster")
    mod.answers = {}
    mod.asked = []

    def get(url, timeout=None):
        mod.asked.append((url, timeout))
        name = mod.answers.get(url.split("//", 1)[1])
        if name is None:
            raise requests.ConnectionError("refused")
        return recorded(name)

    monkeypatch.setattr(mod.requests, "get", get)
    return mod


def test_the_leader_is_the_one_patroni_names_and_that_accepts_writes(runner):
    runner.answers = {"198.18.0.11:8008/cluster": "cluster", "198.18.0.12:8008/primary": "primary_on_leader"}
    assert runner._leader_once(MODEL, MODEL["clusters"]["main"]) == "pg2"


def test_a_leader_whose_postgresql_still_promotes_is_not_the_leader_yet(runner):
    # Recorded during a switchover: /primary was 200 (Patroni held the lock), PostgreSQL in recovery.
    runner.answers = {"198.18.0.11:8008/cluster": "cluster", "198.18.0.12:8008/primary": "primary_while_promoting"}
    assert runner._leader_once(MODEL, MODEL["clusters"]["main"]) is None


def test_a_member_that_does_not_answer_is_skipped(runner):
    runner.answers = {"198.18.0.13:8008/cluster": "cluster", "198.18.0.12:8008/primary": "primary_on_leader"}
    assert runner._leader_once(MODEL, MODEL["clusters"]["main"]) == "pg2"
    runner.answers["198.18.0.12:8008/primary"] = "primary_on_replica"
    assert runner._leader_once(MODEL, MODEL["clusters"]["main"]) is None


def test_the_restore_looks_for_the_leader_patiently(runner, monkeypatch):
    monkeypatch.setattr(runner.time, "sleep", lambda s: None)
    runner.answers = {"198.18.0.11:8008/cluster": "cluster", "198.18.0.12:8008/primary": "primary_on_leader"}
    assert runner._find_leader(MODEL, MODEL["clusters"]["main"]) == "pg2"
    assert {t for _, t in runner.asked} == {runner.PATIENT_HTTP_TIMEOUT}
    assert runner.PATIENT_HTTP_TIMEOUT[0] >= 3  # a loaded member's SYN-ACK may take more than the routing's 0.3 s
