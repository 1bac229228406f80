#!/opt/pgcluster-lab/venv/bin/python
"""What TLS costs on the data path (prints a table; asserts nothing).

pgbench through app1's PgBouncer (simple-protocol TPC-B-like, 4 clients, SECONDS each), in the same
run, with the link PgBouncer -> PostgreSQL as deployed (TLS, server_tls_sslmode=verify-full) and
in plaintext (for the measure only: app1's PgBouncer told server_tls_sslmode=disable, and the
leader's pg_hba line for app1 loosened from hostssl to host, both reloaded). The order alternates
between runs. Everything is put back by a highstate of app1 and a Patroni reload on the leader
(Patroni rewrites pg_hba.conf), then checked.

Also printed, TLS only (no plaintext mode to compare with here): the replication lag seen on the
replicas during the TLS runs. Not measured: failover and backup times without TLS (pgBackRest and
Patroni's REST API have no plaintext mode in pgcluster).

Run as root with the lab deployed:  test/bench/bench_tls.py [--runs 5] [--seconds 20]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "test" / "integration"))
from labtools import ADDRESS, lab, leader, psql, sh, wait_healthy  # noqa: E402

APP1 = "198.18.0.30"
HBA = "/var/lib/postgresql/15/patroni-main/pg_hba.conf"


def pgbench(seconds: int) -> float:
    out = sh("app1", f"pgbench -n -M simple -c 4 -j 2 -T {seconds} service=app </dev/null 2>&1",
             timeout=seconds + 120).stdout  # fmt: skip
    m = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    if not m:
        raise SystemExit(f"pgbench gave no TPS:\n{out}")
    return float(m.group(1))


def plaintext(on: bool, lead: str) -> None:
    """PgBouncer -> PostgreSQL in plaintext (ON) or back as deployed."""
    if on:
        sh(lead, f"sed -i 's/^hostssl app app {APP1}/host app app {APP1}/' {HBA} && "
                 "cd / && runuser -u postgres -- psql -XAtqc 'select pg_reload_conf()'")  # fmt: skip
        sh("app1", "sed -i 's/^server_tls_sslmode = .*/server_tls_sslmode = disable/' /etc/pgbouncer/pgbouncer.ini "
                   "&& systemctl reload pgbouncer")  # fmt: skip
    else:
        lab("salt", "app1", "state.apply", "pgcluster.pgbouncer", "--out=quiet")
        sh(lead, "patronictl reload main --force >/dev/null")


def tls_in_use() -> bool:
    """Whether app1's server connections to the leader use TLS now (pg_stat_ssl on the leader)."""
    sh("app1", "psql service=app -XAtc 'select 1' </dev/null")
    rows = psql(leader(), f"SELECT bool_or(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) "
                          f"WHERE client_addr = '{APP1}'").stdout.strip()  # fmt: skip
    return rows == "t"


def lag_bytes() -> int:
    rows = psql(leader(), "SELECT coalesce(max(pg_wal_lsn_diff(sent_lsn, replay_lsn)), 0) FROM pg_stat_replication")
    return int(float(rows.stdout.strip() or 0))


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):9.1f}  [{min(values):.1f}-{max(values):.1f}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=20)
    args = ap.parse_args()
    wait_healthy(2, timeout=120)
    lead = leader()
    sh("app1", "pgbench -i -s 5 -q service=app </dev/null")
    tps: dict[str, list[float]] = {"tls": [], "plain": []}
    lags: list[int] = []
    try:
        for run in range(args.runs):
            for mode in ("tls", "plain") if run % 2 == 0 else ("plain", "tls"):
                plaintext(mode == "plain", lead)
                assert tls_in_use() == (mode == "tls"), f"{mode}: the link is not what the run measures"
                tps[mode].append(pgbench(args.seconds))
                if mode == "tls":
                    lags.append(lag_bytes())
    finally:
        plaintext(False, lead)
    assert tls_in_use(), "TLS not back after the benchmark"
    ratio = statistics.median(tps["plain"]) / statistics.median(tps["tls"])
    print(f"\npgbench through app1's PgBouncer, {args.runs} runs x {args.seconds} s, leader {lead} "
          f"({ADDRESS[lead]}): median [min-max]")  # fmt: skip
    print(f"{'PgBouncer -> PostgreSQL':28} {'TPS':>9}")
    print(f"{'TLS (verify-full)':28} {fmt(tps['tls'])}")
    print(f"{'plaintext':28} {fmt(tps['plain'])}")
    print(f"TLS costs {100 * (1 - 1 / ratio):.1f} % of the plaintext TPS (goal: <= 5 %)")
    print(f"replication lag at the end of each TLS run (bytes): median {statistics.median(lags):.0f}, "
          f"max {max(lags)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
