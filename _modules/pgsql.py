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
