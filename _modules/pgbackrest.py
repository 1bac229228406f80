"""pgBackRest on this host: info as structured data, backup, check, expire, stanza-create, restore.

pgBackRest runs as the OS user that owns the repository on a backup host (``pgbackrest``) or
as ``postgres`` on a database server: the group of ``pgbackrest.conf`` (0640, written by the
formula) says which. The repository passphrase lives in that file only: it is never on a
command line, and pgBackRest's own output (which never prints it) is not logged by Salt.

CLI examples::

    salt backup pgbackrest.info main
    salt backup pgbackrest.backup main kind=full
    salt backup pgbackrest.check main
"""

from __future__ import annotations

import concurrent.futures
import configparser
import datetime
import grp
import json
import os
import re
import shutil
import socket
import time
from typing import Any

import salt.utils.files
from salt.exceptions import CommandExecutionError

__virtualname__ = "pgbackrest"
BIN = "/usr/bin/pgbackrest"
CONFIG = "/etc/pgbackrest/pgbackrest.conf"
# info's status codes (pgBackRest's command/info/info.c): the stanza exists in these.
STANZA_EXISTS = {0: "ok", 2: "no valid backups", 6: "backup/expire running"}
ERROR = re.compile(r"(?:ERROR|ASSERT): \[(\d+)\]: (.*)")
PG_OPTION = re.compile(r"pg(\d+)-(.+)")
UNUSABLE = re.compile(r"WARN: unable to check (pg\d+): (.*)")
# A database server whose pgBackRest TLS server does not accept a connection within this many
# seconds is left out of check/backup: pgBackRest itself would retry it for minutes and then fail.
# The probes run in parallel; a loaded but live server must not be left out (it may be the primary).
PROBE_TIMEOUT = 5.0


def __virtual__():
    if not os.path.exists(BIN):
        return (False, f"pgbackrest: {BIN} is not installed (Debian: pgbackrest)")
    if not shutil.which("runuser"):
        return (False, "pgbackrest: runuser is not installed (util-linux)")
    return __virtualname__


class PgBackRestError(CommandExecutionError):
    """pgBackRest failed; ``code`` is its error number (e.g. 56: no primary found), 0 if unknown."""

    def __init__(self, message: str, code: int = 0):
        super().__init__(message)
        self.code = code


def _user(config: str = CONFIG) -> str:
    try:
        return grp.getgrgid(os.stat(config).st_gid).gr_name
    except (OSError, KeyError):
        raise PgBackRestError(f"pgBackRest is not configured on this host ({config} is missing)") from None


def _run(args: list[str], timeout: float | None = None, console: str = "warn", config: str = CONFIG) -> str:
    """Run pgBackRest with ARGS; return its standard output. Raises PgBackRestError with its message."""
    cmd = ["runuser", "-u", _user(config), "--", BIN, f"--config={config}", f"--log-level-console={console}",
           "--log-level-stderr=off", *args]  # fmt: skip
    res: dict[str, Any] = __salt__["cmd.run_all"](
        cmd, python_shell=False, output_loglevel="quiet", ignore_retcode=True, cwd="/", timeout=timeout
    )
    if res["retcode"] != 0:
        raise _error(args, res)
    return res["stdout"]


def _ending(text: str, size: int = 160) -> str:
    """The end of TEXT (where libpq and pgBackRest say the cause), at most SIZE characters."""
    text = text.strip()
    return text if len(text) <= size else "..." + text[-size:]


def _error(args: list[str], res: dict) -> PgBackRestError:
    text = f"{res.get('stdout', '')}\n{res.get('stderr', '')}"
    found = ERROR.findall(text)
    command = next((a for a in args if not a.startswith("-")), "pgbackrest")
    if found:
        code, message = found[-1]
        # Why no primary was found: pgBackRest only warns about each database server it could not use.
        why = "; ".join(f"{pg} unusable: {_ending(w)}" for pg, w in UNUSABLE.findall(text))
        return PgBackRestError(f"pgbackrest {command}: [{code}] {message.strip()}{f' ({why})' if why else ''}",
                               int(code))  # fmt: skip
    tail = " ".join(text.split())[-300:] or f"exit code {res['retcode']}"
    return PgBackRestError(f"pgbackrest {command}: {tail}")


def _pg_hosts(stanza: str, config: str = CONFIG) -> dict[int, dict[str, str]]:
    """The database servers of STANZA in CONFIG: {index: {option (without ``pgN-``): value}}."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    try:
        parser.read(config)
    except configparser.Error as exc:
        raise PgBackRestError(f"{config}: {exc}") from None
    hosts: dict[int, dict[str, str]] = {}
    for section in ("global", stanza):
        for key, value in parser.items(section) if parser.has_section(section) else []:
            m = PG_OPTION.fullmatch(key)
            if m:
                hosts.setdefault(int(m[1]), {})[m[2]] = value
    return dict(sorted(hosts.items()))


def _answers(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def reachable_options(stanza: str, config: str = CONFIG, timeout: float = PROBE_TIMEOUT) -> list[str]:
    """Command-line options that leave out STANZA's database servers that do not answer.

    pgBackRest (2.45) gives up a ``check`` after minutes of retries when one configured
    database server is unreachable, even when the primary answers. The servers that answer are
    renumbered pg1..pgK (an option is given where its value differs from the config's at the new
    index) and the options of the indexes above K are reset. Returns [] when every server
    answers, or none does (then pgBackRest's own error says what is wrong).

    CLI Example:

    .. code-block:: bash

        salt backup pgbackrest.reachable_options main
    """
    hosts = _pg_hosts(stanza, config)
    remote = {i: o for i, o in hosts.items() if o.get("host")}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(len(remote), 1)) as pool:
        probes = {
            i: pool.submit(_answers, o["host"], int(o.get("host-port", 8432)), timeout) for i, o in remote.items()
        }
    up = [i for i, probe in probes.items() if probe.result()]
    if not up or len(up) == len(remote):
        return []
    args = []
    for new, old in enumerate(up, 1):
        args += [f"--pg{new}-{k}={v}" for k, v in remote[old].items() if hosts.get(new, {}).get(k) != v]
    for i in list(remote)[len(up) :]:
        args += [f"--reset-pg{i}-{option}" for option in hosts[i]]
    return args


def _time(epoch: Any) -> str | None:
    if not isinstance(epoch, int | float):
        return None
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat()


def _parse_info(raw: list[dict]) -> dict:
    """pgBackRest's ``info --output=json`` as {stanza: summary}, oldest backup first.

    A summary has ``status`` (message), ``status_code``, ``exists`` (the stanza was created),
    ``cipher``, ``backups`` [{label, type, prior, start, stop (ISO 8601, UTC), size, repo_size,
    wal_start, wal_stop, lsn_start, lsn_stop, error}], ``archive`` {min, max} and
    ``recoverable_from`` (the end of the oldest good backup: no restore target can be earlier).
    """
    out = {}
    for s in raw:
        backups = []
        for b in s.get("backup") or []:
            ts, info, lsn, arc = (
                b.get("timestamp") or {},
                b.get("info") or {},
                b.get("lsn") or {},
                b.get("archive") or {},
            )
            backups.append({
                "label": b.get("label"),
                "type": b.get("type"),
                "prior": b.get("prior"),
                "start": _time(ts.get("start")),
                "stop": _time(ts.get("stop")),
                "size": info.get("size"),
                "repo_size": (info.get("repository") or {}).get("delta"),
                "wal_start": arc.get("start"),
                "wal_stop": arc.get("stop"),
                "lsn_start": lsn.get("start"),
                "lsn_stop": lsn.get("stop"),
                "error": bool(b.get("error")),
            })  # fmt: skip
        archives = [a for a in s.get("archive") or [] if a.get("min")]
        status = s.get("status") or {}
        # Why a repository cannot be read (unreachable, wrong passphrase): its first line only,
        # the rest may quote undecryptable bytes.
        repo_errors = [str((r.get("status") or {}).get("message", "")).split("\n")[0]
                       for r in s.get("repo") or [] if (r.get("status") or {}).get("code")]  # fmt: skip
        good = [b for b in backups if not b["error"]]
        out[s.get("name")] = {
            "status": status.get("message"),
            "status_code": status.get("code"),
            "repo_error": "; ".join(repo_errors) or None,
            "exists": status.get("code") in STANZA_EXISTS,
            "cipher": s.get("cipher"),
            "backups": backups,
            "archive": {"min": archives[0]["min"], "max": archives[-1]["max"]} if archives else None,
            "recoverable_from": good[0]["stop"] if good else None,
        }
    return out


def info(stanza: str, io_timeout: int | None = None) -> dict:
    """The summary of STANZA (see ``_parse_info``). Raises PgBackRestError when pgBackRest fails
    (repository unreachable, wrong passphrase...) or reports an error status other than "no stanza".

    IO_TIMEOUT (seconds) bounds pgBackRest's connection attempts to a remote repository
    (its default, 60 s, makes an unreachable repository take two minutes to report).

    CLI Example:

    .. code-block:: bash

        salt backup pgbackrest.info main
    """
    args = [f"--stanza={stanza}", "--output=json", *([f"--io-timeout={io_timeout}"] if io_timeout else [])]
    out = _run([*args, "info"], timeout=120) or "[]"
    try:
        # strict=False: pgBackRest quotes a wrongly decrypted file's bytes, control characters too.
        summary = _parse_info(json.loads(out, strict=False))
    except ValueError as exc:
        raise PgBackRestError(f"pgbackrest info: unreadable output ({exc})") from None
    s = summary.get(stanza)
    if s is None:
        raise PgBackRestError(f"pgbackrest info: stanza {stanza} not reported")
    if s["status_code"] not in (*STANZA_EXISTS, 1, 3):  # 1, 3: stanza not created yet
        why = s["repo_error"] or s["status"]
        raise PgBackRestError(f"pgbackrest info: stanza {stanza}: {why} (code {s['status_code']})", s["status_code"])
    return s


def stanza_create(stanza: str) -> str:
    """Create STANZA (idempotent: pgBackRest accepts an existing, matching stanza). Returns pgBackRest's words.

    CLI Example:

    .. code-block:: bash

        salt backup pgbackrest.stanza_create main
    """
    args = [f"--stanza={stanza}", *reachable_options(stanza)]
    return _run([*args, "stanza-create"], timeout=300, console="info").strip()


def stanza_upgrade(stanza: str) -> str:
    """``stanza-upgrade``: STANZA follows the database system its pg hosts run now (a new major
    version, or a new system identifier: a physical migration replaced the cluster's data). The
    earlier system's backups and WAL stay as history until retention expires them. Idempotent
    ("already up to date"). Returns pgBackRest's words.

    CLI Example:

    .. code-block:: bash

        salt backup pgbackrest.stanza_upgrade main
    """
    args = [f"--stanza={stanza}", *reachable_options(stanza)]
    return _run([*args, "stanza-upgrade"], timeout=300, console="info").strip()


def check(stanza: str, timeout: float = 300) -> bool:
    """``pgbackrest check``: the leader's WAL reaches the repository. True, or raises PgBackRestError.

    Database servers that do not answer are left out (see ``reachable_options``).

    CLI Example:

    .. code-block:: bash

        salt backup pgbackrest.check main
    """
    _run([f"--stanza={stanza}", *reachable_options(stanza), "check"], timeout=timeout)
    return True


def backup(stanza: str, kind: str = "incr", timeout: float = 7200, expire_auto: bool = True) -> dict:
    """Take a KIND (full, diff, incr) backup of STANZA from its leader; returns the new backup's summary.

    Database servers that do not answer are left out (see ``reachable_options``): the scheduled
    backups run this (through ``salt-call --local``) so that one server down does not stop them.
    EXPIRE_AUTO=False keeps every older backup (pgBackRest applies the retention after a backup
    by default): the restore runner's backup must not expire what came before the restore.

    CLI Example:

    .. code-block:: bash

        salt backup pgbackrest.backup main kind=full
    """
    if kind not in ("full", "diff", "incr"):
        raise PgBackRestError(f"backup kind {kind!r}: must be full, diff or incr")
    args = [f"--stanza={stanza}", *reachable_options(stanza), f"--type={kind}"]
    _run([*args, *([] if expire_auto else ["--no-expire-auto"]), "backup"], timeout=timeout)
    return info(stanza)["backups"][-1]


def expire(stanza: str) -> list[str]:
    """Apply the retention of STANZA now; returns the labels of the backups that remain.

    CLI Example:

    .. code-block:: bash

        salt backup pgbackrest.expire main
    """
    _run([f"--stanza={stanza}", "expire"], timeout=600)
    return [b["label"] for b in info(stanza)["backups"]]


def restore(stanza: str, target: str = "latest", delta: bool = True, timeout: float = 7200) -> str:
    """Restore STANZA into this database server's (stopped) data directory.

    TARGET ``latest`` replays all archived WAL; otherwise a timestamp, recovery stops there and the
    server promotes. The backup set is chosen by pgBackRest (the newest that ends before TARGET).
    Returns pgBackRest's output; raises PgBackRestError.

    CLI Example:

    .. code-block:: bash

        salt pg1 pgbackrest.restore main target='2026-11-26 01:40:00+00'
    """
    args = [f"--stanza={stanza}"]
    if delta:
        args.append("--delta")
    if target != "latest":
        args += ["--type=time", f"--target={target}", "--target-action=promote"]
    return _run([*args, "restore"], timeout=timeout, console="info")


# Recovery settings pgBackRest's restore writes to postgresql.auto.conf. Left there, they would
# stop any later standby of this data directory at the restore target.
RECOVERY_SETTINGS = ("restore_command", "recovery_target_time", "recovery_target_action", "recovery_target_timeline")


def _tail(path: str, lines: int = 5) -> str:
    try:
        with salt.utils.files.fopen(path, errors="replace") as f:
            return " | ".join(line.strip() for line in f.readlines()[-lines:])
    except OSError:
        return ""


def _drop_settings(conf: str, names: tuple[str, ...]) -> None:
    """Remove the lines of CONF that set NAMES (the file keeps its owner and mode)."""
    with salt.utils.files.fopen(conf, "r+") as f:
        lines = f.readlines()
        keep = [line for line in lines if line.split("=", 1)[0].strip() not in names]
        if keep != lines:
            f.seek(0)
            f.writelines(keep)
            f.truncate()


def _query(sql: str) -> str | None:
    """SQL's output on the local PostgreSQL, or None while it does not answer."""
    try:
        return __salt__["patroni.psql"](sql, timeout=30)
    except CommandExecutionError:
        return None


def restore_primary(stanza: str, target: str = "latest", timeout: float = 7200) -> dict:
    """Restore STANZA into this database server (Patroni stopped) and recover it to TARGET.

    pgBackRest restores (``--delta``) the newest backup before TARGET; PostgreSQL is then started
    by hand on the local socket only, replays WAL from the repository up to TARGET (``latest``:
    to the end of the archive), promotes to a new timeline, and is stopped cleanly, ready for
    Patroni to start it as the leader. All of it within TIMEOUT seconds. Returns {data_dir,
    target, timeline, lsn, seconds}; raises PgBackRestError (with the end of PostgreSQL's log
    when recovery fails).

    CLI Example:

    .. code-block:: bash

        salt pg1 pgbackrest.restore_primary main target=latest
    """
    start = time.monotonic()
    deadline = start + timeout
    try:
        data = __salt__["patroni.assert_stopped"]()["data_dir"]
    except CommandExecutionError as exc:
        raise PgBackRestError(f"nothing restored: {exc}") from None
    restore(stanza, target=target, delta=True, timeout=timeout)
    # Patroni 4.1.5 (quorum mode, strict) writes synchronous_standby_names = 'ANY None (*)' while a
    # leader is alone; PostgreSQL ignores it on reload but will not start with it, and a backup
    # taken then carries it. Patroni rewrites postgresql.conf when it starts this member.
    _drop_settings(f"{data}/postgresql.conf", ("synchronous_standby_names",))
    log = f"{os.path.dirname(data)}/pgcluster-restore.log"
    # Local socket only: no client may write before recovery has ended and Patroni leads.
    left = max(deadline - time.monotonic(), 60)
    started = __salt__["patroni.pg_ctl"]("start", "-w", "-t", str(int(left)), "-l", log,
                                         "-o", "-c listen_addresses=''", timeout=left + 30)  # fmt: skip
    if started["retcode"] != 0:
        raise PgBackRestError(f"recovery of {data} failed: {_tail(log)}")
    try:
        while _query("SELECT pg_is_in_recovery()") != "f":
            if time.monotonic() > deadline or __salt__["patroni.pg_ctl_status"]() != 0:
                raise PgBackRestError(f"recovery of {data} did not end: {_tail(log)}")
            time.sleep(1)
        done = __salt__["patroni.psql"]("SELECT pg_walfile_name(pg_current_wal_lsn()), pg_current_wal_lsn()")
        __salt__["patroni.psql"]("".join(f"ALTER SYSTEM RESET {name};\n" for name in RECOVERY_SETTINGS))
    except CommandExecutionError as exc:
        raise PgBackRestError(f"recovery of {data}: {exc}") from None
    finally:
        __salt__["patroni.pg_ctl"]("stop", "-m", "fast", "-w", "-t", "300", timeout=330)
    walfile, lsn = done.split("|")
    return {"data_dir": data, "target": target, "timeline": int(walfile[:8], 16), "lsn": lsn,
            "seconds": round(time.monotonic() - start, 1)}  # fmt: skip
