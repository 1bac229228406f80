"""Run SQL on this host's PostgreSQL (or PgBouncer's admin console) as the ``postgres`` OS user,
over the local socket.

SQL travels on psql's standard input, never on its command line, so that nothing sensitive
(role passwords are sent as SCRAM verifiers anyway) shows in process lists; output is not
logged.

CLI Example:

.. code-block:: bash

    salt pg1 pgsql.query 'SELECT 1'
    salt app1 pgsql.query 'SHOW DATABASES' dbname=pgbouncer port=6432 names=True
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from salt.exceptions import CommandExecutionError

__virtualname__ = "pgsql"
# Field separator: a control character that str.strip() (cmd.run_all strips the output) keeps;
# the unit separator \x1f counts as whitespace and a trailing empty field would vanish.
SEP = "\x02"


def __virtual__():
    if not shutil.which("psql"):
        return (False, "pgsql: psql is not installed (Debian: postgresql-client)")
    if not shutil.which("runuser"):
        return (False, "pgsql: runuser is not installed (util-linux)")
    return __virtualname__


def literal(value: str) -> str:
    """SQL string literal of VALUE (standard_conforming_strings is on since PostgreSQL 9.1).

    CLI Example:

    .. code-block:: bash

        salt-call pgsql.literal "it's"
    """
    return "'" + str(value).replace("'", "''") + "'"


def ident(value: str) -> str:
    """SQL identifier of VALUE, always quoted.

    CLI Example:

    .. code-block:: bash

        salt-call pgsql.ident 'my table'
    """
    return '"' + str(value).replace('"', '""') + '"'


def query(
    sql: str,
    dbname: str = "postgres",
    port: int = 5432,
    socket_dir: str = "/var/run/postgresql",
    names: bool = False,
    timeout: float = 30,
) -> list:
    """Run SQL; return the rows of its last statement as lists of strings, or with NAMES as dicts
    keyed by column name (so that a column added by a newer server moves nothing; then only one
    statement of SQL may return rows).

    Gives up after TIMEOUT seconds (connecting included). Raises CommandExecutionError with
    psql's message when the SQL fails.

    CLI Example:

    .. code-block:: bash

        salt pg1 pgsql.query 'SELECT datname FROM pg_database'
    """
    # runuser, not cmd.run's runas: runas first spawns a login shell to copy its environment,
    # which costs a few hundred milliseconds on every call (and repointing is on the hot path).
    cmd = ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-A", "-F", SEP, "-P", "footer=off",
           "-v", "ON_ERROR_STOP=1", "-h", socket_dir, "-p", str(port), "-d", dbname]  # fmt: skip
    if not names:
        cmd.append("-t")
    res: dict[str, Any] = __salt__["cmd.run_all"](
        cmd,
        stdin=sql,
        python_shell=False,
        output_loglevel="quiet",
        ignore_retcode=True,
        cwd="/",
        timeout=timeout,
        env={"PGCONNECT_TIMEOUT": str(max(int(timeout), 1))},
    )
    if res["retcode"] != 0:
        why = (res.get("stderr") or "").strip() or f"no answer within {timeout} s"
        raise CommandExecutionError(f"psql on port {port}, database {dbname}: {why}")
    rows = [line.split(SEP) for line in res["stdout"].splitlines() if line]
    if not names:
        return rows
    # Only one statement of SQL may return rows when NAMES is set: its header comes first.
    return [dict(zip(rows[0], row, strict=True)) for row in rows[1:]] if rows else []


# What a migration needs to know of a server: instance-wide, then per database.
SURVEY_INSTANCE = """
SELECT current_setting('server_version_num') AS version_num, current_setting('server_version') AS version,
       (SELECT system_identifier FROM pg_control_system()) AS system,
       current_setting('data_directory') AS data_directory,
       current_setting('wal_level') AS wal_level, current_setting('max_wal_senders') AS max_wal_senders,
       current_setting('max_replication_slots') AS max_replication_slots,
       (SELECT count(*) FROM pg_replication_slots) AS slots_used,
       (SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles
         WHERE rolname !~ '^pg_' AND (rolreplication OR rolsuper)) AS replication_roles,
       (SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles WHERE rolname !~ '^pg_' AND rolcanlogin)
         AS login_roles,
       current_setting('ssl') AS ssl, current_setting('ssl_cert_file') AS ssl_cert_file,
       current_setting('max_connections') AS max_connections,
       current_setting('max_worker_processes') AS max_worker_processes,
       current_setting('max_prepared_transactions') AS max_prepared_transactions,
       current_setting('max_locks_per_transaction') AS max_locks_per_transaction,
       current_setting('shared_preload_libraries') AS shared_preload_libraries
"""
# What a hot standby must have at least as high as its primary, or it refuses to start.
STANDBY_SETTINGS = ("max_connections", "max_worker_processes", "max_wal_senders", "max_prepared_transactions",
                    "max_locks_per_transaction")  # fmt: skip
# The roles applications log in with (not superusers, not the migration's own): a SHA-256 of each
# one's stored SCRAM verifier ('' without a password), to compare with pillar's, never the verifier.
SURVEY_ROLES = """
SELECT rolname, CASE WHEN rolpassword IS NULL THEN '' ELSE encode(sha256(convert_to(rolpassword, 'UTF8')), 'hex') END
  FROM pg_authid WHERE rolcanlogin AND NOT rolsuper AND rolname !~ '^pg_' AND rolname <> 'pgcluster_migrate'
 ORDER BY rolname
"""
SURVEY_DATABASES = """
SELECT datname, pg_database_size(oid) AS size, pg_encoding_to_char(encoding) AS encoding, datcollate, datctype
  FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname
"""
# Per database: each finding as (kind, name). Tables in user schemas only.
SURVEY_DATABASE = """
SELECT 'extensions' AS kind, extname AS name FROM pg_extension WHERE extname <> 'plpgsql'
UNION ALL
SELECT 'no_key', format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
   AND (c.relreplident = 'n' OR (c.relreplident = 'd'
        AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)))
UNION ALL
SELECT 'unlogged', format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'u'
UNION ALL
SELECT 'large_objects', count(*)::text FROM pg_largeobject_metadata HAVING count(*) > 0
UNION ALL
SELECT 'tables', count(*)::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
ORDER BY 1, 2
"""


def survey(port: int = 5432, socket_dir: str = "/var/run/postgresql", timeout: float = 30) -> dict:
    """What a migration needs to know of the PostgreSQL server on PORT: version, system identifier,
    WAL and replication settings, TLS, roles (with a SHA-256 of each application role's stored
    verifier, never the verifier), and per database its size, encoding, locale, extensions,
    tables without a primary key or replica identity, unlogged tables, large objects and how many
    tables it holds. Read-only. Raises CommandExecutionError when the server does not answer.

    CLI Example:

    .. code-block:: bash

        salt legacy pgsql.survey port=5432
    """
    conn = {"port": port, "socket_dir": socket_dir, "timeout": timeout}
    (inst,) = query(SURVEY_INSTANCE, names=True, **conn)
    out: dict[str, Any] = {
        "version_num": int(inst["version_num"]),
        "version": inst["version"],
        "major": int(inst["version_num"]) // 10000,
        "system": inst["system"],
        "data_directory": inst["data_directory"],
        "wal_level": inst["wal_level"],
        "max_wal_senders": int(inst["max_wal_senders"]),
        "max_replication_slots": int(inst["max_replication_slots"]),
        "slots_used": int(inst["slots_used"]),
        "replication_roles": [r for r in inst["replication_roles"].split(",") if r],
        "login_roles": [r for r in inst["login_roles"].split(",") if r],
        "ssl": inst["ssl"] == "on",
        "ssl_cert_file": inst["ssl_cert_file"],
        "standby_settings": {k: int(inst[k]) for k in STANDBY_SETTINGS},
        "shared_preload_libraries": sorted(x.strip() for x in inst["shared_preload_libraries"].split(",") if x.strip()),
        "role_digests": role_digests(port, socket_dir, timeout),
        "databases": {},
    }
    for db in query(SURVEY_DATABASES, names=True, **conn):
        found: dict[str, Any] = {"extensions": [], "no_key": [], "unlogged": [], "large_objects": 0, "tables": 0}
        for kind, name in query(SURVEY_DATABASE, dbname=db["datname"], **conn):
            if kind in ("large_objects", "tables"):
                found[kind] = int(name)
            else:
                found[kind].append(name)
        out["databases"][db["datname"]] = {
            "size": int(db["size"]),
            "encoding": db["encoding"],
            "collate": db["datcollate"],
            "ctype": db["datctype"],
            **found,
        }
    out["size"] = sum(d["size"] for d in out["databases"].values())
    return out


def role_digests(port: int = 5432, socket_dir: str = "/var/run/postgresql", timeout: float = 30) -> dict:
    """{role: SHA-256 of its stored SCRAM verifier ('' without a password)} of the login roles
    applications use on the server on PORT (not superusers): to compare verifiers between
    servers and pillar without ever showing one. Read-only.

    CLI Example:

    .. code-block:: bash

        salt pg1 pgsql.role_digests
    """
    return dict(query(SURVEY_ROLES, port=port, socket_dir=socket_dir, timeout=timeout))


# The base backups a server sends now, with what a progress report needs. backup_total is NULL
# when the client said --no-estimate-size: the size of its databases stands in.
BASEBACKUPS = """
SELECT coalesce(host(a.client_addr), 'local') AS client, p.phase, p.backup_streamed AS sent,
       coalesce(p.backup_total, (SELECT sum(pg_database_size(oid)) FROM pg_database)) AS total,
       p.backup_total IS NULL AS estimated, extract(epoch FROM now() - a.backend_start) AS elapsed
FROM pg_stat_progress_basebackup p JOIN pg_stat_activity a USING (pid) ORDER BY a.backend_start
"""


def basebackups(port: int = 5432, socket_dir: str = "/var/run/postgresql", timeout: float = 30) -> list:
    """The base backups the server on PORT is sending now (a pg_basebackup, a new replica's or a
    migration's copy): per copy the client's address, the phase, the bytes sent, the bytes in all
    (the server's own count, or the size of its databases when the client asked for none,
    ``estimated``) and the seconds since it began. Read-only.

    CLI Example:

    .. code-block:: bash

        salt legacy pgsql.basebackups
    """
    rows = query(BASEBACKUPS, names=True, port=port, socket_dir=socket_dir, timeout=timeout)
    return [{"client": r["client"], "phase": r["phase"], "sent_bytes": int(r["sent"]), "total_bytes": int(r["total"]),
             "estimated": r["estimated"] == "t", "elapsed_s": round(float(r["elapsed"]), 1)} for r in rows]  # fmt: skip


ROOM = """
SELECT current_setting('server_version_num') AS version_num, current_setting('data_directory') AS data_directory,
       (SELECT string_agg(name, ',' ORDER BY name) FROM pg_available_extensions) AS extensions
"""


def room(port: int = 5432, socket_dir: str = "/var/run/postgresql", timeout: float = 30) -> dict:
    """What this host's PostgreSQL on PORT offers a migration into it: its major version, the
    extensions it could create (their packages are installed), the locales the system has
    (``locale -a``) and the bytes free on the filesystem of its data directory. Read-only.

    CLI Example:

    .. code-block:: bash

        salt pg1 pgsql.room
    """
    (row,) = query(ROOM, names=True, port=port, socket_dir=socket_dir, timeout=timeout)
    fs = os.statvfs(row["data_directory"])
    locales = __salt__["cmd.run"](["locale", "-a"], python_shell=False, output_loglevel="quiet", cwd="/")
    return {
        "major": int(row["version_num"]) // 10000,
        "extensions": [e for e in row["extensions"].split(",") if e],
        "locales": locales.split(),
        "free": fs.f_bavail * fs.f_frsize,
        "data_directory": row["data_directory"],
    }
