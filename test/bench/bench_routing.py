#!/opt/pgcluster-lab/venv/bin/python
"""PgBouncer pushed by Salt events vs HAProxy polling Patroni: the same faults, the same run.

For each fault (leader-host crash; planned switchover by `salt-run pgcluster.switchover`),
repeated N times, two writers on app1 insert a row every 50 ms, one through app1's
PgBouncer (127.0.0.1:6432, repointed by the reactor), one through an HAProxy on app1
(127.0.0.1:6433) that health-checks Patroni's /primary with `inter 3s fall 3 rise 2` - the
way Autobase and Pigsty route clients. Measured, from the fault (t0):

- promote: Patroni's own time until a new leader answers /primary as primary (polled every 50 ms
  from the master's host over kept-alive connections: the members' firewalls admit it to
  Patroni's API, not the lab's machine);
- outage: the longest gap between two successful writes around the fault, per path;
- held (switchover): how long the runner held PgBouncer's clients, PAUSE to RESUME (its own clock);
- failed: writes that returned an error, per path;
- routing delay: new leader accepts writes -> every PgBouncer (pg1-3, app1) routes there
  (SHOW DATABASES polled on each host every 50 ms); for HAProxy, -> its first write there.

Prints a table (median, min, max); asserts nothing. Needs the deployed lab cluster
(test/lab/lab deploy). Run as root:  test/bench/bench_routing.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "test" / "integration"))
from labtools import LAB, ensure_probe_table, lab, leader, sh, wait_healthy  # noqa: E402

ADDRESS = {"pg1": "198.18.0.11", "pg2": "198.18.0.12", "pg3": "198.18.0.13"}
PGBOUNCERS = ("pg1", "pg2", "pg3", "app1")
SECONDS = 50  # each writer and poller stops by itself after this
HAPROXY_CFG = """global
    maxconn 200
defaults
    mode tcp
    timeout connect 1s
    timeout client 30m
    timeout server 30m
    timeout check 2s
listen pg_primary
    bind 127.0.0.1:6433
    option httpchk GET /primary
    http-check expect status 200
    default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions
""" + "".join(
    f"    server {m} {a}:5432 check port 8008 check-ssl verify required ca-file /etc/pgcluster/pki/ca.crt\n"
    for m, a in ADDRESS.items()
)

WRITER = """
end=$((SECONDS + {seconds}))
while [ $SECONDS -lt $end ]; do
  if a=$(psql "host=127.0.0.1 port={port} dbname=app user=app connect_timeout=1" -XAtq \
        -c "INSERT INTO failover_probe(note) VALUES ('bench') RETURNING inet_server_addr()" 2>/dev/null); then
    echo "$(date +%s.%N) ok $a"
  else
    echo "$(date +%s.%N) fail -"
  fi
  sleep 0.05
done
"""

# One admin-console session kept open per host (psql's \watch), read by Python with no process
# per look: a psql started every 50 ms on each of the four hosts loaded the 2-core machine and
# inflated the routing delay it measured (stop 25's note).
ROUTE_POLLER = """
import subprocess, time
end = time.time() + {seconds}
psql = subprocess.Popen(["runuser", "-u", "postgres", "--", "psql", "-h", "/var/run/postgresql", "-p", "6432",
                         "-XAt", "-F|", "pgbouncer"], cwd="/tmp", stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL, text=True)
psql.stdin.write("SHOW DATABASES \\\\watch 0.05\\n")
psql.stdin.flush()
last = None
for line in psql.stdout:
    fields = line.split("|")
    if fields[0] == "app" and fields[1] != last:
        print(f"{{time.time():.6f}} {{fields[1]}}", flush=True)
        last = fields[1]
    if time.time() > end:
        break
psql.kill()
"""

# On the master's host: the members' firewalls admit it to Patroni's REST API (not the lab's
# machine). The first time a member other than the old leader answers /primary as primary. One
# kept-alive TLS connection per member (every host shares the machine's cores: a new handshake
# every 50 ms would slow the master it measures).
PROMOTION_POLLER = """
import sys, time
import requests
deadline = time.time() + {seconds}
sessions = {{a: requests.Session() for a in sys.argv[1:]}}
while time.time() < deadline:
    for a, s in sessions.items():
        try:
            r = s.get(f"https://{{a}}:8008/primary", timeout=0.3, verify="/etc/pgcluster/pki/ca.crt")
            if r.status_code == 200 and r.json().get("role") == "primary":
                print(f"{{time.time():.6f}} {{a}}", flush=True)
                sys.exit(0)
        except (requests.RequestException, ValueError):
            pass
    time.sleep(0.05)
"""


def start(host: str, script: str, python: bool = False) -> subprocess.Popen:
    runner = ["python3", "-c"] if python else ["bash", "-c"]
    return subprocess.Popen([str(LAB), "exec", host, "--", *runner, script],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip


def parse_writes(text: str) -> list[tuple[float, bool, str]]:
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3:
            rows.append((float(parts[0]), parts[1] == "ok", parts[2]))
    return rows


def outage(rows: list, t0: float, old_addr: str) -> tuple[float | None, int, float | None]:
    """(longest gap between successful writes around t0, failed writes after t0, first ok write on a new leader)."""
    ok = [t for t, good, _ in rows if good]
    before = [t for t in ok if t <= t0]
    after_new = [t for t, good, a in rows if good and t > t0 and a != old_addr]
    if not before or not after_new:
        return None, sum(1 for t, g, _ in rows if t > t0 and not g), None
    times = [t for t in ok if before[-1] <= t <= after_new[0]]
    gap = max(b - a for a, b in zip(times, times[1:], strict=False)) if len(times) > 1 else after_new[0] - before[-1]
    return gap, sum(1 for t, g, _ in rows if t > t0 and not g), after_new[0]


def one_run(fault: str) -> dict:
    old = leader()
    old_addr = ADDRESS[old]
    procs = {f"route:{h}": start(h, ROUTE_POLLER.format(seconds=SECONDS), python=True) for h in PGBOUNCERS}
    for path, port in (("pgbouncer", 6432), ("haproxy", 6433)):
        procs[f"w:{path}"] = start(
            "app1", "export PGPASSFILE=/root/.pgpass-bench;" + WRITER.format(seconds=SECONDS, port=port)
        )
    others = [a for m, a in ADDRESS.items() if m != old]
    poller = ["/opt/pgcluster-lab/venv/bin/python3", "-c", PROMOTION_POLLER.format(seconds=SECONDS), *others]
    procs["promotion"] = subprocess.Popen([str(LAB), "exec", "salt", "--", *poller], stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    time.sleep(4)
    t0 = time.time()
    if fault == "crash":
        lab("crash", old)
    else:
        steps = json.loads(lab("run", "pgcluster.switchover", "main", "--out=json", timeout=120).stdout)
    out = {k: p.communicate(timeout=SECONDS + 60)[0] for k, p in procs.items()}
    if fault == "crash":
        lab("boot", old)
    wait_healthy(2, timeout=300)
    seen = out["promotion"].split()
    t_promote = float(seen[0]) if seen else None
    res = {"promote": t_promote - t0 if t_promote else None}
    if fault == "switchover":  # how long the runner held clients (PAUSE -> RESUME), by its own clock
        res["paused"] = steps["paused_seconds"]
    for path in ("pgbouncer", "haproxy"):
        gap, failed, first_new = outage(parse_writes(out[f"w:{path}"]), t0, old_addr)
        res[f"outage:{path}"], res[f"failed:{path}"] = gap, failed
        if path == "haproxy" and first_new and t_promote:
            res["routing:haproxy"] = first_new - t_promote
    switched = []
    for h in (h for h in PGBOUNCERS if not (fault == "crash" and h == old)):  # a crashed host routes nothing
        moves = [float(line.split()[0]) for line in out[f"route:{h}"].splitlines()
                 if len(line.split()) == 2 and float(line.split()[0]) > t0 and line.split()[1] != old_addr]  # fmt: skip
        switched.append(moves[0] if moves else None)
    if t_promote and all(switched):
        res["routing:pgbouncer"] = max(switched) - t_promote
    return res


def fmt(values: list) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return f"{'-':>7} {'-':>7} {'-':>7}"
    return f"{statistics.median(vals):7.2f} {min(vals):7.2f} {max(vals):7.2f}"


def p95(values: list) -> str:
    vals = sorted(v for v in values if v is not None)
    return f"{vals[min(len(vals) - 1, int(round(0.95 * (len(vals) - 1))))]:.2f}" if vals else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    wait_healthy(2, timeout=120)
    ensure_probe_table()
    # The app's credentials for both paths, from the Salt-managed ~/.pgpass (no secret on a command line).
    sh("app1", "umask 077; { cat /root/.pgpass; sed 's/^127.0.0.1:6432:/127.0.0.1:6433:/' /root/.pgpass; } "
               "> /root/.pgpass-bench")  # fmt: skip
    sh("app1", f"cat > /run/haproxy-bench.cfg <<'EOF'\n{HAPROXY_CFG}EOF\n"
               "haproxy -f /run/haproxy-bench.cfg -D -p /run/haproxy-bench.pid")  # fmt: skip
    results: dict[str, list[dict]] = {"crash": [], "switchover": []}
    try:
        time.sleep(8)  # HAProxy: rise 2 x inter 3s before the leader is UP
        for fault in results:
            for i in range(args.runs):
                r = one_run(fault)
                results[fault].append(r)
                print(f"{fault} #{i + 1}: " + ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                                                        for k, v in r.items()), flush=True)  # fmt: skip
    finally:
        sh("app1", "kill $(cat /run/haproxy-bench.pid); rm -f /run/haproxy-bench.* /root/.pgpass-bench", check=False)
    print(f"\nrouting benchmark ({time.strftime('%Y-%m-%d %H:%M')}, {args.runs} runs per fault, seconds)")
    print(f"{'fault / measure':44} {'median':>7} {'min':>7} {'max':>7}   p95")
    for fault, runs in results.items():
        for key, label in [("promote", "Patroni promotion (new leader writable)"),
                           ("outage:pgbouncer", "write outage via PgBouncer (pgcluster)"),
                           ("outage:haproxy", "write outage via HAProxy (3s/3/2)"),
                           ("routing:pgbouncer", "routing delay, every PgBouncer"),
                           ("routing:haproxy", "routing delay, HAProxy"),
                           ("paused", "clients held by the runner (PAUSE-RESUME)")]:  # fmt: skip
            vals = [r.get(key) for r in runs]
            print(f"{fault + ': ' + label:44} {fmt(vals)}   {p95(vals)}")
        for path in ("pgbouncer", "haproxy"):
            failed = [r[f"failed:{path}"] for r in runs]
            print(f"{fault + ': failed writes via ' + path:44} {fmt(failed)}   total {sum(failed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
