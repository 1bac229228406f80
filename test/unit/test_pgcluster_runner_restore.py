"""The restore runner's refusals that need no lab: the confirmation and the target."""

from __future__ import annotations

import datetime

import pytest
from pgctest import load_module

MODEL = {"clusters": {"main": {"members": ["pg1", "pg2", "pg3"], "backup": "backup"}, "nobackup": {"members": ["pg1"]}}}


@pytest.fixture
def runner(monkeypatch):
    mod = load_module("runners", "pgcluster")
    mod.__context__ = {}
    monkeypatch.setattr(mod, "_model", lambda minion=None: MODEL)

    def no_minion_call(*args, **kwargs):
        raise AssertionError(f"a minion was called: {args}")

    monkeypatch.setattr(mod, "_call", no_minion_call)
    return mod


@pytest.mark.parametrize(
    "cluster, kwargs, message",
    [
        ("main", {"target": "latest"}, "replaces the data of every member (pg1, pg2, pg3): nothing done; "
                                       "run again with confirm=True"),
        ("main", {"target": "latest", "confirm": "yes"}, "run again with confirm=True"),
        ("main", {"target": "yesterday", "confirm": True}, "restore target 'yesterday': give 'latest' or a time"),
        ("main", {"target": "2026-11-26T01:40:00", "confirm": True}, "give a UTC offset"),
        ("main", {"target": "2999-01-01T00:00:00+00:00", "confirm": True}, "is in the future"),
        ("nobackup", {"confirm": True}, "cluster nobackup has no backup host"),
        ("nope", {"confirm": True}, "unknown cluster 'nope' (clusters: main, nobackup)"),
    ],
)  # fmt: skip
def test_refusals_call_no_minion_and_exit_non_zero(runner, cluster, kwargs, message):
    ret = runner.restore(cluster, **kwargs)
    assert message in ret["error"] and ret["retcode"] == 1
    assert runner.__context__["retcode"] == 1


def test_a_target_is_taken_in_utc_whatever_its_offset(runner):
    when = runner._restore_target("2025-11-26T03:40:00.5+02:00")
    assert when == datetime.datetime(2025, 11, 26, 1, 40, 0, 500000, tzinfo=datetime.UTC)
    parsed = datetime.datetime(2025, 11, 26, 1, 40, tzinfo=datetime.timezone(datetime.timedelta(hours=-5)))
    assert runner._restore_target(parsed).hour == 6  # salt-run's YAML may hand over a datetime
    assert runner._restore_target("latest") is None
