#!/opt/pgcluster-lab/venv/bin/python
"""The fault matrix: each fault under an insert-only writer through app1's PgBouncer that logs
the commits it saw acknowledged (test/integration/ackwriter.py), then checked on every member.

For each fault, repeated N times on the deployed lab (test/lab/lab deploy; its profile, or
--profile to switch by pillar and highstate first), from the fault (t0):

- outage: the longest gap between two rows the writer committed (their commit times, read on
  the leader afterwards), within the fault's window;
- failed: INSERTs that returned an error (allowed: only acknowledged commits are promised);
- lost: acknowledged ids missing on the final leader (durable, pair: must be 0), and on any
  member once healed;
- leaders: the most members answering 200 on /primary at once, polled from app1 every 0.2 s
  (an isolated member cannot be seen: its count is a lower bound);
- heal: t0 -> a leader and every replica streaming again; the fault lasts WINDOW (45) seconds
  before it is undone, so heal - 45 is the recovery after the undo.

Prints a table (median [min-max] per fault); asserts nothing. The baseline is the
promise: durable loses no acknowledged commit and never has two leaders. Run as root:
  test/bench/bench_faults.py [--runs 3] [--only leader_crash,replica_crash] [--profile fast]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "test" / "integration"))
from labtools import (  # noqa: E402
    ADDRESS,
    APP_PASSWORD,
    LAB,
    MEMBERS,
    AckWriter,
    lab,
    leader,
    psql,
    sh,
    wait_healthy,
)

LOCAL = "/srv/lab-pillar/pgcluster/local.sls"
DSN = "host=127.0.0.1 port=6432 dbname=app user=app"
LAB_PROFILE = yaml.safe_load((REPO / "pillar/pgcluster/lab_model.yaml").read_text())["pgcluster"]["clusters"]["main"][
    "profile"
]
DEFAULTS = yaml.safe_load((REPO / "salt/pgcluster/defaults.yaml").read_text())["pgcluster"]
WINDOW = 45  # seconds the writer runs after the fault, before the fault is undone
ETCD_CUT = ("nft add table inet faultcut; nft add chain inet faultcut out '{ type filter hook output priority 0; }'; "
            "nft add chain inet faultcut in '{ type filter hook input priority 0; }'; "
            "nft add rule inet faultcut out tcp dport '{ 2379, 2380 }' ip daddr != 127.0.0.0/8 drop; "
            "nft add rule inet faultcut in tcp dport '{ 2379, 2380 }' ip saddr != 127.0.0.0/8 drop")  # fmt: skip


def others(lead: str) -> list[str]:
    return [m for m in MEMBERS if m != lead]


# Each fault: (what it does to the cluster whose leader is LEAD, how it is undone).
FAULTS = {
    "leader_crash": (lambda lead: lab("crash", lead), lambda lead: lab("boot", lead)),
    "leader_isolated": (lambda lead: lab("isolate", lead), lambda lead: lab("heal", lead)),
    "leader_cut_from_etcd": (lambda lead: sh(lead, ETCD_CUT), lambda lead: sh(lead, "nft delete table inet faultcut")),
    "etcd_quorum_lost": (
        lambda lead: [sh(m, "systemctl kill -s KILL etcd; systemctl stop etcd") for m in others(lead)],
        lambda lead: [sh(m, "systemctl start etcd") for m in others(lead)],
    ),
    "kill9_patroni_on_leader": (
        lambda lead: sh(lead, "systemctl kill -s KILL --kill-whom=main patroni"),
        lambda lead: None,
    ),  # fmt: skip
    "kill9_postmaster_on_leader": (
        lambda lead: sh(lead, "kill -9 $(head -1 /var/lib/postgresql/15/patroni-main/postmaster.pid)"),
        lambda lead: None,
    ),
    "replica_crash": (lambda lead: lab("crash", others(lead)[0]), lambda lead: lab("boot", others(lead)[0])),
    "pgbouncer_restart_in_failover": (
        lambda lead: (lab("crash", lead), time.sleep(2), sh("app1", "systemctl restart pgbouncer")),
        lambda lead: lab("boot", lead),
    ),
    "master_down_in_failover": (
        lambda lead: (lab("crash", "salt"), lab("crash", lead)),
        lambda lead: (lab("boot", "salt"), lab("boot", lead)),
    ),
    "backup_down_archiving": (lambda lead: lab("crash", "backup"), lambda lead: lab("boot", "backup")),
}


class LeaderPoll:
    """The most members answering 200 on /primary at once, polled every 0.2 s from app1 (the
    REST API answers only members, PgBouncer hosts and the master, not the lab's host)."""

    SCRIPT = (
        "end=$((SECONDS + {seconds})); while [ $SECONDS -lt $end ]; do n=0; for a in {addresses}; do "
        "c=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 0.3 --cacert /etc/pgcluster/pki/ca.crt "
        'https://$a:8008/primary); [ "$c" = 200 ] && n=$((n + 1)); done; echo $n; sleep 0.2; done'
    )

    def __init__(self, seconds: int):
        script = self.SCRIPT.format(seconds=seconds, addresses=" ".join(ADDRESS[m] for m in MEMBERS))
        self.proc = subprocess.Popen([str(LAB), "exec", "app1", "--", "bash", "-c", script],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip

    def most(self) -> int:
        out, _ = self.proc.communicate(timeout=600)
        return max((int(x) for x in out.split() if x.isdigit()), default=0)


def outage(lead: str, table: str, t0_epoch: float, stop_epoch: float) -> float:
    """The longest time without a commit, from 5 s before the fault to the writer's stop: the
    longest gap between consecutive committed rows, or from the last row to the stop."""
    sql = (f"SELECT greatest(coalesce(max(gap), 0), {stop_epoch} - extract(epoch FROM max(at))) FROM "
           f"(SELECT at, extract(epoch FROM at - lag(at) OVER (ORDER BY at)) gap FROM {table} "
           f"WHERE at >= to_timestamp({t0_epoch - 5})) g")  # fmt: skip
    return float(psql(lead, sql).stdout.strip() or 0)


def one(name: str, run: int) -> dict:
    wait_healthy(2, timeout=300)
    lead = leader()
    table = f"fault_{name}_{run}"
    psql(lead, f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table}(id bigint PRIMARY KEY, at timestamptz "
               f"NOT NULL DEFAULT clock_timestamp()); GRANT INSERT, SELECT ON {table} TO app")  # fmt: skip
    writer = AckWriter("app1", DSN, table, password=APP_PASSWORD)
    poll = LeaderPoll(WINDOW + 10)
    time.sleep(5)
    do, undo = FAULTS[name]
    t0, t0_epoch = time.monotonic(), time.time()
    do(lead)
    time.sleep(WINDOW)
    report = writer.stop()
    stop_epoch = time.time()
    undo(lead)
    wait_healthy(2, timeout=600)
    heal = time.monotonic() - t0
    final = leader()
    time.sleep(3)  # the replicas replay the last commits
    lost_members = {m: len(writer.missing_on(m, "app")) for m in MEMBERS}
    return {
        "outage": outage(final, table, t0_epoch, stop_epoch),
        "failed": len(report["failed"]),
        "acked": len(report["acked"]),
        "lost": lost_members[final],
        "lost_any_member": max(lost_members.values()),
        "leaders": poll.most(),
        "heal": heal,
        "leader_changed": final != lead,
    }


def cell(values: list[float], fmt: str = "{:.1f}") -> str:
    med = statistics.median(values)
    return f"{fmt.format(med)} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def set_profile(profile: str | None) -> None:
    if not profile:
        return
    block = json.dumps({"pgcluster": {"clusters": {"main": {"profile": profile}}}})
    sh("salt", f"mkdir -p {LOCAL.rsplit('/', 1)[0]} && cat > {LOCAL}", stdin=block)
    lab("salt", "*", "saltutil.refresh_pillar", "wait=True", "--out=json")
    lab("salt", ",".join(MEMBERS), "-L", "state.apply", "--out=json", "--static", "-t", "900", timeout=1200)


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
            sh("salt", f"rm -f {LOCAL}")
    ttl = DEFAULTS["profiles"][profile]["dcs"]["ttl"]
    print(f"\nFault matrix, profile {profile}, {args.runs} run(s) each, writer through app1's PgBouncer "
          f"({WINDOW} s after the fault); floor of a leader crash's outage: Patroni's ttl, {ttl} s (the "
          "leader key must expire before a replica may take over)")  # fmt: skip
    head = f"{'fault':32} {'outage s':>18} {'failed':>14} {'lost':>6} {'lost any':>9} {'leaders':>8} {'heal s':>18}"
    print(head)
    print("-" * len(head))
    for name, rs in results.items():
        print(f"{name:32} {cell([r['outage'] for r in rs]):>18} {cell([r['failed'] for r in rs], '{:.0f}'):>14} "
              f"{max(r['lost'] for r in rs):>6} {max(r['lost_any_member'] for r in rs):>9} "
              f"{max(r['leaders'] for r in rs):>8} {cell([r['heal'] for r in rs]):>18}")  # fmt: skip
    print(
        "\nlost: acknowledged ids missing on the final leader (max over runs); lost any: on any member once "
        "healed; leaders: most members answering 200 on /primary at once (max; an isolated one unseen); heal: "
        f"fault -> healthy again, the fault lasting {WINDOW} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
