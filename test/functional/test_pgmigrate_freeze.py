"""pgmigrate.freeze and thaw against a real PostgreSQL 15 (the functional server): a frozen source
refuses its clients at the door (a client could otherwise ``BEGIN READ WRITE`` past
default_transaction_read_only and write what the cluster never receives), the migration's own
superuser calls still work, PostgreSQL parses every line pgcluster writes; thaw lets clients in."""

from __future__ import annotations

import contextlib
import subprocess
import threading

import pytest


def as_app(server: dict, sql: str) -> subprocess.CompletedProcess:
    """SQL as role app in database shop over the server's socket (trusted by the test's own line)."""
    cmd = ["runuser", "-u", "postgres", "--", "psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", server["socket_dir"],
           "-p", str(server["port"]), "-U", "app", "-d", "shop", "-c", sql]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, cwd="/", timeout=60, check=False)


@pytest.fixture()
def source(server, pgmigrate):
    """The server with a client line of its own for role app (as a legacy server has for its
    applications), granted what it writes; afterwards thawed and the line gone."""
    q = pgmigrate.__salt__["pgsql.query"]
    (hba,) = q("SELECT current_setting('hba_file')", port=server["port"])[0]
    with open(hba, encoding="utf-8") as f:
        before = f.read()
    with open(hba, "w", encoding="utf-8") as f:
        f.write("local shop app trust\n" + before)
    q("GRANT INSERT ON public.customers TO app; GRANT USAGE ON SEQUENCE public.customers_id_seq TO app; "
      "SELECT pg_reload_conf()", port=server["port"], dbname="shop")  # fmt: skip
    yield q, hba
    pgmigrate.thaw(port=server["port"])
    with open(hba, "w", encoding="utf-8") as f:
        f.write(before)
    q("REVOKE ALL ON public.customers FROM app; REVOKE ALL ON SEQUENCE public.customers_id_seq FROM app; "
      "SELECT pg_reload_conf()", port=server["port"], dbname="shop")  # fmt: skip


WRITE = "BEGIN READ WRITE; INSERT INTO customers (name) VALUES ('direct') RETURNING 1; COMMIT"


@pytest.mark.parametrize("every_database", [False, True], ids=["logical", "physical"])
def test_a_frozen_source_refuses_clients_and_thaw_lets_them_in(server, pgmigrate, source, every_database):
    q, hba = source
    assert as_app(server, WRITE).returncode == 0  # the loophole without the block: read-write asked for
    out = pgmigrate.freeze(["shop"], port=server["port"], every_database=every_database)
    assert out["lsn"].count("/") == 1
    refused = as_app(server, WRITE)
    assert refused.returncode != 0 and 'pg_hba.conf rejects connection for host "[local]", user "app", database ' \
        '"shop"' in refused.stderr, refused.stderr  # fmt: skip
    # PostgreSQL parsed every line of the block (no error row), and it is the first rule.
    rules = q("SELECT line_number, type, database, user_name, auth_method, error FROM pg_hba_file_rules "
              "ORDER BY line_number", port=server["port"])  # fmt: skip
    assert [r for r in rules if r[5]] == []
    assert rules[0][1:5] == ["local", "{all}" if every_database else "{shop}", "{postgres}", "peer"]
    # The migration's own calls (the superuser over the socket) still work, and see a read-only database.
    assert q("SHOW default_transaction_read_only", port=server["port"], dbname="shop") == [["on"]]
    # The server's other databases keep taking writes in logical mode (only shop moves).
    other = q("SHOW default_transaction_read_only", port=server["port"], dbname="postgres")
    assert other == [["on" if every_database else "off"]]
    pgmigrate.thaw(port=server["port"])
    assert as_app(server, WRITE).returncode == 0
    with open(hba, encoding="utf-8") as f:
        assert pgmigrate.FROZEN_BEGIN not in f.read()


def test_a_second_waves_give_back_keeps_the_first_wave_refused(server, pgmigrate, source):
    """Wave 1 (shop) cut over, its source stays frozen; wave 2 (postgres here) freezes and is
    given back: shop's client stays refused and the server read-only; thawing shop opens it."""
    q, _ = source
    pgmigrate.freeze(["shop"], port=server["port"])
    pgmigrate.freeze(["postgres"], port=server["port"])
    rules = q("SELECT database FROM pg_hba_file_rules WHERE auth_method = 'reject'", port=server["port"])
    assert rules[0] == ["{shop,postgres}"]
    assert pgmigrate.thaw(port=server["port"], databases=["postgres"]) == {"frozen": ["shop"]}
    assert "pg_hba.conf rejects connection" in as_app(server, WRITE).stderr
    assert q("SHOW default_transaction_read_only", port=server["port"], dbname="shop") == [["on"]]
    assert q("SHOW default_transaction_read_only", port=server["port"]) == [["off"]]
    assert pgmigrate.thaw(port=server["port"], databases=["shop"]) == {"frozen": []}
    assert as_app(server, WRITE).returncode == 0


def test_a_logical_cutovers_freeze_waits_for_the_confirmation_and_the_leader_finishes_the_copy(
    server, pgmigrate, source
):
    """The logical cutover's two jobs inside the pause. On the source: frozen, then waiting until
    the migration slot has confirmed the frozen position (a subscriber that confirms nothing is
    named), returning the sequences and populated materialized views as frozen. On the leader
    (this server plays it too): sequences set and views refreshed before its fingerprint."""
    from salt.exceptions import CommandExecutionError

    q, _ = source
    port, slot = server["port"], pgmigrate.subscription("shop")
    q(f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')", port=port, dbname="shop")
    try:
        with pytest.raises(CommandExecutionError, match=r"did not confirm the WAL of shop up to \S+ within 0.5 s"):
            pgmigrate.freeze(["shop"], port=port, confirm_wait=0.5)
        stop = threading.Event()

        def subscriber():  # confirms whatever the server has written, as an applying subscriber does
            while not stop.wait(0.05):
                # Its session ended by the freeze: it connects again, as a subscriber's worker does.
                with contextlib.suppress(CommandExecutionError):
                    q(f"SELECT pg_replication_slot_advance('{slot}', pg_current_wal_lsn())", port=port, dbname="shop")

        confirming = threading.Thread(target=subscriber)
        confirming.start()
        try:
            out = pgmigrate.freeze(["shop"], port=port, confirm_wait=10)
        finally:
            stop.set()
            confirming.join()
        assert out["confirm_s"] < 10
        (seq,) = q("SELECT last_value FROM public.customers_id_seq", port=port, dbname="shop")[0]
        assert out["sequences"]["shop"]["public.customers_id_seq"] == int(seq) >= 1000
        assert out["views"] == {"shop": ["sales.totals"]}
    finally:
        q(f"SELECT pg_drop_replication_slot('{slot}')", port=port, dbname="shop")
    pgmigrate.thaw(port=port)
    # The leader's side: a row the view does not show yet, a sequence behind the source's.
    q("INSERT INTO sales.lines VALUES (1, 1)", port=port, dbname="shop")
    stale = pgmigrate.fingerprint(["shop"], port=port)["shop"]["views"]["sales.totals"]
    try:
        got = pgmigrate.finish_copy(["shop"], {"shop": {"public.customers_id_seq": int(seq) + 500}},
                                    {"shop": ["sales.totals"]}, port=port)["shop"]  # fmt: skip
        assert got["sequences"]["public.customers_id_seq"] == int(seq) + 500
        assert got["views"]["sales.totals"]["checksum"] != stale["checksum"]
        assert got["tables"]["public.customers"]["rows"] >= 1000
    finally:
        q(f"DELETE FROM sales.lines; REFRESH MATERIALIZED VIEW sales.totals; "
          f"SELECT setval('public.customers_id_seq', {int(seq)})", port=port, dbname="shop")  # fmt: skip
