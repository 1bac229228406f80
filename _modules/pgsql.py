"""Run SQL on this host's PostgreSQL as the ``postgres`` OS user, over the local socket.

SQL travels on psql's standard input, never on its command line, so that nothing
sensitive (role passwords are sent as SCRAM verifiers anyway) shows in process lists;
output is not logged.
"""

from __future__ import annotations

from typing import Any

from salt.exceptions import CommandExecutionError

__virtualname__ = "pgsql"
SEP = "\x1f"


def __virtual__():
    return __virtualname__


def literal(value: str) -> str:
    """SQL string literal of VALUE (standard_conforming_strings is on since PostgreSQL 9.1)."""
    return "'" + str(value).replace("'", "''") + "'"


def ident(value: str) -> str:
    """SQL identifier of VALUE, always quoted."""
    return '"' + str(value).replace('"', '""') + '"'


def query(
    sql: str,
    dbname: str = "postgres",
    port: int = 5432,
    socket_dir: str = "/var/run/postgresql",
    user: str = "postgres",
) -> list[list[str]]:
    """Run SQL; return the rows of its last statement as lists of strings.

    Raises CommandExecutionError with psql's message when the SQL fails.
    """
    # runuser, not cmd.run's runas: runas first spawns a login shell to copy its environment,
    # which costs a few hundred milliseconds on every call (and repointing is on the hot path).
    cmd = ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-A", "-t", "-F", SEP,
           "-v", "ON_ERROR_STOP=1", "-h", socket_dir, "-p", str(port), "-d", dbname]  # fmt: skip
    res: dict[str, Any] = __salt__["cmd.run_all"](
        cmd, stdin=sql, python_shell=False, output_loglevel="quiet", ignore_retcode=True, cwd="/"
    )
    if res["retcode"] != 0:
        raise CommandExecutionError(f"psql on port {port}, database {dbname}: {res['stderr'].strip()}")
    return [line.split(SEP) for line in res["stdout"].splitlines() if line]
