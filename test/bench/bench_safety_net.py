#!/opt/pgcluster-lab/venv/bin/python
"""What the routing safety net costs with the cluster idle (prints a table; asserts nothing).

The master's schedule runs ``pgcluster.reconcile`` every 10 s. Measured in the same run, the
order alternating between runs, for WINDOW seconds each:
- verified (this change): the schedule alone; a PgBouncer host gets a Salt job only when the
  route the safety net verified there no longer holds (or every 300 s);
- a job every round (before): the same, plus ``salt-run pgcluster.reconcile full_every=0`` every
  10 s on the master, which sends every PgBouncer host a ``pgbouncer.repoint`` each round, as
  the safety net did before.
CPU time from /proc (utime + stime + cutime + cstime: a process's own and that of its reaped
children, so Salt's job processes and the psql they ran are counted; the lab's containers have
no per-unit accounting): app1's salt-minion and pgbouncer processes (a PgBouncer host), and the
master's salt-master processes (its scheduled runner rounds), each as % of one core. Then the
bound the safety net keeps: an event lost while the master is down (salt-master stopped,
``patronictl switchover``, salt-master started) until every PgBouncer routes to the new leader.

Needs the deployed lab cluster (test/lab/lab deploy). Run as root:
  test/bench/bench_safety_net.py [--runs 3] [--window 60]
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
sys.path.insert(0, str(REPO / "test" / "integration"))
from labtools import (  # noqa: E402
    LAB,
    MEMBERS,
    all_route_to_by_console,
    leader,
    sh,
    switchover_by_hand,
    wait_for,
    wait_healthy,
)

# The processes measured on each host (a pgrep pattern; the bracket keeps pgrep's shell out).
PROCESSES = {"app1": "salt-minio[n]|/usr/sbin/pgbounce[r]", "salt": "salt-maste[r]"}
BEFORE = "while :; do salt-run pgcluster.reconcile full_every=0 >/dev/null 2>&1; sleep 10; done"


def cpu_seconds(host: str) -> float:
    """CPU seconds HOST's PROCESSES used, their exited children (Salt's job processes and the
    psql they ran, reaped) included: utime + stime + cutime + cstime of each (/proc/PID/stat)."""
    script = (f"for p in $(pgrep -f '{PROCESSES[host]}'); do sed 's/.*) //' /proc/$p/stat 2>/dev/null; done "
              "| awk '{t += $12 + $13 + $14 + $15} END {print t}'")  # fmt: skip
    return float(sh(host, script).stdout.strip() or 0) / os.sysconf("SC_CLK_TCK")


def jobs_run() -> int:
    """How many jobs app1's minion has started (its log)."""
    return int(sh("app1", "grep -c 'Executing command' /var/log/salt/minion || true").stdout.strip() or 0)


def window(seconds: int, before: bool) -> dict[str, float]:
    """% of a core used by each measured host over SECONDS, with the old safety net added if
    BEFORE; and under 'jobs' the jobs app1's minion ran per minute."""
    loop = None
    if before:
        loop = subprocess.Popen([str(LAB), "exec", "salt", "--", "timeout", str(seconds + 15), "sh", "-c", BEFORE],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(5)  # its first round under way
    start, jobs = {h: cpu_seconds(h) for h in PROCESSES}, jobs_run()
    t0 = time.monotonic()
    time.sleep(seconds)
    used = {h: cpu_seconds(h) - start[h] for h in PROCESSES}
    elapsed = time.monotonic() - t0
    ran = jobs_run() - jobs
    if loop:
        sh("salt", "pkill -f 'sleep 1[0]; done' || true")
        loop.wait(timeout=60)
    return {**{h: 100 * used[h] / elapsed for h in PROCESSES}, "jobs": 60 * ran / elapsed}


def lost_event() -> float:
    """Seconds from salt-master's start until every PgBouncer routes to the leader chosen while it was down."""
    old = leader()
    new = next(m for m in MEMBERS if m != old)
    sh("salt", "systemctl stop salt-master")
    try:
        switchover_by_hand(old, new)
    finally:
        sh("salt", "systemctl start salt-master")
    start = time.monotonic()
    wait_for("every PgBouncer routed to the new leader", lambda: all_route_to_by_console(new), 90, interval=0.2)
    took = time.monotonic() - start
    wait_healthy(2, timeout=180)
    return took


def cell(values: list[float], digits: int = 2) -> str:
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--window", type=int, default=60, help="seconds per measure")
    args = ap.parse_args()
    wait_healthy(2, timeout=180)
    got: dict[bool, dict[str, list[float]]] = {b: {h: [] for h in [*PROCESSES, "jobs"]} for b in (False, True)}
    for run in range(args.runs):
        for before in (False, True) if run % 2 == 0 else (True, False):
            for host, pct in window(args.window, before).items():
                got[before][host].append(pct)
    print(f"\nsafety net, cluster idle: % of one core, median [min-max] over {args.runs} runs of {args.window} s")
    print(f"{'':34}{'verified (this change)':>26}{'a job every round (before)':>30}")
    for host, what in (("app1", "PgBouncer host (minion+pgbouncer)"), ("salt", "master (salt-master)")):
        print(f"{what:34}{cell(got[False][host]):>26}{cell(got[True][host]):>30}")
    jobs = got[False]["jobs"], got[True]["jobs"]
    print(f"{'jobs app1 ran per minute':34}{cell(jobs[0], 1):>26}{cell(jobs[1], 1):>30}", flush=True)
    heal = [lost_event() for _ in range(args.runs)]
    print(f"\nlost event corrected (master down during a switchover), s after the master starts: {cell(heal, 1)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
