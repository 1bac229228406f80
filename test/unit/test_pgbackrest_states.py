"""_states/pgbackrest.py: what it waits for and what it gives up on."""

from __future__ import annotations

import pytest
from pgctest import load_module
from salt.exceptions import CommandExecutionError

# Seen in the lab: stanza-create on the backup host while a member's archive-push held the lock.
LOCKED = "pgbackrest stanza-create: [050] unable to acquire lock on file '/tmp/pgbackrest/main-archive.lock'"


def error(message: str, code: int) -> CommandExecutionError:
    exc = CommandExecutionError(message)
    exc.code = code
    return exc


def states(answers: list, monkeypatch):
    """The state module with pgbackrest.stanza_create answering (or raising) from ANSWERS in turn."""
    calls: list[str] = []

    def stanza_create(name):
        calls.append(name)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    salt = {"pgbackrest.info": lambda name: {"exists": False}, "pgbackrest.stanza_create": stanza_create}
    mod = load_module("states", "pgbackrest", salt=salt, opts={"test": False})
    monkeypatch.setattr(mod.time, "sleep", lambda s: None)
    return mod, calls


def test_a_held_archive_lock_is_waited_for_then_the_stanza_is_created(monkeypatch):
    answers = [error(LOCKED, 50), error(LOCKED, 50), "INFO: stanza-create command end: completed"]
    mod, calls = states(answers, monkeypatch)
    ret = mod.stanza_present("main", timeout=60)
    assert ret["result"] is True, ret
    assert ret["changes"] == {"stanza": "created"}
    assert len(calls) == 3


@pytest.mark.parametrize("code", [28, 103])  # a wrong passphrase, no valid repository: not "not yet"
def test_an_error_that_will_not_pass_fails_at_once(code, monkeypatch):
    mod, calls = states([error(f"pgbackrest stanza-create: [{code:03}] no", code)], monkeypatch)
    ret = mod.stanza_present("main", timeout=60)
    assert ret["result"] is False and f"[{code:03}]" in ret["comment"]
    assert len(calls) == 1


def test_a_standby_cluster_of_a_migration_is_not_checked_and_not_waited_for(monkeypatch):
    """After migrate.start (physical) the cluster has no primary: pgbackrest check would fail
    after its whole timeout; the state says why it does not check, at once."""
    checks = []
    salt = {"pgbackrest.check": lambda name, timeout: checks.append(name),
            "pgcluster.standby_cluster": lambda c: {"source": "legacy", "standby_leader": "pg1"}}  # fmt: skip
    mod = load_module("states", "pgbackrest", salt=salt, opts={"test": False})
    ret = mod.checked("main", cluster="main")
    assert ret["result"] is True and ret["changes"] == {} and checks == []
    assert "main is a standby cluster of legacy" in ret["comment"]
    # Not a standby cluster: checked as always.
    salt["pgcluster.standby_cluster"] = lambda c: {}
    assert mod.checked("main", cluster="main")["result"] is True and checks == ["main"]
