#!/opt/pgcluster-lab/venv/bin/python
"""What TLS costs on the data path (prints a table; asserts nothing).

pgbench through app1's PgBouncer (simple-protocol TPC-B-like, 4 clients, SECONDS each) in the same
run with two links as deployed (TLS, verify-full) and in plaintext, for the measure only:
- PgBouncer -> PostgreSQL: app1's PgBouncer told server_tls_sslmode=disable, the leader's pg_hba
  line for app from hostssl to host;
- streaming replication: the replicas' Patroni told sslmode=disable (config.yml, reloaded: Patroni
  rewrites primary_conninfo), the leader's replication lines from hostssl to host.
The order alternates between runs. Printed: TPS, and the replication lag sampled on the leader
every 0.5 s during each run (bytes sent but not replayed, the worst replica). Everything is put
back (original pg_hba.conf and config.yml, Patroni reloaded, app1's PgBouncer by its state) and
checked: every link uses TLS again.

Not measured: failover and backup times without TLS (etcd, Patroni's REST API and pgBackRest
have no plaintext mode in pgcluster).

Run as root with the lab deployed:  test/bench/bench_tls.py [--runs 5] [--seconds 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "test" / "integration"))
from benchtools import fmt, pgbench  # noqa: E402
from labtools import ADDRESS, lab, leader, psql, sh, wait_healthy  # noqa: E402

APP1 = "198.18.0.30"
HBA = "/var/lib/postgresql/15/patroni-main/pg_hba.conf"
PATRONI_CONF = "/etc/patroni/config.yml"


def plaintext(on: bool, lead: str, replicas: list[str]) -> None:
    """Both measured links in plaintext (ON) or back as deployed."""
    reload_pg = "cd / && runuser -u postgres -- psql -XAtqc 'select pg_reload_conf()' >/dev/null"
    if on:
        sh(lead, f"cp -np {HBA} {HBA}.bench && sed -i -e 's/^hostssl app app {APP1}/host app app {APP1}/' "
                 f"-e 's/^hostssl replication /host replication /' {HBA} && {reload_pg}")  # fmt: skip
        sh("app1", "sed -i 's/^server_tls_sslmode = .*/server_tls_sslmode = disable/' /etc/pgbouncer/pgbouncer.ini "
                   "&& systemctl restart pgbouncer")  # its server connections too  # fmt: skip
        for r in replicas:
            sh(r, f"cp -np {PATRONI_CONF} {PATRONI_CONF}.bench && "
                  f"sed -i 's/sslmode: verify-full/sslmode: disable/' {PATRONI_CONF}")  # fmt: skip
    else:
        sh(lead, f"if [ -e {HBA}.bench ]; then mv {HBA}.bench {HBA}; fi && {reload_pg}")
        lab("salt", "app1", "state.apply", "pgcluster.pgbouncer", "--out=json")
        sh("app1", "systemctl restart pgbouncer")  # server connections opened in plaintext closed
        for r in replicas:
            sh(r, f"if [ -e {PATRONI_CONF}.bench ]; then mv {PATRONI_CONF}.bench {PATRONI_CONF}; fi")
    for r in replicas:
        lab("salt", r, "patroni.reload", "--out=json")


def links_use_tls(replicas: int, want: bool) -> tuple[bool, bool]:
    """Whether app1's server connections and every replica's stream use TLS (pg_stat_ssl on the
    leader), once they are as WANT or after 60 s: Patroni rewrites primary_conninfo on its next loop."""
    lead = leader()
    for _ in range(120):
        sh("app1", "psql service=app -XAtc 'select 1' </dev/null")
        app = psql(lead, f"SELECT bool_and(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) "
                         f"WHERE client_addr = '{APP1}'").stdout.strip()  # fmt: skip
        rows = psql(lead, "SELECT count(*), bool_and(ssl) FROM pg_stat_replication "
                          "JOIN pg_stat_ssl USING (pid) WHERE state = 'streaming'").stdout.strip()  # fmt: skip
        n, ssl = rows.split("|")
        got = (app == "t", int(n) == replicas and ssl == "t")
        if got == (want, want) and int(n) == replicas:
            break
        time.sleep(0.5)
    return got


class LagSampler(threading.Thread):
    """The worst replica's lag in bytes on the leader, every 0.5 s until stopped."""

    def __init__(self, lead: str):
        super().__init__(daemon=True)
        self.lead, self.samples, self.stop = lead, [], threading.Event()

    def run(self) -> None:
        q = "SELECT coalesce(max(pg_wal_lsn_diff(sent_lsn, replay_lsn)), 0) FROM pg_stat_replication"
        while not self.stop.wait(0.5):
            out = psql(self.lead, q, check=False).stdout.strip()
            if out:
                self.samples.append(float(out))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=20)
    args = ap.parse_args()
    wait_healthy(2, timeout=120)
    lead = leader()
    replicas = [h for h in ("pg1", "pg2", "pg3") if h != lead]
    sh("app1", "pgbench -i -s 5 -q service=app </dev/null")
    tps: dict[str, list[float]] = {"tls": [], "plain": []}
    lag: dict[str, list[float]] = {"tls": [], "plain": []}
    try:
        for run in range(args.runs):
            for mode in ("tls", "plain") if run % 2 == 0 else ("plain", "tls"):
                plaintext(mode == "plain", lead, replicas)
                want = mode == "tls"
                links = links_use_tls(len(replicas), want)
                assert links == (want, want), f"{mode}: the links (app, replication) use TLS: {links}"
                sampler = LagSampler(lead)
                sampler.start()
                tps[mode].append(pgbench(args.seconds))
                sampler.stop.set()
                sampler.join()
                lag[mode] += sampler.samples
    finally:
        plaintext(False, lead, replicas)
    assert links_use_tls(len(replicas), True) == (True, True), "TLS not back after the benchmark"
    ratio = statistics.median(tps["plain"]) / statistics.median(tps["tls"])
    print(f"\npgbench through app1's PgBouncer, {args.runs} runs x {args.seconds} s, leader {lead} "
          f"({ADDRESS[lead]}), profile as deployed: median [min-max]")  # fmt: skip
    print(f"{'links':34} {'TPS':>9}                {'replication lag (bytes, 0.5 s samples)':>10}")
    for mode, label in (("tls", "TLS (verify-full) as deployed"), ("plain", "plaintext (baseline)")):
        print(f"{label:34} {fmt(tps[mode])}   median {statistics.median(lag[mode]):8.0f}  "
              f"p95 {sorted(lag[mode])[int(0.95 * (len(lag[mode]) - 1))]:8.0f}")  # fmt: skip
    print(f"TLS costs {100 * (1 - 1 / ratio):.1f} % of the plaintext TPS (goal: <= 5 %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
