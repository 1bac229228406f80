#!/opt/pgcluster-lab/venv/bin/python
"""Benchmark of the HA cluster in the lab (prints a table; asserts nothing).

- seconds for the first highstate from bare lab hosts to a healthy cluster;
- seconds for a re-apply that changes nothing;
- for each profile (durable, fast), over N crashes of the leader's host: seconds from
  the crash (kill -9 of the host's init) to the first INSERT accepted by a new leader,
  measured by a writer on app1 trying every member with target_session_attrs=read-write.

Run as root:  test/bench/bench_cluster.py [--deploys 2] [--reapplies 5] [--crashes 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "test" / "integration"))
from labtools import APP_PASSWORD, changed_states, ensure_probe_table, highstate, lab, leader, sh, wait_healthy  # noqa: E402

PROBE = """
while :; do
  if PGPASSWORD={pw} PGCONNECT_TIMEOUT=1 psql -XAtq "host=pg1,pg2,pg3 dbname=app user=app \
      target_session_attrs=read-write" -c "INSERT INTO failover_probe(note) VALUES ('bench')" 2>/dev/null; then
    date +%s.%N; exit 0
  fi
  [ $SECONDS -gt 120 ] && exit 1
  sleep 0.1
done
"""


def row(name: str, values: list[float], note: str = "") -> str:
    if not values:
        return f"{name:44} {'-':>7} {'-':>7} {'-':>7}  n=0 {note}"
    med = statistics.median(values)
    return f"{name:44} {med:7.1f} {min(values):7.1f} {max(values):7.1f}  n={len(values)} {note}"


def crash_once() -> float:
    """Crash the leader's host; seconds until a new leader accepts a write. Boots it again after."""
    old = leader()
    t0 = time.time()
    lab("crash", old)
    res = sh("app1", PROBE.format(pw=APP_PASSWORD), check=False, timeout=180)
    lab("boot", old)
    if res.returncode != 0:
        raise RuntimeError("no write accepted within 120 s")
    seconds = float(res.stdout.strip()) - t0
    wait_healthy(2, timeout=300)
    return seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--deploys", type=int, default=2)
    ap.add_argument("--reapplies", type=int, default=5)
    ap.add_argument("--crashes", type=int, default=5)
    args = ap.parse_args()
    first, reapply, crash = [], [], {"durable": [], "fast": []}
    for _ in range(args.deploys):
        lab("down")
        lab("up")
        t = time.monotonic()
        ret = highstate()
        first.append(time.monotonic() - t)
        failed = [s for st in ret.values() if isinstance(st, dict) for s in st.values() if s["result"] is False]
        if failed:
            print(json.dumps(failed, indent=1)[:3000])
            return 1
    for _ in range(args.reapplies):
        t = time.monotonic()
        ret = highstate()
        reapply.append(time.monotonic() - t)
        assert not any(changed_states(ret).values()), changed_states(ret)
    ensure_probe_table()
    for profile in ("durable", "fast"):
        pillar = json.dumps({"pgcluster": {"clusters": {"main": {"profile": profile}}}})
        highstate(f"pillar={pillar}")
        wait_healthy(2, timeout=120)
        for _ in range(args.crashes):
            crash[profile].append(crash_once())
    highstate()  # back to the lab's own pillar
    print(f"\ncluster benchmark ({time.strftime('%Y-%m-%d %H:%M')}, 2 cores, 6 lab hosts)")
    print(f"{'measure (seconds)':44} {'median':>7} {'min':>7} {'max':>7}")
    print(row("first highstate, bare hosts -> healthy", first))
    print(row("re-apply, zero changes", reapply))
    for profile, values in crash.items():
        print(row(f"leader crash -> write accepted ({profile})", values, "ttl 20, loop_wait 5"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
