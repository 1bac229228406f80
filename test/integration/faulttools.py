"""The fault matrix's machinery, shared by the pass/fail matrix (test/faults) and the benchmark
(test/bench/bench_faults.py): each fault under an insert-only writer through app1's PgBouncer
that logs the commits it saw acknowledged (ackwriter.py), then checked on every member.

For one fault (``one``), from the fault (t0) on the deployed lab:

- outage: the longest gap between two rows the writer committed (their commit times, read on
  the leader afterwards), within the fault's window;
- failed: INSERTs that returned an error (allowed: only acknowledged commits are promised);
- lost: acknowledged ids missing on the final leader, and on any member once healed;
- leaders: the most members answering 200 on /primary at once, polled from app1 every 0.2 s
  (an isolated member cannot be seen: its count is a lower bound);
- heal: t0 -> a leader and every replica streaming again; the fault lasts WINDOW seconds before
  it is undone;
- routed: seconds after the heal until a write through app1's PgBouncer commits (None: none
  within 60 s).
"""

from __future__ import annotations

import statistics
import subprocess
import time

from labtools import ADDRESS, APP_PASSWORD, LAB, MEMBERS, AckWriter, lab, leader, local_pillar, psql, sh, wait_healthy

DSN = "host=127.0.0.1 port=6432 dbname=app user=app"
WINDOW = 45  # seconds the writer runs after the fault, before the fault is undone (the benchmark's)
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
# The faults that take the leader away: a replica must accept writes within the profile's failover bound.
LEADER_LOST = ("leader_crash", "leader_isolated", "pgbouncer_restart_in_failover")
# {profile: {fault: [one's result per run]}}, filled by the pass/fail matrix, printed at its end.
RESULTS: dict[str, dict[str, list[dict]]] = {}


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
    """The longest time without a commit of the writer's, from 5 s before the fault to its stop:
    the longest gap between its consecutive committed rows, or from its last row to the stop (the
    row ``routed_after`` writes after the heal comes after the stop: not counted)."""
    sql = (f"SELECT greatest(coalesce(max(gap), 0), {stop_epoch} - extract(epoch FROM max(at))) FROM "
           f"(SELECT at, extract(epoch FROM at - lag(at) OVER (ORDER BY at)) gap FROM {table} "
           f"WHERE at BETWEEN to_timestamp({t0_epoch - 5}) AND to_timestamp({stop_epoch})) g")  # fmt: skip
    return float(psql(lead, sql).stdout.strip() or 0)


def routed_after(table: str, timeout: float = 60) -> float | None:
    """Seconds until one INSERT into TABLE through app1's PgBouncer commits (None: not within TIMEOUT)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        ok = sh("app1", f"PGCONNECT_TIMEOUT=5 psql service=app -XAtqc 'INSERT INTO {table}(id) VALUES (-1)' "
                        "</dev/null", check=False, timeout=30)  # fmt: skip
        if ok.returncode == 0:
            return time.monotonic() - start
        time.sleep(1)
    return None


def one(name: str, run: int, window: float = WINDOW) -> dict:
    """Fault NAME once (RUN numbers its table) under the writer, undone after WINDOW seconds."""
    wait_healthy(2, timeout=300)
    lead = leader()
    table = f"fault_{name}_{run}"
    psql(lead, f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table}(id bigint PRIMARY KEY, at timestamptz "
               f"NOT NULL DEFAULT clock_timestamp()); GRANT INSERT, SELECT ON {table} TO app")  # fmt: skip
    writer = AckWriter("app1", DSN, table, password=APP_PASSWORD)
    poll = LeaderPoll(int(window) + 10)
    time.sleep(5)
    do, undo = FAULTS[name]
    t0, t0_epoch = time.monotonic(), time.time()
    do(lead)
    time.sleep(window)
    report = writer.stop()
    stop_epoch = time.time()
    undo(lead)
    wait_healthy(2, timeout=600)
    heal = time.monotonic() - t0
    routed = routed_after(table)
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
        "routed": routed,
        "leader_changed": final != lead,
        "window": window,
    }


def set_profile(profile: str | None) -> None:
    """The lab's cluster main switched to PROFILE (pillar in local.sls, then highstate on the
    members); None: back to the lab's own pillar."""
    local_pillar({"clusters": {"main": {"profile": profile}}} if profile else None)
    lab("salt", ",".join(MEMBERS), "-L", "state.apply", "--out=json", "--static", "-t", "900", timeout=1200)


def cell(values: list[float], fmt: str = "{:.1f}") -> str:
    """Median [min-max] of VALUES."""
    med = statistics.median(values)
    return f"{fmt.format(med)} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def table(profile: str, results: dict[str, list[dict]]) -> list[str]:
    """The matrix's lines for PROFILE: one per fault, median [min-max] over its runs."""
    head = (f"{'fault':32} {'outage s':>18} {'failed':>14} {'lost':>6} {'lost any':>9} {'leaders':>8} "
            f"{'heal s':>18} {'routed s':>9}")  # fmt: skip
    window = max(r["window"] for rs in results.values() for r in rs)
    lines = [f"profile {profile}: writer through app1's PgBouncer, each fault undone after {window:.0f} s", head,
             "-" * len(head)]  # fmt: skip
    for name, rs in results.items():
        routed = [r["routed"] for r in rs]
        lines.append(f"{name:32} {cell([r['outage'] for r in rs]):>18} {cell([r['failed'] for r in rs], '{:.0f}'):>14} "
                     f"{max(r['lost'] for r in rs):>6} {max(r['lost_any_member'] for r in rs):>9} "
                     f"{max(r['leaders'] for r in rs):>8} {cell([r['heal'] for r in rs]):>18} "
                     f"{'never' if None in routed else f'{max(routed):.1f}':>9}")  # fmt: skip
    lines.append("lost: acknowledged ids missing on the final leader (max over runs); lost any: on any member once "
                 "healed; leaders: most members answering 200 on /primary at once (max; an isolated one unseen); "
                 "heal: fault -> healthy again; routed: heal -> a write through PgBouncer commits")  # fmt: skip
    return lines
