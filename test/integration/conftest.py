"""Integration tests run against the real multi-host lab (test/lab/lab)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from labtools import lab


@pytest.fixture(scope="session")
def lab_up() -> Iterator[None]:
    """The lab, up for the whole session, taken down at the end (PGCLUSTER_KEEP_LAB=1 keeps it)."""
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (they run the lab)")
    lab("up")
    yield
    if os.environ.get("PGCLUSTER_KEEP_LAB") != "1":
        lab("down")
