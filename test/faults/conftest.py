"""The fault matrix runs against the real lab (test/lab/lab), deployed once for the session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from faulttools import RESULTS, table
from labtools import ensure_probe_table, failed_states, highstate, lab, wait_healthy


@pytest.fixture(scope="session")
def deployed() -> Iterator[None]:
    """The lab up and the default cluster deployed by a highstate with no failed state; taken
    down at the end (PGCLUSTER_KEEP_LAB=1 keeps it)."""
    if os.geteuid() != 0:
        pytest.fail("the fault matrix needs root (it runs the lab)")
    lab("up")
    ret = highstate()
    assert failed_states(ret) == {m: [] for m in ret}, failed_states(ret)
    wait_healthy(2, timeout=300)
    ensure_probe_table()
    yield
    if os.environ.get("PGCLUSTER_KEEP_LAB") != "1":
        lab("down")


def pytest_terminal_summary(terminalreporter) -> None:
    """The matrix as a table per profile, whatever passed or failed."""
    for profile, results in RESULTS.items():
        terminalreporter.section(f"fault matrix, profile {profile}")
        for line in table(profile, results):
            terminalreporter.write_line(line)
