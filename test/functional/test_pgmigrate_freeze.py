"""pgmigrate.freeze and thaw against a real PostgreSQL 15 (the functional server): a frozen source
refuses its clients at the door (a client could otherwise ``BEGIN READ WRITE`` past
default_transaction_read_only and write what the cluster never receives), the migration's own
superuser calls still work, PostgreSQL parses every line pgcluster writes; thaw lets clients in."""

from __future__ import annotations

import subprocess

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
