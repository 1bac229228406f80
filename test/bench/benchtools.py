"""What the benchmarks share: pgbench through app1's PgBouncer and the median [min-max] cell."""

from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "test" / "integration"))
from labtools import sh  # noqa: E402


def pgbench(seconds: int, target: str = "service=app", clients: int = 4) -> float:
    """TPS of pgbench (simple protocol, TPC-B-like, CLIENTS clients) on app1 against TARGET for SECONDS."""
    out = sh("app1", f"pgbench -n -M simple -c {clients} -j 2 -T {seconds} {target} </dev/null 2>&1",
             timeout=seconds + 120).stdout  # fmt: skip
    m = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    if not m:
        raise SystemExit(f"pgbench gave no TPS:\n{out}")
    return float(m.group(1))


def fmt(values: list[float]) -> str:
    """median  [min-max]"""
    return f"{statistics.median(values):9.1f}  [{min(values):.1f}-{max(values):.1f}]"
