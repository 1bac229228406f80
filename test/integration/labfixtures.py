"""The lab fixtures every lab suite shares (test/integration, test/faults): the lab up for the
session, and the cluster deployed by a highstate once per module."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from labtools import ensure_probe_table, failed_states, highstate, lab, wait_healthy


@pytest.fixture(scope="session")
def lab_up() -> Iterator[None]:
    """The lab, up for the whole session, taken down at the end (PGCLUSTER_KEEP_LAB=1 keeps it)."""
    if os.geteuid() != 0:
        pytest.fail("lab tests need root (they run the lab)")
    lab("up")
    yield
    if os.environ.get("PGCLUSTER_KEEP_LAB") != "1":
        lab("down")


SETUPS: list[str] = []  # where each module's deployed fixture spent its time (printed at the end)


@pytest.fixture(scope="module")
def deployed(lab_up, request) -> None:
    """The cluster deployed by a highstate with no failed state, healthy, with the probe table
    (once per module; earlier modules may have left it so already)."""
    start = time.monotonic()
    ret = highstate()
    failed = failed_states(ret)
    assert failed == {m: [] for m in ret}, failed
    slowest = max(((sum(s.get("duration", 0) for s in states.values()) / 1000, m) for m, states in ret.items()),
                  default=(0, ""))  # fmt: skip
    applied = time.monotonic()
    wait_healthy(2, timeout=180)
    healthy = time.monotonic()
    ensure_probe_table()
    SETUPS.append(f"{request.module.__name__}: highstate {applied - start:.1f} s (slowest minion {slowest[1]} "
                  f"{slowest[0]:.1f} s in states), healthy after {healthy - applied:.1f} s, probe table "
                  f"{time.monotonic() - healthy:.1f} s")  # fmt: skip
