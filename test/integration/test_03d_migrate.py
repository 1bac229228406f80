"""Migrating the legacy host's standalone PostgreSQL into the cluster: the preflight
(``salt-run migrate.check``) against the real source, as Debian left it and then prepared; a
logical migration started, followed and aborted (``migrate.start``, ``status``, ``abort``), then
cut over with its verification (``migrate.cutover``).

(Before test_07_ports, which takes the shared lab down at its end.)
"""

from __future__ import annotations

import json

import pytest
from labtools import lab, leader, psql, sh, wait_for

LOCAL = "/srv/lab-pillar/pgcluster/local.sls"
SOURCE = "198.18.0.40"


def declare(migrate: dict | None) -> None:
    """Put MIGRATE under the main cluster's pillar (None: no migrate block) and refresh pillars."""
    if migrate is None:
        sh("salt", f"rm -f {LOCAL}")
    else:
        block = json.dumps({"pgcluster": {"clusters": {"main": {"migrate": migrate}}}})
        sh("salt", f"mkdir -p {LOCAL.rsplit('/', 1)[0]} && cat > {LOCAL}", stdin=block)
    lab("salt", "*", "saltutil.refresh_pillar", "wait=True", "--out=json")


def on_legacy(sql: str, db: str = "postgres") -> str:
    """SQL run in DB on the legacy server as its superuser (peer, over the socket); psql's -At output."""
    return sh("legacy", f"su postgres -c 'psql -X -Atq -v ON_ERROR_STOP=1 -d {db}'", stdin=sql).stdout.strip()


def check() -> tuple[int, dict]:
    res = lab("run", "migrate.check", "main", "--out=json", check=False)
    return res.returncode, json.loads(res.stdout)


@pytest.fixture(scope="module")
def legacy(deployed):
    """The legacy host's server as Debian installed it (settings reset, restarted); afterwards a
    started migration aborted and the migrate block removed."""
    on_legacy("ALTER SYSTEM RESET ALL")
    sh("legacy", "systemctl restart postgresql@15-main")
    yield
    declare({"source": "legacy", "mode": "logical", "databases": ["shop"]})
    lab("run", "migrate.abort", "main", check=False)
    declare(None)
    # A cutover leaves the source read-only and the copy on the cluster: back as before.
    on_legacy("ALTER SYSTEM RESET ALL; SELECT pg_reload_conf()")
    on_cluster("DROP DATABASE IF EXISTS shop WITH (FORCE)", db="postgres")
    on_cluster("DROP ROLE IF EXISTS shop", db="postgres")


def test_check_without_a_migrate_block_names_the_missing_block(legacy):
    declare(None)
    rc, out = check()
    assert rc != 0
    assert "declares no migration" in out["error"] and "pgcluster:clusters:main:migrate" in out["error"]


def test_check_of_a_stock_server_names_each_problem(legacy):
    declare({"source": "legacy", "mode": "logical", "databases": ["shop"]})
    rc, out = check()
    assert rc != 0 and out["ready"] is False
    assert out["version"].startswith("15.")
    assert out["databases"]["shop"]["tables"] == 2 and out["databases"]["shop"]["encoding"] == "UTF8"
    problems = "\n".join(out["problems"])
    # Debian's defaults: wal_level=replica, listening on localhost only.
    assert "legacy has wal_level=replica" in problems
    for host in ("pg1", "pg2", "pg3", "app1"):
        assert f"{host} cannot reach legacy's PostgreSQL at {SOURCE}:5432" in problems
    assert len(out["problems"]) == 5, out["problems"]  # nothing else stands in the way


def test_check_of_a_wrong_port_says_the_server_does_not_answer(legacy):
    declare({"source": "legacy", "port": 5439, "mode": "logical", "databases": ["shop"]})
    rc, out = check()
    assert rc != 0
    assert out["error"].startswith("source legacy, port 5439: ") and "5439" in out["error"]


def test_check_of_an_unknown_database_names_it(legacy):
    declare({"source": "legacy", "mode": "logical", "databases": ["shop", "nosuch"]})
    rc, out = check()
    assert rc != 0
    assert "database nosuch does not exist on legacy (it has: postgres, shop)" in out["problems"]


def test_check_of_a_prepared_server_is_ready(legacy):
    """The source prepared the way start needs it (logical WAL, listening on its address):
    nothing stands in the way, and check changed nothing on either side."""
    on_legacy("ALTER SYSTEM SET wal_level = 'logical'; ALTER SYSTEM SET listen_addresses = '*';")
    sh("legacy", "systemctl restart postgresql@15-main")
    declare({"source": "legacy", "mode": "logical", "databases": ["shop"]})
    slots = "SELECT count(*) FROM pg_replication_slots"
    before = on_legacy(slots)
    rc, out = check()
    assert (rc, out["problems"], out["ready"]) == (0, [], True)
    assert out["target"]["leader"] in ("pg1", "pg2", "pg3")
    assert set(out["target"]["free_bytes"]) == {"pg1", "pg2", "pg3"}
    assert on_legacy(slots) == before


def test_check_refuses_a_physical_migration_into_a_cluster_that_holds_data(legacy):
    declare({"source": "legacy", "mode": "physical"})
    rc, out = check()
    assert rc != 0
    assert [p for p in out["problems"] if "already holds user data" in p] == out["problems"] != []
    assert "migrate into an empty cluster or use mode logical" in out["problems"][0]


# ---- a logical migration: start, status, abort ---------------------------------------------------
CHECKSUM = "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM {} t"
TABLES = ("public.customers", "public.orders")
SOURCE_FILES = "cat /etc/postgresql/15/main/pg_hba.conf /etc/postgresql/15/main/pg_ident.conf"
SOURCE_STATE = ("SELECT current_setting('ssl_ca_file'), (SELECT count(*) FROM pg_replication_slots), "
                "(SELECT count(*) FROM pg_roles WHERE rolname = 'pgcluster_migrate')")  # fmt: skip


def on_cluster(sql: str, db: str = "shop") -> str:
    return psql(leader(), sql, db=db).stdout.strip()


def run(step: str) -> tuple[int, dict]:
    res = lab("run", f"migrate.{step}", "main", "--out=json", check=False, timeout=900)
    return res.returncode, json.loads(res.stdout)


@pytest.fixture(scope="module")
def source_before(legacy):
    """The source's configuration files and migration-related state before any start."""
    return sh("legacy", SOURCE_FILES).stdout, on_legacy(SOURCE_STATE)


def test_start_refuses_on_a_problem_and_changes_nothing(source_before):
    declare({"source": "legacy", "mode": "logical", "databases": ["shop", "nosuch"]})
    rc, out = run("start")
    assert rc != 0 and "nothing was started" in out["error"]
    assert "database nosuch does not exist on legacy (it has: postgres, shop)" in out["problems"]
    assert (sh("legacy", SOURCE_FILES).stdout, on_legacy(SOURCE_STATE)) == source_before
    assert on_cluster("SELECT count(*) FROM pg_database WHERE datname = 'shop'", db="postgres") == "0"


def test_start_copies_the_database_then_streams_its_changes(source_before):
    declare({"source": "legacy", "mode": "logical", "databases": ["shop"]})
    rc, out = run("start")
    assert rc == 0, out
    assert out["created"] == {"roles": ["shop"], "databases": ["shop"], "subscriptions": ["shop"]}

    def ready():
        rc, st = run("status")
        db = st["databases"]["shop"]
        return rc == 0 and set(db["tables"].values()) == {"ready"} and db["lag_bytes"] == 0

    wait_for("the copy of shop ready and caught up", ready, 180, 2)
    rc, st = run("status")
    db = st["databases"]["shop"]
    assert set(db["tables"]) == set(TABLES) and db["copied_fraction"] == 1 and db["streaming"] is True
    assert (db["lag_seconds"], db["eta_seconds"]) == (0, 0)
    # Changes made on the source while it keeps serving arrive on the cluster.
    on_legacy(
        "INSERT INTO customers (name) SELECT 'late ' || i FROM generate_series(1, 50) i;"
        "UPDATE orders SET amount = amount + 1 WHERE id % 10 = 0; DELETE FROM orders WHERE id % 7 = 0;",
        "shop",
    )
    for table in TABLES:
        want = on_legacy(CHECKSUM.format(table), "shop")
        wait_for(f"{table} equal on the cluster", lambda t=table, w=want: on_cluster(CHECKSUM.format(t)) == w, 60, 1)
    # The copy belongs to the source's owner, who has no password on the cluster yet.
    assert on_cluster("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'orders'") == "shop"
    assert on_cluster("SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = 'shop'") == "t"


def test_a_second_start_is_refused(source_before):
    rc, out = run("start")
    assert rc != 0 and "a migration of main from legacy was started at" in out["error"]


def test_the_members_reach_the_source_by_certificate_only(source_before):
    """The source lets the migration role in from the members' addresses with their certificates;
    without one (or from elsewhere) it is refused."""
    hba = sh("legacy", "cat /etc/postgresql/15/main/pg_hba.conf").stdout
    assert 'hostssl "postgres","shop" pgcluster_migrate 198.18.0.11/32 cert map=pgcluster-migrate' in hba
    refused = sh("pg1", "cd / && runuser -u postgres -- psql -X 'host=198.18.0.40 dbname=shop user=pgcluster_migrate "
                        "sslmode=require connect_timeout=5' -c 'SELECT 1'", check=False)  # fmt: skip
    assert refused.returncode != 0 and "certificate" in refused.stderr
    refused = sh("app1", "psql -X 'host=198.18.0.40 dbname=shop user=pgcluster_migrate sslmode=require "
                         "connect_timeout=5' -c 'SELECT 1'", check=False)  # fmt: skip
    assert refused.returncode != 0 and "no pg_hba.conf entry" in refused.stderr


def test_abort_takes_everything_back_and_the_source_keeps_serving(source_before):
    rc, out = run("abort")
    assert rc == 0 and out["aborted"] is True, out
    assert (sh("legacy", SOURCE_FILES).stdout, on_legacy(SOURCE_STATE)) == source_before
    assert on_legacy("SELECT count(*) FROM pg_publication", "shop") == "0"
    assert on_cluster("SELECT count(*) FROM pg_database WHERE datname = 'shop'", db="postgres") == "0"
    assert on_cluster("SELECT count(*) FROM pg_roles WHERE rolname = 'shop'", db="postgres") == "0"
    assert on_legacy("INSERT INTO customers (name) VALUES ('after abort') RETURNING 1", "shop") == "1"
    rc, out = run("status")
    assert rc != 0 and "no migration of main is started" in out["error"]


def wait_ready() -> None:
    def ready():
        rc, st = run("status")
        db = st.get("databases", {}).get("shop", {})
        return rc == 0 and set(db["tables"].values()) == {"ready"} and db["lag_bytes"] == 0

    wait_for("the copy of shop ready and caught up", ready, 180, 2)


def test_cutover_needs_confirm_and_a_finished_copy(source_before):
    declare({"source": "legacy", "mode": "logical", "databases": ["shop"]})
    assert run("start")[0] == 0
    rc, out = run("cutover")
    assert rc != 0 and "makes legacy read-only" in out["error"] and "confirm=True" in out["error"]
    wait_ready()


def test_a_cutover_that_finds_a_difference_gives_the_source_back(source_before):
    """A row changed on the cluster's copy behind the subscription's back: verification names the
    table, the source takes writes again, the migration goes on."""
    on_cluster("UPDATE customers SET name = 'changed behind its back' WHERE id = 1")
    res = lab("run", "migrate.cutover", "main", "confirm=True", "--out=json", check=False, timeout=900)
    out = json.loads(res.stdout)
    assert res.returncode != 0
    assert "verification failed: database shop: table public.customers has the same" in out["error"]
    assert "legacy takes writes again" in out["error"]
    assert on_legacy("INSERT INTO customers (name) VALUES ('after a failed cutover') RETURNING 1", "shop") == "1"
    on_cluster("UPDATE customers SET name = 'customer 1' WHERE id = 1")
    wait_ready()


def test_cutover_verifies_the_copy_and_leaves_the_source_read_only(source_before):
    on_legacy("INSERT INTO orders (customer_id, amount) SELECT 1 + i % 100, i FROM generate_series(1, 200) i", "shop")
    res = lab("run", "migrate.cutover", "main", "confirm=True", "--out=json", check=False, timeout=900)
    out = json.loads(res.stdout)
    assert res.returncode == 0, out
    assert out["cut_over"] is True and out["databases"]["shop"]["tables"] == 2
    assert out["roles_without_password"] == ["shop"]
    for table in TABLES:
        assert on_cluster(CHECKSUM.format(table)) == on_legacy(CHECKSUM.format(table), "shop")
    # The source takes no more writes; the cluster's sequences continue after the source's ids.
    refused = sh("legacy", "su postgres -c \"psql -X -d shop -c \\\"INSERT INTO customers (name) VALUES ('x')\\\"\"",
                 check=False)  # fmt: skip
    assert refused.returncode != 0 and "read-only transaction" in refused.stderr
    top = int(on_legacy("SELECT max(id) FROM orders", "shop"))
    assert int(on_cluster("INSERT INTO orders (customer_id, amount) VALUES (1, 1) RETURNING id")) > top
    # Nothing of the migration is left: no subscription, no slot or role on the source.
    assert on_cluster("SELECT count(*) FROM pg_subscription") == "0"
    assert on_legacy(SOURCE_STATE) == source_before[1]
    assert run("status")[0] != 0
