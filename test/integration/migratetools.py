"""What the migration tests share: the pillar's migrate block, SQL at both ends, the runner's steps."""

from __future__ import annotations

import json

from labtools import PGBOUNCERS, lab, leader, local_pillar, psql, salt_json, sh, wait_for

SOURCE = "198.18.0.40"
SHOP_PASSWORD = "lab-shop-pw-2b7d"  # the legacy host's role shop (test/lab/legacy-setup.sh)


def declare(migrate: dict | None) -> None:
    """Put MIGRATE under the main cluster's pillar with the source's role shop (its own verifier,
    as the README says to declare it; None: neither) and refresh pillars."""
    if migrate is None:
        local_pillar(None)
    else:
        verifier = on_legacy("SELECT rolpassword FROM pg_authid WHERE rolname = 'shop'")
        local_pillar({"clusters": {"main": {"migrate": migrate, "roles": {"shop": {"verifier": verifier}}}}})


def apply_states() -> None:
    """The members' pg_hba and the PgBouncer hosts' configuration (databases, roles) as the
    pillar says now: a highstate of those hosts."""
    lab("salt", ",".join(PGBOUNCERS), "-L", "state.apply", "--out=json", "--static", "-t", "900", timeout=1200)


def via_pgbouncer(sql: str) -> str:
    """SQL run in database shop as role shop through app1's PgBouncer (password on stdin)."""
    script = ("read -r PGPASSWORD; export PGPASSWORD; psql -XAtq -v ON_ERROR_STOP=1 "
              f"'host=127.0.0.1 port=6432 dbname=shop user=shop' -c {json.dumps(sql)}")  # fmt: skip
    return sh("app1", script, stdin=SHOP_PASSWORD + "\n").stdout.strip()


def shop_routes() -> dict[str, str | None]:
    """{PgBouncer host: address it sends database shop to}."""
    ret = salt_json(",".join(PGBOUNCERS), "-L", "pgbouncer.targets", "main", check=False)
    return {h: (r or {}).get("shop") if isinstance(r, dict) else None for h, r in ret.items()}


def on_legacy(sql: str, db: str = "postgres") -> str:
    """SQL run in DB on the legacy server as its superuser (peer, over the socket); psql's -At output."""
    return sh("legacy", f"su postgres -c 'psql -X -Atq -v ON_ERROR_STOP=1 -d {db}'", stdin=sql).stdout.strip()


def thaw_legacy() -> None:
    """The legacy server writable and open to clients again after a cutover froze it."""
    lab("salt", "legacy", "pgmigrate.thaw", "--out=json")


def direct_write_refused(sql: str) -> str:
    """psql's error when role shop, from app1, writes SQL to database shop on the legacy server
    directly (not through PgBouncer) with ``BEGIN READ WRITE``; "" when it went through. Over TLS
    when the server offers it (lent for the migration only)."""
    script = ("read -r PGPASSWORD; export PGPASSWORD; psql -XAtq -v ON_ERROR_STOP=1 "
              f"'host={SOURCE} dbname=shop user=shop sslmode=prefer connect_timeout=10' "
              f"-c 'BEGIN READ WRITE' -c {json.dumps(sql)} -c COMMIT")  # fmt: skip
    res = sh("app1", script, stdin=SHOP_PASSWORD + "\n", check=False)
    return "" if res.returncode == 0 else res.stderr.strip()


def check() -> tuple[int, dict]:
    res = lab("run", "migrate.check", "main", "--out=json", check=False)
    return res.returncode, json.loads(res.stdout)


def on_cluster(sql: str, db: str = "shop") -> str:
    return psql(leader(), sql, db=db).stdout.strip()


def run(step: str, *args: str) -> tuple[int, dict]:
    """salt-run migrate.STEP main ARGS: its exit code and answer."""
    res = lab("run", f"migrate.{step}", "main", *args, "--out=json", check=False, timeout=900)
    return res.returncode, json.loads(res.stdout)


def wait_ready(db: str = "shop") -> None:
    """Until every table of DB is copied and the subscription has caught up."""

    def ready():
        rc, st = run("status")
        got = st.get("databases", {}).get(db, {})
        return rc == 0 and set(got.get("tables", {}).values()) == {"ready"} and got.get("lag_bytes") == 0

    wait_for(f"the copy of {db} ready and caught up", ready, 180, 2)


def empty_cluster() -> None:
    """Every table and materialized view of every database on the cluster dropped, every database
    pillar does not declare dropped (earlier modules' data): a cluster that holds no user data."""
    lead = leader()
    dbs = psql(lead, "SELECT datname FROM pg_database WHERE datallowconn AND datname NOT IN ('template1')",
               db="postgres").stdout.split()  # fmt: skip
    for db in dbs:
        if db not in ("postgres", "app"):
            psql(lead, f'DROP DATABASE "{db}" WITH (FORCE)', db="postgres")
            continue
        drops = psql(lead, "SELECT format('DROP %s IF EXISTS %I.%I CASCADE;', CASE c.relkind WHEN 'm' THEN "
                           "'MATERIALIZED VIEW' ELSE 'TABLE' END, n.nspname, c.relname) FROM pg_class c JOIN "
                           "pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'm') AND NOT "
                           "c.relispartition AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND "
                           "n.nspname !~ '^pg_'", db=db).stdout  # fmt: skip
        if drops.strip():
            psql(lead, drops, db=db)
