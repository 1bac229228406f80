"""_modules/pgmigrate.py freeze/thaw on the source: the pg_hba block that refuses clients during and
after a cutover (so that no one can ``BEGIN READ WRITE`` on a frozen source), its place above the
migration's own block, and thaw giving the file back byte for byte."""

from __future__ import annotations

import pytest
from pgctest import load_module

# Debian's stock pg_hba.conf (comments cut), with the block of a started logical migration on top.
DEBIAN = """local   all             postgres                                peer
local   all             all                                     peer
host    all             all             127.0.0.1/32            scram-sha-256
host    replication     all             127.0.0.1/32            scram-sha-256
"""


@pytest.fixture
def source(tmp_path):
    hba = tmp_path / "pg_hba.conf"
    ran, source_slots = [], []

    def query(sql, dbname="postgres", port=5432, names=False, timeout=30):
        ran.append(sql.split("\n", 1)[1])
        if "current_setting('hba_file'), current_user" in sql:
            return [[str(hba), "postgres", "on", "2026-11-28 10:00:00+00"]]
        if "pg_conf_load_time() >" in sql:
            return [["t"]]
        if "current_setting('ssl_ca_file')" in sql:
            return [["", str(hba), str(tmp_path / "pg_ident.conf")]]
        if "current_setting('ssl_cert_file')" in sql:
            return [["/etc/ssl/certs/ssl-cert-snakeoil.pem"]]
        if "SELECT datname FROM pg_database" in sql:
            return [["shop"], ["billing"]]
        if "SELECT current_user" in sql:
            return [["postgres", "on"]]
        if "current_setting('hba_file')" in sql:
            return [[str(hba)]]
        if "pg_hba_file_rules" in sql:
            return []
        if "reset_val" in sql:
            return [["on"]]
        if "pg_terminate_backend" in sql:
            return [["2", "t"], ["3", "t"]]
        if "confirmed_flush_lsn >=" in sql:
            return [[name] for name in source_slots]
        if "FROM pg_sequences" in sql:
            return [["public.orders_id_seq", "10"]]
        if "c.relkind IN ('m')" in sql:
            return [["public.daily"]]
        if "pg_current_wal_lsn" in sql or "pg_current_wal_insert_lsn" in sql:
            return [["0/3000060"]]
        return []

    pgsql = load_module("modules", "pgsql")
    salt = {"pgsql.query": query, "pgsql.literal": pgsql.literal, "pgsql.ident": pgsql.ident}
    mod = load_module("modules", "pgmigrate", salt=salt)
    hba.write_text(DEBIAN)
    (tmp_path / "pg_ident.conf").write_text("")
    mod._write_block(str(hba), ['hostssl "shop" all 198.18.0.50/32 scram-sha-256'], top=True)
    mod.hba, mod.ran, mod.slots = hba, ran, source_slots
    return mod


def rules(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines() if line and not line.startswith("#")]


def test_a_logical_freeze_refuses_clients_of_its_databases_above_everything_else(source):
    before = source.hba.read_text()
    out = source.freeze(["shop"])
    assert out == {"lsn": "0/3000060", "sessions_ended": 2}
    text = source.hba.read_text()
    assert text.startswith(source.FROZEN_BEGIN + "\n")
    assert text.splitlines()[1] == source.FROZEN_DATABASES + '["shop"]'
    assert rules(text)[:4] == [
        'local "shop" "postgres" peer',
        'hostssl "shop" pgcluster_migrate all cert map=pgcluster-migrate',
        'local "shop" all reject',
        'host "shop" all all reject',
    ]
    # The routers' line of the migration comes after the refusal: PgBouncer's hosts are refused too.
    assert rules(text)[4] == 'hostssl "shop" all 198.18.0.50/32 scram-sha-256'
    assert text.endswith(before)
    # Read-only by default as well, set before the reload that makes both count; sessions ended after.
    sql = "\n".join(source.ran)
    assert sql.index("default_transaction_read_only = on") < sql.index("pg_reload_conf") < sql.index("terminate")
    # The position is read once the ended sessions are gone (one still committing would write after it).
    assert sql.index("pg_reload_conf") < sql.index("pg_conf_load_time() >") < sql.index("terminate")
    assert sql.index("terminate") < sql.index("WHERE pid IN (2,3)") < sql.index("pg_current_wal_insert_lsn")
    assert "datname IN ('shop')" in sql
    # Only shop is made read-only (the server's other databases keep taking writes).
    assert 'ALTER DATABASE "shop" SET default_transaction_read_only = on' in sql and "ALTER SYSTEM" not in sql


def test_a_physical_freeze_refuses_every_database_but_not_replication(source):
    source.freeze(["shop"], every_database=True)
    frozen = rules(source.hba.read_text())[:3]
    assert frozen == ['local all "postgres" peer', "local all all reject", "host all all all reject"]
    assert "datname IN" not in "\n".join(source.ran)
    assert "ALTER SYSTEM SET default_transaction_read_only = on" in "\n".join(source.ran)


def test_freeze_twice_writes_one_block_and_thaw_gives_the_file_back(source):
    before = source.hba.read_text()
    source.freeze(["shop"])
    once = source.hba.read_text()
    source.freeze(["shop"])
    assert source.hba.read_text() == once and once.count(source.FROZEN_BEGIN) == 1
    assert source.thaw() == {"frozen": []}
    assert source.hba.read_text() == before
    assert "RESET default_transaction_read_only" in source.ran[-3]
    # Thawing a server that is not frozen changes nothing (abort thaws whatever happened).
    source.thaw()
    assert source.hba.read_text() == before


def test_closing_the_migration_keeps_the_source_frozen(source):
    source.freeze(["shop"])
    source._write_block(str(source.hba), [], top=True)
    text = source.hba.read_text()
    assert source.FROZEN_BEGIN in text and "198.18.0.50" not in text
    assert rules(text)[3] == 'host "shop" all all reject'


def test_a_second_wave_adds_its_databases_and_its_give_back_thaws_only_them(source):
    """Wave 1 (shop) cut over, the source stays frozen for it; wave 2 (billing) freezes too, its
    verification fails and it is given back: shop's clients must stay refused and the server
    read-only."""
    source.freeze(["shop"])
    source.freeze(["billing"])
    text = source.hba.read_text()
    assert text.count(source.FROZEN_BEGIN) == 1
    assert 'local "shop","billing" all reject' in rules(text)
    # Only this wave's sessions are ended (shop's were, and its clients are refused since).
    assert "datname IN ('billing')" in [q for q in source.ran if "terminate" in q][-1]
    source.ran.clear()
    assert source.thaw(databases=["billing"]) == {"frozen": ["shop"]}
    assert 'local "shop" all reject' in rules(source.hba.read_text())
    # billing takes writes again, shop stays read-only and so does nothing else: per database.
    assert any('ALTER DATABASE "billing" RESET default_transaction_read_only' in q for q in source.ran)
    assert not any('"shop" RESET' in q or "ALTER SYSTEM RESET" in q for q in source.ran)
    # The last one thawed: the block goes, the server takes writes again.
    assert source.thaw(databases=["shop"]) == {"frozen": []}
    assert source.FROZEN_BEGIN not in source.hba.read_text()
    assert any('ALTER DATABASE "shop" RESET default_transaction_read_only' in q for q in source.ran)
    assert any("ALTER SYSTEM RESET default_transaction_read_only" in q for q in source.ran)


def test_a_physical_freeze_covers_every_database_and_a_thaw_of_its_databases_ends_it(source):
    source.freeze(["shop"])
    source.freeze(["shop"], every_database=True)
    assert rules(source.hba.read_text())[:3] == ['local all "postgres" peer', "local all all reject",
                                                 "host all all all reject"]  # fmt: skip
    # A logical wave after it refuses all the same.
    source.freeze(["billing"])
    assert "local all all reject" in rules(source.hba.read_text())
    assert source.thaw(databases=["shop"]) == {"frozen": []}
    assert source.FROZEN_BEGIN not in source.hba.read_text()


def test_closing_the_migration_drops_the_role_line_and_keeps_refusing(source):
    """source_close drops the migration role: the frozen block no longer names it (once the lent
    TLS is returned, a hostssl line would be reported as unusable), the databases stay refused."""
    source.freeze(["shop"])
    source.source_close(["shop"], "/etc/pgcluster/pki/ca.crt")
    text = source.hba.read_text()
    assert rules(text)[:3] == ['local "shop" "postgres" peer', 'local "shop" all reject', 'host "shop" all all reject']
    assert "pgcluster_migrate" not in text and "198.18.0.50" not in text
    assert source.thaw() == {"frozen": []}
    assert source.hba.read_text() == DEBIAN


def test_a_block_written_before_the_record_keeps_its_databases(source):
    """A block an earlier version wrote (no "# refused:" line) names its databases in its reject
    line: closing the migration or a second wave keeps exactly those, never "all"."""
    old = ['local "shop" "postgres" peer', 'local "shop" all reject', 'host "shop" all all reject']
    source._write_block(str(source.hba), old, top=True, begin=source.FROZEN_BEGIN, end=source.FROZEN_END)
    assert source._frozen(str(source.hba)) == ["shop"]
    source.freeze(["billing"])
    assert 'local "shop","billing" all reject' in rules(source.hba.read_text())
    assert source.thaw(databases="billing") == {"frozen": ["shop"]}  # a string names one database


def test_a_logical_cutovers_freeze_waits_for_the_clusters_confirmation_and_returns_what_it_does_not_carry(source):
    """With confirm_wait (one job of the cutover): once every migration slot confirmed the frozen
    position, the sequences and materialized views as the frozen source has them; a slot that
    does not get there within the wait is named."""
    source.slots.append(source.subscription("shop"))
    out = source.freeze(["shop"], confirm_wait=1)
    assert out["sequences"] == {"shop": {"public.orders_id_seq": 10}} and out["views"] == {"shop": ["public.daily"]}
    sql = "\n".join(source.ran)
    assert (
        sql.index("pg_current_wal_insert_lsn")
        < sql.index("confirmed_flush_lsn >= '0/3000060'")
        < sql.index("pg_sequences")
    )
    with pytest.raises(source.CommandExecutionError, match="did not confirm the WAL of billing up to 0/3000060"):
        source.freeze(["shop", "billing"], confirm_wait=0.2)


def test_a_session_that_does_not_end_after_its_terminate_stops_the_freeze_naming_it(source):
    """The position is read only once the ended sessions are gone; one that stays is named."""
    query = source.__salt__["pgsql.query"]
    source.__salt__["pgsql.query"] = lambda sql, **kw: [["2"]] if "WHERE pid IN (2)" in sql else query(sql, **kw)
    with pytest.raises(source.CommandExecutionError, match=r"sessions \[2\] did not end within 0.2 s"):
        source._gone([2], 5432, wait=0.2)
    source.__salt__["pgsql.query"] = query
    source._gone([2], 5432, wait=0.2)  # gone (the fake has no such session): returns at once
