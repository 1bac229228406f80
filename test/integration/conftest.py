"""Integration tests run against the real multi-host lab (test/lab/lab)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from labtools import ensure_probe_table, failed_states, highstate, lab, wait_healthy


@pytest.fixture(scope="session")
def lab_up() -> Iterator[None]:
    """The lab, up for the whole session, taken down at the end (PGCLUSTER_KEEP_LAB=1 keeps it)."""
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (they run the lab)")
    lab("up")
    yield
    if os.environ.get("PGCLUSTER_KEEP_LAB") != "1":
        lab("down")


@pytest.fixture(scope="module")
def deployed(lab_up) -> None:
    """The cluster deployed by a highstate with no failed state, healthy, with the probe table
    (once per module; earlier modules may have left it so already)."""
    ret = highstate()
    failed = failed_states(ret)
    assert failed == {m: [] for m in ret}, failed
    wait_healthy(2, timeout=180)
    ensure_probe_table()
