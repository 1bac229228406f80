"""pgmigrate.fingerprint against a real PostgreSQL 15 (the functional server): rows hashed by
record (each column's own extended hash) or as text, the same rows giving the same checksum
wherever they are stored, a table whose column type has no hash falling back to text."""

from __future__ import annotations

import pytest


@pytest.fixture()
def shop(server, pgmigrate):
    """Two more tables in shop: a copy of customers (other storage, same rows) and one with json."""
    q = pgmigrate.__salt__["pgsql.query"]
    port = server["port"]
    q("CREATE TABLE public.customers_copy AS SELECT * FROM public.customers ORDER BY id DESC; "
      "CREATE TABLE public.docs (id int, body json); INSERT INTO public.docs VALUES (1, '{\"a\": 1}'), (2, '[]')",
      port=port, dbname="shop")  # fmt: skip
    yield q
    q("DROP TABLE public.customers_copy, public.docs", port=port, dbname="shop")


def test_rows_hashed_by_record_where_every_type_has_a_hash_else_as_text(server, pgmigrate, shop):
    by_record = pgmigrate.fingerprint(["shop"], port=server["port"], row_hash="record")["shop"]["tables"]
    as_text = pgmigrate.fingerprint(["shop"], port=server["port"])["shop"]["tables"]
    customers, copy, docs = (by_record[f"public.{t}"] for t in ("customers", "customers_copy", "docs"))
    assert customers["hash"] == "record" and customers["rows"] == 1000
    # The same rows in another table, in another physical order: the same checksum.
    assert (copy["rows"], copy["checksum"]) == (customers["rows"], customers["checksum"])
    # json has no hash function: that table is hashed as text, the same as the text method says.
    assert docs["hash"] == "text" and docs == as_text["public.docs"]
    assert as_text["public.customers"]["hash"] == "text" and as_text["public.customers"]["rows"] == 1000
    assert as_text["public.customers"]["checksum"] != customers["checksum"]
    # One row changed: the checksum moves.
    shop("UPDATE public.customers_copy SET name = 'changed' WHERE id = 7", port=server["port"], dbname="shop")
    again = pgmigrate.fingerprint(["shop"], port=server["port"], row_hash="record")["shop"]["tables"]
    assert again["public.customers_copy"]["checksum"] != customers["checksum"]


def test_waiting_for_wal_a_server_that_replays_none_is_named(server, pgmigrate):
    """REPLAYED makes the standby leader wait in the same job for the frozen source's last WAL; a
    server that replays nothing (a primary here) is named once the wait is over, nothing read."""
    from salt.exceptions import CommandExecutionError

    with pytest.raises(CommandExecutionError, match=r"did not replay the source's WAL up to 0/3000060 within 0.3 s"):
        pgmigrate.fingerprint(["shop"], port=server["port"], replayed="0/3000060", replay_wait=0.3)
