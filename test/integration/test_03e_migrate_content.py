"""Migrating awkward content in logical mode: a table without a key, a large object (both named by
the preflight), then a contrib extension (hstore), a second schema, a partitioned table, a
sequence owned by a column and one owned by none, a materialized view; the source crashing
while the copy runs. Every relation verified at the cutover.

(After test_03d_migrate, whose teardown leaves the legacy host as set up; before test_07_ports.)
"""

from __future__ import annotations

import pytest
from labtools import sh, wait_for
from migratetools import apply_states, check, declare, on_cluster, on_legacy, run, thaw_legacy, wait_ready

ODD = """
CREATE EXTENSION hstore;
CREATE SCHEMA sales AUTHORIZATION shop;
SET ROLE shop;
CREATE TABLE events (at timestamptz NOT NULL DEFAULT now(), what text, tags hstore);
CREATE TABLE sales.orders (id bigserial, day date NOT NULL, amount numeric(12, 2), PRIMARY KEY (id, day))
  PARTITION BY RANGE (day);
CREATE TABLE sales.orders_h1 PARTITION OF sales.orders FOR VALUES FROM ('2026-01-01') TO ('2026-07-01');
CREATE TABLE sales.orders_h2 PARTITION OF sales.orders FOR VALUES FROM ('2026-07-01') TO ('2027-01-01');
CREATE SEQUENCE sales.invoice_no START 1000;
INSERT INTO sales.orders (day, amount) SELECT date '2026-01-01' + i % 360, i * 1.5 FROM generate_series(1, 500) i;
INSERT INTO events (what, tags) SELECT 'event ' || i, hstore('n', i::text) FROM generate_series(1, 200000) i;
SELECT nextval('sales.invoice_no') FROM generate_series(1, 5);
CREATE MATERIALIZED VIEW sales.daily AS SELECT day, sum(amount) AS total, count(*) AS n FROM sales.orders GROUP BY day;
SELECT lo_from_bytea(0, 'a large object');
"""
MIGRATE = {"source": "legacy", "mode": "logical", "databases": ["odd"]}
# Order-free checksums of whole relations (a partitioned table through its parent, and one leaf).
RELATIONS = ("public.events", "sales.orders", "sales.orders_h2", "sales.daily")
CHECKSUM = "SELECT count(*) || ':' || coalesce(sum(hashtextextended(t::text, 0)), 0) FROM {} t"


def on_odd(sql: str) -> str:
    return on_legacy(sql, "odd")


@pytest.fixture(scope="module")
def odd(deployed):
    """Database odd (owner shop) on the legacy host, prepared for logical replication; the
    cluster told of it (pillar and highstate). Afterwards everything gone again."""
    on_legacy("ALTER SYSTEM RESET ALL; ALTER SYSTEM SET wal_level = 'logical'; ALTER SYSTEM SET listen_addresses = '*'")
    legacy_restart()
    on_legacy("DROP DATABASE IF EXISTS odd WITH (FORCE)")
    on_legacy("CREATE DATABASE odd OWNER shop")
    on_odd(ODD)
    declare(MIGRATE)
    apply_states()
    yield
    run("abort")
    declare(None)
    apply_states()
    thaw_legacy()
    on_legacy("ALTER SYSTEM RESET ALL")
    legacy_restart()
    on_legacy("DROP DATABASE IF EXISTS odd WITH (FORCE)")
    on_cluster("DROP DATABASE IF EXISTS odd WITH (FORCE)", db="postgres")
    on_cluster("DROP ROLE IF EXISTS shop", db="postgres")


def legacy_restart() -> None:
    sh("legacy", "systemctl restart postgresql@15-main")


def test_check_names_the_table_without_a_key_and_the_large_object(odd):
    rc, out = check()
    assert rc != 0
    assert out["problems"] == [
        "database odd: table public.events has no primary key or replica identity: logical replication cannot "
        "carry its UPDATE and DELETE (add a key or REPLICA IDENTITY FULL)",
        "database odd has 1 large objects: logical replication does not carry them (use mode physical)",
    ]
    assert sorted(out["databases"]["odd"]["extensions"]) == ["hstore"]


def test_the_source_crashing_during_the_copy_is_said_and_the_copy_goes_on(odd):
    on_odd("ALTER TABLE events REPLICA IDENTITY FULL; SELECT lo_unlink(oid) FROM pg_largeobject_metadata")
    assert check()[1]["problems"] == []
    rc, out = run("start")
    assert rc == 0, out
    sh("legacy", "systemctl kill -s KILL postgresql@15-main")
    rc, out = run("status")
    assert rc != 0 and out["error"].startswith("legacy: "), out
    sh("legacy", "systemctl start postgresql@15-main")
    wait_ready("odd")
    assert on_odd("SELECT count(*) FROM events") == on_cluster("SELECT count(*) FROM events", db="odd") == "200000"


def test_every_relation_kind_is_carried_and_verified(odd):
    on_odd(
        "UPDATE events SET what = 'changed' WHERE (tags -> 'n')::int % 1000 = 0;"
        "DELETE FROM events WHERE (tags -> 'n')::int % 999 = 0;"
        "INSERT INTO sales.orders (day, amount) SELECT date '2026-08-01' + i, i FROM generate_series(1, 30) i;"
        "SELECT nextval('sales.invoice_no'); REFRESH MATERIALIZED VIEW sales.daily;"
    )
    rc, out = run("cutover", "confirm=True")
    assert rc == 0, out
    assert out["databases"]["odd"] == {"tables": 2, "rows": 200000 - 200 + 530, "sequences": 2}, out["databases"]
    for rel in RELATIONS:
        assert on_cluster(CHECKSUM.format(rel), db="odd") == on_odd(CHECKSUM.format(rel)), rel
    # The materialized view is populated on the cluster; both sequences continue after the source's.
    assert on_cluster("SELECT count(*) > 0 FROM sales.daily", db="odd") == "t"
    top = int(on_odd("SELECT last_value FROM sales.invoice_no"))
    assert int(on_cluster("SELECT nextval('sales.invoice_no')", db="odd")) > top
    top = int(on_odd("SELECT max(id) FROM sales.orders"))
    new = on_cluster("INSERT INTO sales.orders (day, amount) VALUES ('2026-09-09', 1) RETURNING id", db="odd")
    assert int(new) > top
    assert on_cluster("SELECT extname FROM pg_extension WHERE extname = 'hstore'", db="odd") == "hstore"
    wait_for("no migration left", lambda: run("status")[0] != 0, 10)
