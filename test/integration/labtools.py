"""Helpers of the integration tests: drive the lab CLI and poll for conditions."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "test" / "lab" / "lab"


def lab(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the lab CLI; returns the completed process (text output captured)."""
    res = subprocess.run([str(LAB), *args], capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"lab {' '.join(args)} exited {res.returncode}\n{res.stdout}\n{res.stderr}")
    return res


def sh(host: str, script: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a shell script inside a lab host."""
    return lab("exec", host, "--", "bash", "-c", script, check=check, timeout=timeout)


def wait_for(what: str, probe: Callable[[], bool], timeout: float, interval: float = 0.5) -> float:
    """Poll PROBE until it is true; returns seconds waited; fails the test after TIMEOUT."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if probe():
            return time.monotonic() - start
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
