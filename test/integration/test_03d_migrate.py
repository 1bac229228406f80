"""Migrating the legacy host's standalone PostgreSQL into the cluster: the preflight
(``salt-run migrate.check``) against the real source, as Debian left it and then prepared; a
logical migration started, followed and aborted (``migrate.start``, ``status``, ``abort``), then
cut over with its verification (``migrate.cutover``).

(Before test_07_ports, which takes the shared lab down at its end.)
"""

from __future__ import annotations

import json
import time

import pytest
from labtools import ADDRESS, AckWriter, lab, leader, local_pillar, sh, wait_for
from migratetools import (
    SHOP_PASSWORD,
    SOURCE,
    apply_states,
    check,
    declare,
    direct_write_refused,
    on_cluster,
    on_legacy,
    run,
    shop_routes,
    thaw_legacy,
    via_pgbouncer,
    wait_ready,
)


@pytest.fixture(scope="module")
def legacy(deployed):
    """The legacy host's server as Debian installed it (settings reset, restarted); afterwards a
    started migration aborted and the migrate block removed."""
    on_legacy("ALTER SYSTEM RESET ALL")
    sh("legacy", "systemctl restart postgresql@15-main")
    on_legacy("DROP TABLE IF EXISTS acks", "shop")  # the writer's, of an earlier run
    # Declared once with its highstate (the members admit PgBouncer to shop, PgBouncer serves it).
    declare({"source": "legacy", "mode": "logical", "databases": ["shop"]})
    apply_states()
    yield
    declare({"source": "legacy", "mode": "logical", "databases": ["shop"]})
    lab("run", "migrate.abort", "main", check=False)
    declare(None)
    apply_states()
    # A cutover leaves the source read-only and the copy on the cluster: back as before.
    thaw_legacy()
    on_legacy("ALTER SYSTEM RESET ALL; SELECT pg_reload_conf()")
    on_legacy("DROP TABLE IF EXISTS acks", "shop")
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
    declare({"source": "legacy", "mode": "physical", "databases": ["shop"]})
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
    # Role shop is declared in pillar: the members' highstate made it, with the source's verifier.
    assert out["created"] == {"roles": [], "databases": ["shop"], "subscriptions": ["shop"]}

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
    # The copy belongs to the source's owner, whose verifier on the cluster is the source's.
    assert on_cluster("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'orders'") == "shop"
    verifier = "SELECT rolpassword FROM pg_authid WHERE rolname = 'shop'"
    assert on_cluster(verifier, db="postgres") == on_legacy(verifier) != ""


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
    # A PgBouncer host (admitted for shop's own roles, by password) cannot use the migration role.
    assert 'hostssl "shop" all 198.18.0.30/32 scram-sha-256' in hba
    refused = sh("app1", "psql -X 'host=198.18.0.40 dbname=shop user=pgcluster_migrate sslmode=require "
                         "connect_timeout=5' -c 'SELECT 1'", check=False)  # fmt: skip
    assert refused.returncode != 0 and "pg_hba.conf rejects connection" in refused.stderr


def test_abort_takes_everything_back_and_the_source_keeps_serving(source_before):
    rc, out = run("abort")
    assert rc == 0 and out["aborted"] is True, out
    assert (sh("legacy", SOURCE_FILES).stdout, on_legacy(SOURCE_STATE)) == source_before
    assert on_legacy("SELECT count(*) FROM pg_publication", "shop") == "0"
    assert on_cluster("SELECT count(*) FROM pg_database WHERE datname = 'shop'", db="postgres") == "0"
    assert on_cluster("SELECT count(*) FROM pg_roles WHERE rolname = 'shop'", db="postgres") == "1"  # pillar's
    assert on_legacy("INSERT INTO customers (name) VALUES ('after abort') RETURNING 1", "shop") == "1"
    rc, out = run("status")
    assert rc != 0 and "no migration of main is started" in out["error"]


def test_cutover_needs_confirm_and_a_finished_copy(source_before):
    declare({"source": "legacy", "mode": "logical", "databases": ["shop"]})
    # The table the writer inserts into, owned by the application's role.
    on_legacy("CREATE TABLE IF NOT EXISTS acks (id bigint PRIMARY KEY, at timestamptz DEFAULT now());"
              "ALTER TABLE acks OWNER TO shop", "shop")  # fmt: skip
    assert run("start")[0] == 0
    rc, out = run("cutover")
    assert rc != 0 and "makes legacy read-only" in out["error"] and "confirm=True" in out["error"]
    wait_ready()


def test_pgbouncer_sends_the_migrated_database_to_its_source(source_before):
    """While shop is declared under migrate, every PgBouncer sends it to the legacy host, and role
    shop logs in there with its own password (the verifier declared is the source's)."""
    assert set(shop_routes().values()) == {SOURCE}
    assert via_pgbouncer("SELECT inet_server_addr()") == SOURCE
    # The routing file says so; the cluster's own databases still go to the leader.
    routing = sh("app1", "cat /etc/pgbouncer/routing-main.ini").stdout
    assert "; cut over none." in routing.splitlines()[0]
    assert f"app = host={ADDRESS[leader()]}" in routing


def test_a_cutover_that_finds_a_difference_gives_the_source_back(source_before):
    """A row changed on the cluster's copy behind the subscription's back: verification names the
    table, the source takes writes again, PgBouncer still sends shop there, the migration goes on."""
    on_cluster("UPDATE customers SET name = 'changed behind its back' WHERE id = 1")
    res = lab("run", "migrate.cutover", "main", "confirm=True", "--out=json", check=False, timeout=900)
    out = json.loads(res.stdout)
    assert res.returncode != 0
    assert "verification failed: database shop: table public.customers has the same" in out["error"]
    assert "legacy takes writes again" in out["error"]
    assert on_legacy("INSERT INTO customers (name) VALUES ('after a failed cutover') RETURNING 1", "shop") == "1"
    assert direct_write_refused("INSERT INTO customers (name) VALUES ('directly, after a failed cutover')") == ""
    # Resumed and still routed to the source: a client through PgBouncer writes there.
    assert set(shop_routes().values()) == {SOURCE}
    assert via_pgbouncer("INSERT INTO acks (id) VALUES (-1) RETURNING inet_server_addr()") == SOURCE
    on_cluster("UPDATE customers SET name = 'customer 1' WHERE id = 1")
    wait_ready()


def test_cutover_under_a_writer_loses_nothing_and_moves_pgbouncer(source_before):
    """A writer inserts through app1's PgBouncer all along: the cutover pauses it (no failed
    transaction), every acknowledged id is on the cluster, PgBouncer sends shop to the leader;
    the copy is verified, the source left read-only, the sequences continue after its ids."""
    on_legacy("INSERT INTO orders (customer_id, amount) SELECT 1 + i % 100, i FROM generate_series(1, 200) i", "shop")
    writer = AckWriter("app1", "host=127.0.0.1 port=6432 dbname=shop user=shop", "acks", password=SHOP_PASSWORD)
    time.sleep(3)
    res = lab("run", "migrate.cutover", "main", "confirm=True", "--out=json", check=False, timeout=900)
    time.sleep(3)
    report = writer.stop()
    out = json.loads(res.stdout)
    assert res.returncode == 0, out
    assert out["cut_over"] is True and out["databases"]["shop"]["tables"] == 3
    assert report["failed"] == [] and len(report["acked"]) > 20 and not report["stuck"], report["failed"][:5]
    lead = leader()
    assert writer.missing_on(lead, "shop") == []
    # Written on both sides: before the cutover on the source, after it on the cluster only.
    on_source = int(on_legacy("SELECT count(*) FROM acks WHERE id > 0", "shop"))
    assert 0 < on_source < len(report["acked"])
    # The writer waited in PgBouncer for about as long as the cutover kept it paused.
    assert report["longest_s"] <= out["timings"]["paused_s"] + 1, (report["longest_s"], out["timings"])
    assert set(shop_routes().values()) == {ADDRESS[lead]}
    assert via_pgbouncer("SELECT inet_server_addr()") == ADDRESS[lead]
    assert "; cut over shop." in sh("app1", "cat /etc/pgbouncer/routing-main.ini").stdout.splitlines()[0]
    # The role came over with the source's own verifier: its password works on the cluster itself.
    assert on_cluster("SELECT rolpassword FROM pg_authid WHERE rolname = 'shop'", db="postgres") == on_legacy(
        "SELECT rolpassword FROM pg_authid WHERE rolname = 'shop'"
    )
    for table in TABLES:
        assert on_cluster(CHECKSUM.format(table)) == on_legacy(CHECKSUM.format(table), "shop")
    # The source takes no more writes; the cluster's sequences continue after the source's ids.
    refused = sh("legacy", "su postgres -c \"psql -X -d shop -c \\\"INSERT INTO customers (name) VALUES ('x')\\\"\"",
                 check=False)  # fmt: skip
    assert refused.returncode != 0 and "read-only transaction" in refused.stderr
    # A client that comes in directly and asks for a read-write transaction is not let in.
    assert "pg_hba.conf rejects connection" in direct_write_refused("INSERT INTO customers (name) VALUES ('x')")
    top = int(on_legacy("SELECT max(id) FROM orders", "shop"))
    assert int(on_cluster("INSERT INTO orders (customer_id, amount) VALUES (1, 1) RETURNING id")) > top
    # Nothing of the migration is left: no subscription, no slot or role on the source.
    assert on_cluster("SELECT count(*) FROM pg_subscription") == "0"
    assert on_legacy(SOURCE_STATE) == source_before[1]
    assert run("status")[0] != 0


def test_the_cutover_holds_until_the_migrate_block_goes(source_before):
    """A reconcile or a highstate after the cutover keeps shop on the leader; once the operator
    moves shop to the cluster's databases and drops the migrate block, it stays there."""
    lab("run", "pgcluster.reconcile", "--out=json")
    apply_states()
    assert set(shop_routes().values()) == {ADDRESS[leader()]}
    verifier = on_legacy("SELECT rolpassword FROM pg_authid WHERE rolname = 'shop'")
    main = {"roles": {"shop": {"verifier": verifier}}, "databases": {"shop": {"owner": "shop"}}}
    local_pillar({"clusters": {"main": main}})
    apply_states()
    assert set(shop_routes().values()) == {ADDRESS[leader()]}
    assert "cut over" not in sh("app1", "cat /etc/pgbouncer/routing-main.ini").stdout
    assert via_pgbouncer("SELECT count(*) > 0 FROM acks") == "t"
