#!/opt/pgcluster-lab/venv/bin/python
"""Benchmark of backups and restores with pgBackRest, side by side with pg_basebackup (prints a
table; asserts nothing).

A pgbench database of about 1 GB (scale 70) is written on the leader. Each run measures:

- backup:  a pgBackRest full backup (leader -> repository on the backup host, TLS, zstd level 3,
           process-max 2, encrypted), and an incremental one after 5 s of pgbench writes,
           against pg_basebackup from the leader to pg2 as a tar with the same compression on
           the server (-Ft --compress=server-zstd:3), and as a plain copy;
- restore: a pgBackRest restore of that backup from the repository into an empty directory on
           pg2, against pg_basebackup -Fp from the leader into an empty directory on pg2 (how
           Patroni's basebackup method builds a replica), and against unpacking the tar.

Throughput is the database's size (the backup's own figure) over wall time; every copy is
synced to disk. Which tool goes first alternates between runs (the second finds a warm cache).
The machine is shared: compare the ratios, not the absolute numbers. The lab's repository
keeps its retention (2 full backups): older lab backups are expired by the benchmark's.

Run as root with the lab deployed:  test/bench/bench_backup.py [--runs 3] [--scale 70]
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
from labtools import lab, leader, salt_json, sh, wait_healthy  # noqa: E402

SCRATCH = "/var/tmp/pgcluster-bench"  # on pg2; removed before and after every measure
AS_POSTGRES = "cd / && runuser -u postgres --"
# pg_basebackup authenticates as the replication role: the password goes from Patroni's
# config.yml into a 0600 pgpass file on pg2 (never into a command line), removed at the end.
PGPASS = f"""umask 077; mkdir -p {SCRATCH}-auth && /opt/patroni/bin/python - <<'EOF'
import yaml
c = yaml.safe_load(open("/etc/patroni/config.yml"))["postgresql"]["authentication"]["replication"]
open("{SCRATCH}-auth/pgpass", "w").write("*:*:*:%s:%s\\n" % (c["username"], c["password"]))
EOF
chown -R postgres: {SCRATCH}-auth"""


def timed(host: str, script: str, timeout: float = 1800) -> float:
    t = time.monotonic()
    sh(host, script, timeout=timeout)
    return time.monotonic() - t


def clean(host: str = "pg2") -> None:
    sh(host, f"rm -rf {SCRATCH} && install -d -o postgres -g postgres {SCRATCH}")


def basebackup(src: str, fmt: str) -> float:
    clean()
    opts = "-Ft --compress=server-zstd:3" if fmt == "tar" else "-Fp"
    return timed("pg2", f"{AS_POSTGRES} env PGPASSFILE={SCRATCH}-auth/pgpass /usr/lib/postgresql/15/bin/pg_basebackup "
                        f"-h {src} -U replicator -D {SCRATCH}/bb -X stream -c fast {opts}")  # fmt: skip


def untar() -> float:
    sh("pg2", f"install -d -o postgres -g postgres {SCRATCH}/untar")
    bb, to = f"{SCRATCH}/bb", f"{SCRATCH}/untar"
    return timed("pg2", f"{AS_POSTGRES} bash -c 'tar --zstd -xf {bb}/base.tar.zst -C {to} && "
                        f"tar -xf {bb}/pg_wal.tar -C {to}/pg_wal && sync -f {to}'")  # fmt: skip


def pgbackrest_backup(kind: str) -> tuple[float, dict]:
    """pgBackRest itself on the backup host (no Salt start-up in the figure); returns the new backup."""
    seconds = timed("backup", f"cd / && runuser -u pgbackrest -- pgbackrest --stanza=main --type={kind} "
                              "--log-level-console=warn backup")  # fmt: skip
    return seconds, salt_json("backup", "pgbackrest.info", "main")["backup"]["backups"][-1]


def pgbackrest_restore(label: str) -> float:
    clean()
    sh("pg2", f"install -d -m 0700 -o postgres -g postgres {SCRATCH}/restore")
    return timed("pg2", f"{AS_POSTGRES} pgbackrest --stanza=main --set={label} --pg1-path={SCRATCH}/restore "
                        "--log-level-console=warn restore")  # fmt: skip


def row(name: str, seconds: list[float], mb: float, base: list[float] | None = None) -> str:
    med = statistics.median(seconds)
    ratio = f"{statistics.median(base) / med:6.2f}x" if base else "       "
    return (f"{name:52} {med:7.1f} {min(seconds):7.1f} {max(seconds):7.1f}   {mb / med:7.1f} "
            f"{mb / max(seconds):7.1f} {mb / min(seconds):7.1f}  {ratio}")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scale", type=int, default=70)
    args = ap.parse_args()
    lab("up")
    wait_healthy(2, timeout=300)
    src = leader()
    if src == "pg2":  # pg2 is where the copies land: measure against another leader
        lab("run", "pgcluster.switchover", "main", "candidate=pg1", timeout=180)
        src = leader()
    res: dict[str, list[float]] = {k: [] for k in ("br_backup", "br_incr", "bb_tar", "bb_plain", "br_restore", "untar")}
    sizes: list[dict] = []
    incr_mb: list[float] = []
    try:
        print(f"pgbench -i -s {args.scale} on {src} ...", flush=True)
        sh(src, f"{AS_POSTGRES} dropdb --if-exists bench && {AS_POSTGRES} createdb bench && "
                f"{AS_POSTGRES} pgbench -i -q -s {args.scale} bench", timeout=3600)  # fmt: skip
        sh(src, f"{AS_POSTGRES} psql -XAtq -c CHECKPOINT")
        wait_healthy(2, timeout=600)
        sh("pg2", PGPASS)
        for i in range(args.runs):
            # Alternate who goes first: the second reads the leader's files from a warm cache.
            for tool in ("pgbackrest", "basebackup") if i % 2 == 0 else ("basebackup", "pgbackrest"):
                if tool == "pgbackrest":
                    seconds, new = pgbackrest_backup("full")
                    res["br_backup"].append(seconds)
                    sizes.append(new)
                    sh(src, f"{AS_POSTGRES} pgbench -n -c 4 -T 5 bench >/dev/null")  # some changes for the incr
                    seconds, incr = pgbackrest_backup("incr")
                    res["br_incr"].append(seconds)
                    incr_mb.append(incr["repo_size"] / 2**20)
                    res["br_restore"].append(pgbackrest_restore(new["label"]))
                else:
                    res["bb_tar"].append(basebackup(src, "tar"))
                    res["untar"].append(untar())
                    res["bb_plain"].append(basebackup(src, "plain"))
            print(f"run {i + 1}/{args.runs}: " + json.dumps({k: round(v[-1], 1) for k, v in res.items()}), flush=True)
    finally:
        sh("pg2", f"rm -rf {SCRATCH} {SCRATCH}-auth")
        sh(src, f"{AS_POSTGRES} dropdb --if-exists bench", check=False)
    mb = statistics.median(s["size"] for s in sizes) / 2**20
    repo_mb = statistics.median(s["repo_size"] for s in sizes) / 2**20
    print()
    print(f"database (pgbench scale {args.scale}, all databases): {mb:.0f} MiB; pgBackRest repository copy: "
          f"{repo_mb:.0f} MiB ({repo_mb / mb:.0%}), an incr: {statistics.median(incr_mb):.1f} MiB; runs: {args.runs}; "
          f"leader {src}, copies land on pg2")  # fmt: skip
    print(f"{'':52} {'seconds':^23}   {'MiB/s':^23}  {'speed vs':>7}")
    print(f"{'operation':52} {'median':>7} {'min':>7} {'max':>7}   {'median':>7} {'worst':>7} {'best':>7}  "
          f"{'pg_bb':>7}")  # fmt: skip
    print(row("backup  pgBackRest full (to backup host, zstd 3)", res["br_backup"], mb, res["bb_tar"]))
    print(row("backup  pgBackRest incr (after 5 s of pgbench writes)", res["br_incr"], mb, res["bb_tar"]))
    print(row("backup  pg_basebackup -Ft server-zstd:3 (baseline)", res["bb_tar"], mb))
    print(row("backup  pg_basebackup -Fp (plain copy)", res["bb_plain"], mb, res["bb_tar"]))
    print(row("restore pgBackRest restore (repo -> pg2)", res["br_restore"], mb, res["bb_plain"]))
    print(row("restore pg_basebackup -Fp (leader -> pg2, baseline)", res["bb_plain"], mb))
    print(row("restore untar the -Ft zstd backup (local on pg2)", res["untar"], mb, res["bb_plain"]))
    print("speed vs pg_bb: the baseline's median seconds over this row's (above 1: faster than pg_basebackup).")
    print("MiB/s is the whole database's size over the time, for an incr too. A pgBackRest backup also waits")
    print("until its last WAL segment is in the repository; pg_basebackup -X stream copies the WAL itself.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
