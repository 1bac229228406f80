#!/opt/pgcluster-lab/venv/bin/python
"""What watching costs (prints tables; asserts nothing).

1. pgbench through app1's PgBouncer (simple protocol, 4 clients, SECONDS each) with monitoring on
   (as deployed: every exporter scraped every 15 s, Prometheus and Alertmanager on the backup
   host) and off (every monitoring service stopped on every host), alternating the order between
   runs. Goal: TPS within 3 %.
2. Scrape duration per job (Prometheus's own scrape_duration_seconds, median and max over the
   targets, averaged over the last 10 minutes).
3. Prometheus's disk per day for the lab cluster: samples appended per second (Prometheus's own
   /metrics, 30 s apart) times the bytes per sample its compacted blocks hold (or 1.5 B before
   the first block), and the series in its head.

Everything stopped is started again and checked (every target up).

Run as root with the lab deployed:  test/bench/bench_monitoring.py [--runs 5] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "test" / "integration"))
from benchtools import fmt, pgbench  # noqa: E402
from labtools import CA, sh, wait_healthy  # noqa: E402

PROMETHEUS = "https://198.18.0.20:9090"
SERVICES = {
    "backup": [
        "prometheus",
        "prometheus-alertmanager",
        "prometheus-node-exporter",
        "pgcluster-pgbackrest-textfile.timer",
    ],
    "pg1": ["prometheus-node-exporter", "prometheus-postgres-exporter", "pgcluster-pgbouncer-exporter"],
    "pg2": ["prometheus-node-exporter", "prometheus-postgres-exporter", "pgcluster-pgbouncer-exporter"],
    "pg3": ["prometheus-node-exporter", "prometheus-postgres-exporter", "pgcluster-pgbouncer-exporter"],
    "app1": ["prometheus-node-exporter", "pgcluster-pgbouncer-exporter"],
    "salt": ["prometheus-node-exporter"],
}


def query(q: str) -> list[dict]:
    out = sh("backup", f"curl -sf --cacert {CA} -G --data-urlencode {shlex.quote('query=' + q)} "
                       f"{PROMETHEUS}/api/v1/query").stdout  # fmt: skip
    return json.loads(out)["data"]["result"]


def own_metrics() -> dict[str, float]:
    """Prometheus's own /metrics (it does not scrape itself), summed by metric name."""
    out: dict[str, float] = {}
    for line in sh("backup", f"curl -sf --cacert {CA} {PROMETHEUS}/metrics").stdout.splitlines():
        if line and not line.startswith("#"):
            name, value = line.split("{")[0].split()[0], line.rsplit(" ", 1)[1]
            out[name] = out.get(name, 0.0) + float(value)
    return out


def monitoring(on: bool) -> None:
    for host, units in SERVICES.items():
        sh(host, f"systemctl {'start' if on else 'stop'} {' '.join(units)}")


def all_up(timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if query("count(up == 0) or vector(0)")[0]["value"][1] == "0" and len(query("up")) >= 19:
                return True
        except (AssertionError, json.JSONDecodeError, IndexError):
            pass
        time.sleep(3)
    return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=20)
    args = ap.parse_args()
    wait_healthy(2, timeout=120)
    assert all_up(), "not every scrape target is up before the benchmark"
    scrape = {r["metric"]["job"]: [] for r in query("scrape_duration_seconds")}
    for r in query("avg_over_time(scrape_duration_seconds[10m])"):
        scrape[r["metric"]["job"]].append(float(r["value"][1]))
    first, t0 = own_metrics(), time.monotonic()
    time.sleep(30)
    second, t1 = own_metrics(), time.monotonic()
    name = "prometheus_tsdb_head_samples_appended_total"
    appended = (second.get(name, 0) - first.get(name, 0)) / (t1 - t0)
    series = int(second.get("prometheus_tsdb_head_series", 0))
    block_bytes = second.get("prometheus_tsdb_storage_blocks_bytes", 0.0)
    samples = second.get("prometheus_tsdb_compaction_chunk_samples_sum", 0.0)
    per_sample = block_bytes / samples if block_bytes and samples else 1.5
    blocks = block_bytes and samples
    sh("app1", "pgbench -i -s 5 -q service=app </dev/null")
    tps: dict[str, list[float]] = {"on": [], "off": []}
    try:
        for run in range(args.runs):
            for mode in ("on", "off") if run % 2 == 0 else ("off", "on"):
                monitoring(mode == "on")
                time.sleep(5)
                tps[mode].append(pgbench(args.seconds))
    finally:
        monitoring(True)
    assert all_up(), "a scrape target is not up again after the benchmark"
    print(f"\npgbench through app1's PgBouncer, {args.runs} runs x {args.seconds} s: median [min-max]")
    print(f"{'monitoring':40} {'TPS':>9}")
    for mode, label in (("on", "on (every exporter scraped every 15 s)"), ("off", "off (baseline: all stopped)")):
        print(f"{label:40} {fmt(tps[mode])}")
    cost = 100 * (1 - statistics.median(tps["on"]) / statistics.median(tps["off"]))
    print(f"monitoring costs {cost:.1f} % of the TPS without it (goal: <= 3 %)")
    print(
        f"\n{'scrape job':12} {'targets':>7} {'median s':>9} {'max s':>7}   (scrape_duration_seconds, 10 min average)"
    )
    for job, values in sorted(scrape.items()):
        if values:
            print(f"{job:12} {len(values):7d} {statistics.median(values):9.4f} {max(values):7.4f}")
    per_day = appended * per_sample * 86400
    print(f"\nPrometheus: {series} series, {appended:.0f} samples/s, {per_sample:.2f} B/sample "
          f"({'compacted blocks' if blocks else 'assumed, no block yet'}) -> "
          f"{per_day / 2**20:.0f} MiB per day, {per_day * 400 / 2**30:.1f} GiB for the 400-day retention")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
