"""pgsql.survey against a real PostgreSQL 15 started on this machine (Debian's binaries, a
throwaway data directory, a Unix socket only): what a migration's preflight reads of a source."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest
from pgctest import load_module

BIN = "/usr/lib/postgresql/15/bin"
PORT = 55432


def as_postgres(*cmd: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], input=stdin, capture_output=True, text=True,
                          check=True, cwd="/", timeout=120)  # fmt: skip


def run_all(cmd, stdin=None, timeout=None, env=None, cwd=None, **kwargs) -> dict:
    """Salt's cmd.run_all as the module uses it: argv, standard input, environment, timeout."""
    res = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                         env={**os.environ, **(env or {})})  # fmt: skip
    return {"retcode": res.returncode, "stdout": res.stdout.strip(), "stderr": res.stderr.strip()}


@pytest.fixture(scope="module")
def server():
    """A PostgreSQL 15 on a socket in a directory of its own, with a database like a legacy one."""
    top = tempfile.mkdtemp(prefix="pgc-survey-")
    shutil.chown(top, "postgres", "postgres")
    data, sock = f"{top}/data", f"{top}/sock"
    as_postgres("mkdir", sock)
    as_postgres(f"{BIN}/initdb", "-D", data, "-E", "UTF8", "--locale=C.UTF-8", "-A", "peer")
    as_postgres(f"{BIN}/pg_ctl", "-D", data, "-w", "-l", f"{top}/log", "-o",
                f"-p {PORT} -k {sock} -c listen_addresses='' -c wal_level=replica", "start")  # fmt: skip
    try:
        psql = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", sock, "-p", str(PORT)]
        as_postgres(*psql, "-c", "CREATE DATABASE shop ENCODING 'UTF8' TEMPLATE template0")
        as_postgres(*psql, "-d", "shop", stdin="""
            CREATE EXTENSION pg_trgm;
            CREATE SCHEMA sales;
            CREATE TABLE public.customers (id bigserial PRIMARY KEY, name text);
            CREATE TABLE public.events (at timestamptz, what text);                  -- no key
            CREATE TABLE sales.lines (order_id int, line int);                       -- no key...
            ALTER TABLE sales.lines REPLICA IDENTITY FULL;                           -- ...but identity
            CREATE UNLOGGED TABLE public.scratch (id int PRIMARY KEY);
            CREATE MATERIALIZED VIEW sales.totals AS SELECT count(*) FROM sales.lines;
            SELECT lo_create(0);
            INSERT INTO public.customers(name) SELECT 'c' || g FROM generate_series(1, 1000) g;
            CREATE ROLE app LOGIN PASSWORD 'x';
            CREATE ROLE replicator LOGIN REPLICATION;
        """)  # fmt: skip
        yield {"port": PORT, "socket_dir": sock}
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", f"{BIN}/pg_ctl", "-D", data, "-m", "immediate", "stop"],
                       capture_output=True, cwd="/", timeout=60)  # fmt: skip
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="module")
def found(server):
    pgsql = load_module("modules", "pgsql", salt={"cmd.run_all": run_all})
    return pgsql.survey(**server)


def test_the_instance_version_system_and_replication_settings(found):
    assert found["major"] == 15 and found["version_num"] >= 150000 and found["system"].isdigit()
    assert found["wal_level"] == "replica" and found["max_wal_senders"] >= 1
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
