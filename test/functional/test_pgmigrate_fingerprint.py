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
    (count,) = shop("SELECT count(*) FROM public.customers", port=server["port"], dbname="shop")[0]
    # Every column of customers has its type's hash: hashed column by column, no record formed.
    assert customers["hash"] == "columns" and customers["rows"] == int(count) >= 1000
    # The same rows in another table, in another physical order: the same checksum.
    assert (copy["rows"], copy["checksum"]) == (customers["rows"], customers["checksum"])
    # json has no hash function: that table is hashed as text, the same as the text method says.
    assert docs["hash"] == "text" and docs == as_text["public.docs"]
    assert as_text["public.customers"]["hash"] == "text" and as_text["public.customers"]["rows"] == int(count)
    assert as_text["public.customers"]["checksum"] != customers["checksum"]
    # One row changed: the checksum moves.
    shop("UPDATE public.customers_copy SET name = 'changed' WHERE id = 7", port=server["port"], dbname="shop")
    again = pgmigrate.fingerprint(["shop"], port=server["port"], row_hash="record")["shop"]["tables"]
    assert again["public.customers_copy"]["checksum"] != customers["checksum"]


def test_waiting_for_wal_a_server_that_replays_none_is_named(server, pgmigrate):
    """replayed_to makes the standby leader wait in one job for the frozen source's last WAL; a
    server that replays nothing (a primary here) is named once the wait is over."""
    from salt.exceptions import CommandExecutionError

    with pytest.raises(CommandExecutionError, match=r"did not replay the source's WAL up to 0/3000060 within 0.3 s"):
        pgmigrate.replayed_to("0/3000060", port=server["port"], wait=0.3)
    # The standby leader's fingerprint in a physical cutover waits for it first, in the same job.
    with pytest.raises(CommandExecutionError, match=r"did not replay the source's WAL up to 0/3000060 within 0.3 s"):
        pgmigrate.fingerprint(["shop"], port=server["port"], replayed="0/3000060", replay_wait=0.3)


def test_vacuum_analyze_leaves_every_page_of_fresh_rows_all_visible_with_statistics(server, pgmigrate):
    """What a subscription copied, vacuumed before the cutover: every page all-visible (its rows'
    hint bits set, so the verification inside the pause writes nothing) and the planner's
    statistics there."""
    q = pgmigrate.__salt__["pgsql.query"]
    port = server["port"]
    q("CREATE TABLE public.fresh AS SELECT g AS id, md5(g::text) AS body FROM generate_series(1, 20000) g", port=port,
      dbname="shop")  # fmt: skip
    try:
        state = ("SELECT c.relpages, c.relallvisible, s.last_analyze IS NOT NULL FROM pg_class c "
                 "JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.relname = 'fresh'")  # fmt: skip
        assert q(state, port=port, dbname="shop")[0][1:] == ["0", "f"]
        out = pgmigrate.vacuum_analyze(["shop"], port=port)
        assert set(out) == {"shop"} and out["shop"] >= 0
        pages, visible, analyzed = q(state, port=port, dbname="shop")[0]
        assert int(pages) > 0 and visible == pages and analyzed == "t"
    finally:
        q("DROP TABLE public.fresh", port=port, dbname="shop")


ENUMS = """CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy'); CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TABLE public.feelings (id int, m mood); CREATE TABLE public.moods (id int, ms mood[]);
CREATE TABLE public.nums (n posint, t text); CREATE TABLE public.rels (r regclass);
INSERT INTO public.feelings VALUES (1, 'ok'), (2, 'happy'); INSERT INTO public.moods VALUES (1, '{sad,ok}');
INSERT INTO public.nums VALUES (1, 'a'), (2, 'b'); INSERT INTO public.rels VALUES ('pg_class')"""


@pytest.fixture()
def two_catalogs(server, pgmigrate):
    """The same tables and rows in shop and in a second database whose enum got another OID (a
    logical copy's schema restore), as a migration's two ends."""
    q = pgmigrate.__salt__["pgsql.query"]
    port = server["port"]
    q("CREATE DATABASE copy TEMPLATE template0", port=port)
    q("CREATE TYPE other AS ENUM ('x'); " + ENUMS, port=port, dbname="copy")
    q(ENUMS, port=port, dbname="shop")
    yield q
    q("DROP DATABASE copy", port=port)
    q("DROP TABLE public.feelings, public.moods, public.nums, public.rels; DROP TYPE mood; DROP DOMAIN posint",
      port=port, dbname="shop")  # fmt: skip


def test_portable_hashing_hashes_oid_bound_tables_as_text_and_matches_across_catalogs(server, pgmigrate, two_catalogs):
    """An enum's hash is its OID: by record, equal rows in the two catalogs differ; "portable"
    hashes those tables (an enum, an array of it, a reg* type) as text and the others column by
    column (a domain over int is its base type), so that both ends agree."""
    port = server["port"]
    ends = [pgmigrate.fingerprint([db], port=port, row_hash="portable")[db]["tables"] for db in ("shop", "copy")]
    hashes = {t: ends[0][t]["hash"] for t in ("public.feelings", "public.moods", "public.rels", "public.nums")}
    assert hashes == {"public.feelings": "text", "public.moods": "text", "public.rels": "text",
                      "public.nums": "columns"}  # fmt: skip
    assert ends[0]["public.customers"]["hash"] == "columns"
    for table in hashes:
        assert ends[0][table] == ends[1][table], table
    by_record = [pgmigrate.fingerprint([db], port=port, row_hash="record")[db]["tables"] for db in ("shop", "copy")]
    assert by_record[0]["public.feelings"]["checksum"] != by_record[1]["public.feelings"]["checksum"]


@pytest.mark.parametrize("row_hash", ["text", "record"])
def test_a_column_named_t_does_not_stand_for_the_row(server, pgmigrate, two_catalogs, row_hash):
    """nums has a column named t: the whole row is hashed all the same (a change in n moves it)."""
    port = server["port"]
    before = pgmigrate.fingerprint(["shop"], port=port, row_hash=row_hash)["shop"]["tables"]["public.nums"]
    two_catalogs("UPDATE public.nums SET n = 7 WHERE n = 2", port=port, dbname="shop")
    after = pgmigrate.fingerprint(["shop"], port=port, row_hash=row_hash)["shop"]["tables"]["public.nums"]
    assert after["rows"] == before["rows"] and after["checksum"] != before["checksum"]


@pytest.fixture()
def tables(server, pgmigrate):
    """Pairs of tables in shop: one with a dropped column and its copy without; swapped values;
    a NULL in one column or the other; one with a bool column (hashed as char: no column hash)."""
    q = pgmigrate.__salt__["pgsql.query"]
    port = server["port"]
    q("""CREATE TABLE public.wide (id int, junk int, name varchar(20), price numeric, at timestamptz, body text);
      ALTER TABLE public.wide DROP COLUMN junk;
      CREATE TABLE public.wide2 (id int, name varchar(20), price numeric, at timestamptz, body text);
      INSERT INTO public.wide VALUES (1, 'a', 1.5, '2026-11-28 10:00+00', NULL), (2, NULL, NULL, NULL, 'x');
      INSERT INTO public.wide2 SELECT * FROM public.wide;
      CREATE TABLE public.pair (a int, b int); INSERT INTO public.pair VALUES (1, 2);
      CREATE TABLE public.pair2 (a int, b int); INSERT INTO public.pair2 VALUES (2, 1);
      CREATE TABLE public.nulls (a int, b int); INSERT INTO public.nulls VALUES (NULL, 1);
      CREATE TABLE public.nulls2 (a int, b int); INSERT INTO public.nulls2 VALUES (1, NULL);
      CREATE TABLE public.flags (id int, ok bool); INSERT INTO public.flags VALUES (1, true);
      CREATE TABLE public.zeros (id int, a numeric, b numeric); INSERT INTO public.zeros VALUES (1, 0, 0);
      CREATE TABLE public.zeros2 (id int, a numeric, b numeric); INSERT INTO public.zeros2 VALUES (1, NULL, NULL);
      CREATE TABLE public.floats (a float8, b float8, c float8); INSERT INTO public.floats VALUES (0, NULL, NULL);
      CREATE TABLE public.floats2 (a float8, b float8, c float8); INSERT INTO public.floats2 VALUES (NULL, NULL, 0)""",
      port=port, dbname="shop")  # fmt: skip
    yield q
    q("DROP TABLE public.wide, public.wide2, public.pair, public.pair2, public.nulls, public.nulls2, public.flags, "
      "public.zeros, public.zeros2, public.floats, public.floats2", port=port, dbname="shop")  # fmt: skip


@pytest.mark.parametrize("row_hash", ["record", "portable"])
def test_rows_hashed_column_by_column_match_by_rank_and_tell_every_value(server, pgmigrate, tables, row_hash):
    """Column by column (record and portable modes): a table with a dropped column matches its
    copy without it (columns seeded by rank, not number); swapped values, a NULL in another
    column, zeros for NULLs in two columns, one changed value each move the checksum; a bool
    column makes the table hashed by record."""
    fp = pgmigrate.fingerprint(["shop"], port=server["port"], row_hash=row_hash)["shop"]["tables"]
    wide, wide2 = fp["public.wide"], fp["public.wide2"]
    assert wide["hash"] == wide2["hash"] == "columns" and wide["rows"] == 2
    assert wide["checksum"] == wide2["checksum"]
    assert fp["public.pair"]["checksum"] != fp["public.pair2"]["checksum"]
    assert fp["public.nulls"]["checksum"] != fp["public.nulls2"]["checksum"]
    # A zero hashes to (next to) its seed: zeros and NULLs must not cancel out under XOR.
    assert fp["public.zeros"]["hash"] == "columns" and fp["public.zeros"]["checksum"] != fp["public.zeros2"]["checksum"]
    assert fp["public.floats"]["checksum"] != fp["public.floats2"]["checksum"]
    assert fp["public.wide"]["functions"] == fp["public.wide2"]["functions"]
    assert fp["public.flags"]["hash"] == "record"
    tables("UPDATE public.wide2 SET price = 1.6 WHERE id = 1", port=server["port"], dbname="shop")
    again = pgmigrate.fingerprint(["shop"], port=server["port"], row_hash=row_hash)["shop"]["tables"]
    assert again["public.wide2"]["checksum"] != wide["checksum"]
    assert again["public.wide"]["checksum"] == wide["checksum"]
