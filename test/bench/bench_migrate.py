#!/opt/pgcluster-lab/venv/bin/python
"""Migrating the legacy host's database into the cluster (prints a table; asserts nothing).

The legacy host's `shop` database filled by `pgbench -i -s SCALE` (scale 70 is about 1 GB), then
in the same run, RUNS times each:
- **logical** (`salt-run migrate.start`, `status` until every table is ready, `cutover
  confirm=True`) while the application writes through app1's PgBouncer as role shop from the
  end of `start` on (which sends shop to the source until the cutover, then to the leader):
  pgbench (4 clients) and an
  insert-only writer that logs acknowledged ids (test/integration/ackwriter.py). Copy time, lag
  (bytes) just before the cutover, how long the source was read-only and clients paused (the
  cutover's own timings), the longest INSERT the writer saw, failed transactions (writer
  errors, pgbench clients aborted) and acknowledged ids missing on the cluster;
- **physical** (`migrate.start confirm=True`: the cluster emptied, then rebuilt as a standby
  cluster of the source; `status` until the standby leader's lag is small; `cutover
  confirm=True`: verified, promoted), with the same writers from the end of `start` on, the same
  figures (the copy: from `start` until every member streams);
- **baseline**, what a user would otherwise do: stop the application, `pg_dump -Fd -j2` from the
  source (run on the leader, over the lab network) and `pg_restore -j2` into the cluster, start
  the application again: the downtime is the dump plus the restore.
Between runs the copy is dropped from the cluster and the source made writable again (after a
physical run the cluster holds the source's catalog: a highstate of the members and PgBouncer
hosts gives it back the databases and roles pillar declares). For the
baseline's connection the bench adds a line to the source's pg_hba.conf (trust from the leader
for postgres, lab only) and removes it at the end.

Run as root with the lab deployed:  test/bench/bench_migrate.py [--scale 70] [--runs 3]
                                    [--modes logical,physical]
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
from benchtools import fmt  # noqa: E402
from labtools import ADDRESS, LAB, PGBOUNCERS, AckWriter, lab, leader, local_pillar, psql, sh  # noqa: E402
from migratetools import empty_cluster, thaw_legacy  # noqa: E402

HBA = "/etc/postgresql/15/main/pg_hba.conf"
MARK = "# pgcluster bench_migrate"
SOURCE = "198.18.0.40"  # the legacy host
SHOP_PASSWORD = "lab-shop-pw-2b7d"  # the legacy host's role shop (test/lab/legacy-setup.sh)
VIA_PGBOUNCER = "host=127.0.0.1 port=6432 dbname=shop user=shop"


def on_legacy(sql: str, db: str = "postgres") -> str:
    return sh(
        "legacy", f"su postgres -c 'psql -X -Atq -v ON_ERROR_STOP=1 -d {db}'", stdin=sql, timeout=3600
    ).stdout.strip()


def run(step: str, *args: str) -> dict:
    res = lab("run", f"migrate.{step}", "main", *args, "--out=json", check=False, timeout=7200)
    out = json.loads(res.stdout)
    if res.returncode != 0 and step != "status":
        raise SystemExit(f"migrate.{step}: {out}")
    return out


def declare(mode: str | None) -> None:
    """The pillar: role shop with the source's verifier, and the migrate block of MODE (None:
    none; without it, PgBouncer forgets an earlier cutover of shop)."""
    verifier = on_legacy("SELECT rolpassword FROM pg_authid WHERE rolname = 'shop'")
    main: dict = {"roles": {"shop": {"verifier": verifier}}}
    if mode:
        main["migrate"] = {"source": "legacy", "mode": mode, "databases": ["shop"]}
    local_pillar({"clusters": {"main": main}})


def apply_states() -> None:
    lab("salt", ",".join(PGBOUNCERS), "-L", "state.apply", "--out=json", "-t", "900", timeout=1200)


def prepare(scale: int) -> None:
    """The source ready for a logical migration, filled, its tables the application's; the
    migrate block declared, the PgBouncer hosts configured for shop."""
    on_legacy(
        "ALTER SYSTEM SET wal_level = 'logical'; ALTER SYSTEM SET listen_addresses = '*'; "
        "ALTER SYSTEM RESET default_transaction_read_only"
    )
    sh("legacy", "systemctl restart postgresql@15-main")
    sh("legacy", f"cd / && runuser -u postgres -- pgbench -i -q -s {scale} shop >/dev/null 2>&1", timeout=3600)
    on_legacy("ALTER TABLE pgbench_history REPLICA IDENTITY FULL; CREATE TABLE acks (id bigint PRIMARY KEY); "
              "DO $$ DECLARE t text; BEGIN FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
              "LOOP EXECUTE format('ALTER TABLE %I OWNER TO shop', t); END LOOP; END $$", "shop")  # fmt: skip
    declare("logical")
    apply_states()


def reset(mode: str = "logical") -> None:
    """The copy gone from the cluster, the source writable, no migration started, PgBouncer
    sending shop to the source again."""
    lab("run", "migrate.abort", "main", check=False)
    thaw_legacy()
    lead = leader()
    for sql in ("DROP DATABASE IF EXISTS shop WITH (FORCE)", "DROP DATABASE IF EXISTS shop_base WITH (FORCE)"):
        psql(lead, sql, db="postgres")  # role shop stays: pillar declares it (the highstate made it)
    declare(None)
    lab("run", "pgcluster.reconcile", "--out=json")
    declare(mode)
    if mode == "physical":  # a cluster that holds no user data; the members admit PgBouncer to shop
        empty_cluster()
    apply_states()
    lab("run", "pgcluster.reconcile", "--out=json")
    on_legacy("TRUNCATE acks", "shop")


def migrate(mode: str) -> dict:
    # The application goes through PgBouncer from the start on (start admits the PgBouncer hosts
    # on the source): it writes all through the copy and the cutover.
    t0 = time.monotonic()
    run("start", *(["confirm=True"] if mode == "physical" else []))
    load = subprocess.Popen([str(LAB), "exec", "app1", "--", "bash", "-c",
                             "read -r PGPASSWORD; export PGPASSWORD; "
                             f"exec pgbench -n -c 4 -j 2 -T 3600 '{VIA_PGBOUNCER}' 2>&1"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    load.stdin.write(SHOP_PASSWORD + "\n")
    load.stdin.close()
    writer = AckWriter("app1", VIA_PGBOUNCER, "acks", password=SHOP_PASSWORD, seconds=7200)
    try:
        while True:
            got = run("status")
            st = got if mode == "physical" else got["databases"]["shop"]
            copied = mode == "physical" or set(st["tables"].values()) == {"ready"}
            if copied and (st.get("lag_bytes") or 0) < 16 * 1024 * 1024:
                break
            time.sleep(1)
        copy_s = time.monotonic() - t0
        cut = run("cutover", "confirm=True")
        print(f"{mode} cutover: {cut['timings']}", flush=True)
        time.sleep(3)
    finally:
        report = writer.stop()
        sh("app1", "pkill -INT -x pgbench || true")
        out = load.stdout.read()
        load.wait(timeout=120)
    why = report["failed"][:3] + [line for line in out.splitlines() if "aborted" in line][:3]
    if why or report["stuck"]:
        print(f"failures: {why}, writer stuck after the stop: {report['stuck']}", flush=True)
    return {"copy_s": copy_s, "lag_bytes": st["lag_bytes"], "read_only_s": cut["timings"]["source_read_only_s"],
            "paused_s": cut["timings"]["paused_s"], "longest_insert_s": report["longest_s"],
            "failed": len(report["failed"]) + out.count("aborted") + report["stuck"],
            "missing": len(writer.missing_on(leader(), "shop")), "acked": len(report["acked"])}  # fmt: skip


def baseline(lead: str) -> dict:
    addr = ADDRESS[lead]
    sh("legacy", f"grep -q '{MARK}' {HBA} || sed -i '1i host shop postgres {addr}/32 trust {MARK}' {HBA}; "
                 "su postgres -c \"psql -qc 'SELECT pg_reload_conf()'\" >/dev/null")  # fmt: skip
    dump = "/var/lib/postgresql/bench-dump"
    t0 = time.monotonic()
    sh(lead, f"cd / && rm -rf {dump} && runuser -u postgres -- pg_dump -Fd -j2 -f {dump} -h {SOURCE} "
             "-U postgres shop", timeout=7200)  # fmt: skip
    t1 = time.monotonic()
    psql(lead, "CREATE DATABASE shop_base", db="postgres")
    sh(lead, f"cd / && runuser -u postgres -- pg_restore -j2 -d shop_base {dump} && rm -rf {dump}", timeout=7200)
    t2 = time.monotonic()
    return {"dump_s": t1 - t0, "restore_s": t2 - t1, "downtime_s": t2 - t0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=70)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--modes", default="logical,physical", help="which migrations to run, comma-separated")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if not modes or set(modes) - {"logical", "physical"}:
        raise SystemExit(f"--modes: {args.modes!r}: logical, physical or both")
    lead = leader()
    prepare(args.scale)
    size = on_legacy("SELECT pg_size_pretty(pg_database_size('shop'))")
    res: dict[str, list] = {}
    try:
        for i in range(args.runs):
            for mode in modes:
                reset(mode)
                for k, v in migrate(mode).items():
                    res.setdefault(f"{mode}:{k}", []).append(v)
            reset()
            for k, v in baseline(leader()).items():
                res.setdefault(k, []).append(v)
            print(f"run {i + 1}: " + ", ".join(f"{k} {v[-1]}" for k, v in res.items()), flush=True)
    finally:
        reset()
        declare(None)
        sh("legacy", f"sed -i '/{MARK}/d' {HBA}; su postgres -c \"psql -qc 'SELECT pg_reload_conf()'\" >/dev/null")
        local_pillar(None)
        # The legacy host as the lab set it up: no pgbench tables, Debian's settings.
        lab("salt", ",".join(PGBOUNCERS), "-L", "state.apply", "--out=json", "-t", "900", timeout=1200)
        psql(leader(), "DROP ROLE IF EXISTS shop", db="postgres")
        on_legacy("DROP TABLE IF EXISTS pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers, acks",
                  "shop")  # fmt: skip
        on_legacy("ALTER SYSTEM RESET ALL")
        sh("legacy", "systemctl restart postgresql@15-main")
    print(f"\nshop on legacy: {size} (pgbench -s {args.scale}), leader {lead}, {args.runs} runs: median [min-max]")

    def col(mode: str, key: str) -> str:
        return fmt(res[f"{mode}:{key}"]) if f"{mode}:{key}" in res else "-"

    rows = [("copy while the source serves (s)", "copy_s", None), ("lag just before the cutover (bytes)", "lag_bytes",
            None), ("source read-only / application down (s)", "read_only_s", "downtime_s"),
            ("  of which pg_dump -Fd -j2 (s)", None, "dump_s"), ("  of which pg_restore -j2 (s)", None, "restore_s"),
            ("clients paused in PgBouncer (s)", "paused_s", None),
            ("longest acknowledged INSERT (s)", "longest_insert_s", None),
            ("failed transactions (writer + pgbench)", "failed", None),
            ("acknowledged ids", "acked", None), ("  missing on the cluster", "missing", None)]  # fmt: skip
    print(f"{'':44}" + "".join(f"{m + ' (migrate.*)':>24}" for m in modes) + f"{'baseline (dump/restore)':>26}")
    for label, key, base in rows:
        cells = "".join(f"{col(m, key) if key else '-':>24}" for m in modes)
        other = fmt(res[base]) if base else ("all (stopped)" if key == "failed" else "-")
        print(f"{label:44}{cells}{other:>26}")
    for mode in modes:
        ratio = statistics.median(res["downtime_s"]) / statistics.median(res[f"{mode}:read_only_s"])
        print(f"the baseline's downtime is {ratio:.1f} x the {mode} cutover's read-only time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
