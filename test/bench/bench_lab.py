#!/opt/pgcluster-lab/venv/bin/python
"""Benchmark of the lab: seconds for `up` (prepared base) and `down`, memory per idle host.

Prints a table; asserts nothing. Run as root:  test/bench/bench_lab.py [--runs N]
The issue's target: all six hosts up with every minion answering in <= 60 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "test" / "lab" / "lab"
sys.path.insert(0, str(REPO / "test" / "lab"))
from pglab.host import HOSTS_DIR  # noqa: E402
from pglab.topology import load  # noqa: E402


def timed(*args: str) -> float:
    t = time.monotonic()
    subprocess.run([str(LAB), *args], check=True, capture_output=True)
    return time.monotonic() - t


def pss_mib(host: str) -> float:
    """Proportional memory (MiB) of every process in the host's pid namespace."""
    nspawn = int((HOSTS_DIR / host / "nspawn.pid").read_text())
    init = Path(f"/proc/{nspawn}/task/{nspawn}/children").read_text().split()[0]
    ns = os.readlink(f"/proc/{init}/ns/pid")
    total = 0
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if os.readlink(p / "ns" / "pid") != ns:
                continue
            for line in (p / "smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def row(name: str, values: list[float], unit: str, target: str) -> str:
    med = statistics.median(values)
    return f"{name:28} {med:8.1f} {min(values):8.1f} {max(values):8.1f}  {unit:5} {target}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--settle", type=float, default=20, help="seconds idle before measuring memory")
    args = ap.parse_args()
    subprocess.run([str(LAB), "prepare"], check=True, capture_output=True)
    ups, downs, mem = [], [], {}
    timed("down")
    for _ in range(args.runs):
        ups.append(timed("up"))
        downs.append(timed("down"))
    timed("up")
    time.sleep(args.settle)
    for h in load().booted:  # a spare is not booted by 'up'
        mem[h.name] = pss_mib(h.name)
    timed("down")
    print(f"lab benchmark, {args.runs} runs, {os.cpu_count()} cores")
    print(f"{'measure':28} {'median':>8} {'min':>8} {'max':>8}  unit  target/baseline")
    print(row("up (6 hosts, minions ping)", ups, "s", "<= 60 s (issue 2)"))
    print(row("down", downs, "s", "-"))
    print(row("memory per idle host (PSS)", list(mem.values()), "MiB", "-"))
    for name, v in mem.items():
        print(f"  {name:26} {v:8.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
