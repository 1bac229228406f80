#!/opt/pgcluster-lab/venv/bin/python
"""The fault matrix: each fault under an insert-only writer through app1's PgBouncer that logs
the commits it saw acknowledged (test/integration/ackwriter.py), then checked on every member.

For each fault, repeated N times on the deployed lab (test/lab/lab deploy; its profile, or
--profile to switch by pillar and highstate first); what is measured is described in
test/integration/faulttools.py (the same machinery as the pass/fail matrix in test/faults).

Prints a table (median [min-max] per fault); asserts nothing. The baseline is the
promise: durable loses no acknowledged commit and never has two leaders. Run as root:
  test/bench/bench_faults.py [--runs 3] [--only leader_crash,replica_crash] [--profile fast]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "test" / "integration"))
from faulttools import FAULTS, one, set_profile, table  # noqa: E402

LAB_PROFILE = yaml.safe_load((REPO / "pillar/pgcluster/lab_model.yaml").read_text())["pgcluster"]["clusters"]["main"][
    "profile"
]
DEFAULTS = yaml.safe_load((REPO / "salt/pgcluster/defaults.yaml").read_text())["pgcluster"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated faults (default: all)")
    ap.add_argument("--profile", help="switch the cluster to this profile first (pillar + highstate)")
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n] or list(FAULTS)
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        print(f"unknown fault(s): {', '.join(unknown)} (known: {', '.join(FAULTS)})", file=sys.stderr)
        return 2
    if args.profile:
        set_profile(args.profile)
    profile = args.profile or LAB_PROFILE
    results: dict[str, list[dict]] = {}
    try:
        for name in names:
            for run in range(args.runs):
                r = one(name, run)
                print(f"# {name} run {run + 1}: {r}", flush=True)
                results.setdefault(name, []).append(r)
    finally:
        if args.profile:
            set_profile(None)  # the lab's own profile back, applied
    ttl = DEFAULTS["profiles"][profile]["dcs"]["ttl"]
    print(f"\nFault matrix, {args.runs} run(s) each; floor of a leader crash's outage: Patroni's ttl, {ttl} s "
          "(the leader key must expire before a replica may take over)")  # fmt: skip
    print("\n".join(table(profile, results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
