"""The migration's own judgement (the migrate runner, its cutover util): WAL positions compared as
numbers, every difference between the source's and the cluster's fingerprints named, copies
reported per member, the row hash chosen, a status that survives a standby leader that is down."""

from __future__ import annotations

import pytest
from pgctest import load_module

migrate = load_module("runners", "migrate")
cutover = load_module("utils", "pgcluster_cutover")


def fingerprint(rows: int = 3, digest: str = "123", seq: int = 10, schema: str = "abc", view_rows: int = 2) -> dict:
    return {"shop": {"tables": {"public.orders": {"rows": rows, "checksum": digest}},
                     "views": {"public.daily": {"rows": view_rows, "checksum": "7"}} if view_rows else {},
                     "sequences": {"public.orders_id_seq": seq}, "schema": schema}}  # fmt: skip


@pytest.mark.parametrize("lsn, number", [("0/0", 0), ("0/16B3748", 0x16B3748), ("1/0", 1 << 32), (None, -1)])
def test_wal_positions_compare_as_numbers(lsn, number):
    assert cutover.lsn(lsn) == number
    assert cutover.lsn("0/FFFFFFFF") < cutover.lsn("1/0")


def test_equal_fingerprints_have_no_difference():
    assert cutover.differences(fingerprint(), fingerprint()) == []
    # A sequence ahead on the cluster is fine: ids continue without collision.
    assert cutover.differences(fingerprint(), fingerprint(seq=11)) == []


@pytest.mark.parametrize(
    "cluster, message",
    [
        (fingerprint(rows=2), "database shop: table public.orders has 2 rows on the cluster, 3 on the source"),
        (fingerprint(digest="9"), "table public.orders has the same 3 rows on both sides but other content"),
        (fingerprint(seq=9), "database shop: sequence public.orders_id_seq is at 9 on the cluster, 10 on the source"),
        (fingerprint(schema="xyz"), "database shop: the columns of its tables differ"),
        ({}, "database shop: table public.orders is missing on the cluster"),
        (
            fingerprint(view_rows=1),
            "database shop: materialized view public.daily has 1 rows on the cluster, 2 on the source",
        ),
        # Not refreshed on the cluster: not populated, so not fingerprinted there.
        (fingerprint(view_rows=0), "database shop: materialized view public.daily is missing on the cluster"),
    ],
)
def test_each_difference_is_named(cluster, message):
    assert [d for d in cutover.differences(fingerprint(), cluster) if d.endswith(message)] != []


# pgsql.basebackups as the functional test reads it from a real pg_basebackup (values of this lab).
COPY = {"phase": "streaming database files", "sent_bytes": 250_000_000, "total_bytes": 1_000_000_000,
        "estimated": False, "elapsed_s": 20.0}  # fmt: skip


def test_each_copy_is_named_by_member_with_its_share_and_eta():
    addresses = {"pg1": "198.18.0.11", "pg2": "198.18.0.12", "pg3": "198.18.0.13"}
    sent = {
        "legacy": [dict(COPY, client="198.18.0.11"), dict(COPY, client="local")],  # an operator's own copy: not ours
        "pg1": [dict(COPY, client="198.18.0.12", sent_bytes=0, phase="waiting for checkpoint to finish")],
    }
    out = migrate._copies(addresses, sent)
    assert set(out) == {"pg1", "pg2"}
    assert out["pg1"] == {"from": "legacy", "phase": "streaming database files", "copied_bytes": 250_000_000,
                          "total_bytes": 1_000_000_000, "copied_fraction": 0.25, "eta_seconds": 60}  # fmt: skip
    # Nothing sent yet: no ETA to give.
    assert out["pg2"]["from"] == "pg1" and out["pg2"]["copied_fraction"] == 0.0 and out["pg2"]["eta_seconds"] is None
    assert migrate._copies(addresses, {"legacy": []}) == {}


@pytest.mark.parametrize("mode, source, target, method", [
    ("physical", 15, 15, "record"), ("physical", 13, 13, "text"), ("physical", 15, None, "text"),
    # Logical: the cluster's enums (types made by its own schema restore) have other OIDs: their
    # tables as text, the others by record.
    ("logical", 15, 15, "portable"), ("logical", 13, 15, "text"),
])  # fmt: skip
def test_rows_are_hashed_by_record_from_14_on_portably_in_a_logical_copy(mode, source, target, method):
    assert migrate._row_hash({"major": source, "target": {"major": target}}, mode) == method


def test_status_names_a_standby_leader_whose_server_is_down_and_reports_the_rest(monkeypatch):
    """Patroni names a standby leader while its PostgreSQL restarts (a copy begun again after the
    source crashed): status says so instead of failing."""

    def shared(fun, *args, **kwarg):
        if fun == "call" and args[2] == "pgmigrate.physical_progress":
            return {"lsn": "0/5000000", "read_only": False, "slot": {"active": False}, "copies": []}
        if fun == "call" and args[2] == "pgsql.basebackups":
            raise migrate.MigrateError("pg1 does not answer as a server: psql: connection refused")
        raise AssertionError(fun)

    def physical(fun, ops, *args):
        if fun == "node":
            return {"role": "standby_leader" if args[0] == "pg1" else "replica", "state": "starting"}
        raise AssertionError(f"{fun} asked of a server that is down")

    monkeypatch.setattr(migrate, "_shared", shared)
    monkeypatch.setattr(migrate, "_physical", physical)
    model = {"hosts": {"pg1": "198.18.0.11", "pg2": "198.18.0.12"}}
    c = {"name": "main", "members": ["pg1", "pg2"], "port": 5432}
    rec = {"source": "legacy", "port": 5432, "slot": "pgcluster_main", "databases": ["shop"], "started": 0}
    out = migrate._status_physical(model, c, rec)
    assert out["standby_leader"] == "pg1" and out["streaming"] is False
    assert "connection refused" in out["problem"] and "lag_bytes" not in out
    assert out["members"]["pg2"] == {"role": "replica", "state": "starting"} and out["copying"] == {}
