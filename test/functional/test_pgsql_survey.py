"""pgsql.survey against a real PostgreSQL 15 started on this machine (Debian's binaries, a
throwaway data directory, a Unix socket only): what a migration's preflight reads of a source."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time

import pytest
from pgctest import load_module, run, run_all


@pytest.fixture(scope="module")
def found(server):
    pgsql = load_module("modules", "pgsql", salt={"cmd.run_all": run_all})
    return pgsql.survey(**server)


def test_the_instance_version_system_and_replication_settings(found):
    assert found["major"] == 15 and found["version_num"] >= 150000 and found["system"].isdigit()
    assert found["wal_level"] == "logical" and found["max_wal_senders"] >= 1  # the server runs with wal_level=logical
    # What a standby of it must match (a physical migration): Debian's defaults.
    assert found["standby_settings"]["max_connections"] == 100 and found["standby_settings"]["max_wal_senders"] >= 1
    assert found["shared_preload_libraries"] == []
    assert "replicator" in found["replication_roles"] and "postgres" in found["replication_roles"]
    assert "app" in found["login_roles"] and "app" not in found["replication_roles"]


def test_each_database_with_what_a_logical_migration_trips_on(found):
    shop = found["databases"]["shop"]
    assert shop["encoding"] == "UTF8" and shop["collate"] == "C.UTF-8" and shop["size"] > 1_000_000
    assert shop["extensions"] == ["pg_trgm"]
    # events has neither key nor identity; sales.lines has REPLICA IDENTITY FULL; customers a key.
    assert shop["no_key"] == ["public.events"]
    assert shop["unlogged"] == ["public.scratch"] and shop["large_objects"] == 1
    assert shop["tables"] == 5  # customers, events, lines, scratch, and the materialized view
    assert set(found["databases"]) == {"postgres", "shop"}  # templates are not databases to move
    assert found["size"] == sum(d["size"] for d in found["databases"].values())


def test_a_server_that_does_not_answer_is_one_clear_error(server):
    pgsql = load_module("modules", "pgsql", salt={"cmd.run_all": run_all})
    with pytest.raises(pgsql.CommandExecutionError, match=r"psql on port 55999, database postgres: .*"):
        pgsql.survey(port=55999, socket_dir=server["socket_dir"], timeout=5)


def test_room_what_a_member_offers_a_migration(server):
    pgsql = load_module("modules", "pgsql", salt={"cmd.run_all": run_all, "cmd.run": run})
    room = pgsql.room(**server)
    assert room["major"] == 15
    # Every contrib extension Debian's postgresql-15 ships is available, created or not.
    assert {"pg_trgm", "pgcrypto", "hstore", "plpgsql"} <= set(room["extensions"])
    assert "C.utf8" in room["locales"]
    assert room["data_directory"].startswith("/tmp/pgc-survey-") and room["free"] > 0


def test_a_source_that_checks_client_certificates_with_another_ca_is_left_alone(server, pgmigrate):
    """pgcluster never replaces a source's own ssl_ca_file (its clients' certificates would fail):
    refused before anything changes."""
    query = pgmigrate.__salt__["pgsql.query"]
    query("ALTER SYSTEM SET ssl_ca_file = '/etc/site/ca.crt'; SELECT pg_reload_conf()", port=server["port"])
    try:
        with pytest.raises(pgmigrate.CommandExecutionError, match=r"^ssl_ca_file is already /etc/site/ca.crt"):
            pgmigrate.source_open({"pg1": "198.18.0.11"}, ["shop"], "/etc/pgcluster/pki/ca.crt", "/x.crt", "/x.key",
                                  port=server["port"])  # fmt: skip
        roles = query("SELECT count(*) FROM pg_roles WHERE rolname = 'pgcluster_migrate'", port=server["port"])
        assert roles == [["0"]]
    finally:
        query("ALTER SYSTEM RESET ssl_ca_file; SELECT pg_reload_conf()", port=server["port"])


def test_the_access_block_is_put_at_the_top_replaced_and_removed(tmp_path, pgmigrate):
    hba = tmp_path / "pg_hba.conf"
    hba.write_text("local all postgres peer\nhost all all 127.0.0.1/32 scram-sha-256\n")
    hba.chmod(0o640)
    pgmigrate._write_block(str(hba), ["hostssl shop pgcluster_migrate 198.18.0.11/32 cert"], top=True)
    first = hba.read_text().splitlines()
    assert first[0] == pgmigrate.BEGIN and first[2] == pgmigrate.END and first[3] == "local all postgres peer"
    pgmigrate._write_block(str(hba), ["hostssl shop pgcluster_migrate 198.18.0.12/32 cert"], top=True)
    assert hba.read_text().count(pgmigrate.BEGIN) == 1 and "198.18.0.12/32" in hba.read_text()
    pgmigrate._write_block(str(hba), [], top=True)
    assert hba.read_text() == "local all postgres peer\nhost all all 127.0.0.1/32 scram-sha-256\n"
    assert hba.stat().st_mode & 0o777 == 0o640


def test_basebackups_reports_a_copy_in_progress(server):
    """A pg_basebackup slowed down to 64 kB/s: the server reports it (client, phase, bytes sent and
    in all, seconds)."""
    pgsql = load_module("modules", "pgsql", salt={"cmd.run_all": run_all})
    conn = {"port": server["port"], "socket_dir": server["socket_dir"]}
    assert pgsql.basebackups(**conn) == []
    top = tempfile.mkdtemp(prefix="pgc-copy-")  # where the postgres user may write
    shutil.chown(top, "postgres", "postgres")
    target = f"{top}/copy"
    copy = subprocess.Popen(["runuser", "-u", "postgres", "--", "pg_basebackup", "-D", target, "-h",
                             server["socket_dir"], "-p", str(server["port"]), "--max-rate=64k", "-X", "none",
                             "-c", "fast"], cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline, copies = time.monotonic() + 30, []
        while time.monotonic() < deadline:
            copies = pgsql.basebackups(**conn)
            if copies and copies[0]["sent_bytes"] > 0:
                break
            time.sleep(0.2)
        (x,) = copies
        size = int(pgsql.query("SELECT sum(pg_database_size(oid)) FROM pg_database", **conn)[0][0])
        assert x["client"] == "local" and x["phase"] == "streaming database files"
        # pg_basebackup 15 has the server count the bytes (no -P needed): about its databases' size.
        assert 0 < x["sent_bytes"] < x["total_bytes"] and x["estimated"] is False
        assert 0.9 * size < x["total_bytes"] < 1.1 * size
        assert 0 <= x["elapsed_s"] < 30
    finally:
        copy.kill()
        copy.wait(timeout=30)
        shutil.rmtree(top, ignore_errors=True)
