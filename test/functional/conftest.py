"""A real PostgreSQL 15 for the functional tests: Debian's binaries on this machine, a throwaway
data directory, a Unix socket only, a database like a legacy server's."""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile

import pytest
from pgctest import load_module, run, run_all

BIN = "/usr/lib/postgresql/15/bin"
PORT = 55432


def as_postgres(*cmd: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], input=stdin, capture_output=True, text=True,
                          check=True, cwd="/", timeout=120)  # fmt: skip


@pytest.fixture(scope="session")
def server():
    """A PostgreSQL 15 on a socket in a directory of its own, with a database like a legacy one."""
    top = tempfile.mkdtemp(prefix="pgc-survey-")
    shutil.chown(top, "postgres", "postgres")
    data, sock = f"{top}/data", f"{top}/sock"
    as_postgres("mkdir", sock)
    as_postgres(f"{BIN}/initdb", "-D", data, "-E", "UTF8", "--locale=C.UTF-8", "-A", "peer")
    as_postgres(f"{BIN}/pg_ctl", "-D", data, "-w", "-l", f"{top}/log", "-o",
                f"-p {PORT} -k {sock} -c listen_addresses='' -c wal_level=logical", "start")  # fmt: skip
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


@pytest.fixture()
def pgmigrate(server):
    """pgmigrate with the test server's socket directory in place of Debian's."""
    pgsql = load_module("modules", "pgsql", salt={"cmd.run_all": run_all, "cmd.run": run})
    salt = {f"pgsql.{f}": getattr(pgsql, f) for f in ("literal", "ident")}
    salt["pgsql.query"] = functools.partial(pgsql.query, socket_dir=server["socket_dir"])
    salt["cmd.run_all"] = run_all
    return load_module("modules", "pgmigrate", salt=salt)
