"""_modules/pgbackrest.py against output recorded from the lab's real pgBackRest 2.45."""

from __future__ import annotations

import json
import socket

import pytest
from pgctest import FIXTURES, load_module

INFO = (FIXTURES / "pgbackrest" / "info.json").read_text()
# `pgbackrest check` from the backup host while pg1 was stopped (lab stop pg1), before the fix.
CHECK_PG1_DOWN = (
    "WARN: unable to check pg1: [HostConnectError] unable to connect to 'pg1:8432': [113] No route to host\n"
    "ERROR: [049]: unable to connect to 'pg1:8432': [113] No route to host\n"
)


@pytest.fixture
def pgbr(tmp_path):
    """The module with cmd.run_all answering from a queue of results; runs are remembered."""
    conf = tmp_path / "pgbackrest.conf"
    conf.write_text("[global]\nrepo1-path=/var/lib/pgbackrest\n")
    results: list[dict] = []
    ran: list[list[str]] = []

    def run_all(cmd, **kwargs):
        ran.append(cmd)
        return results.pop(0)

    mod = load_module("modules", "pgbackrest", salt={"cmd.run_all": run_all})
    mod.CONFIG = str(conf)
    mod._user = lambda config=None: "pgbackrest"
    mod.results, mod.ran = results, ran
    return mod


def test_info_is_structured_oldest_first(pgbr):
    pgbr.results.append({"retcode": 0, "stdout": INFO, "stderr": ""})
    i = pgbr.info("main")
    assert i["exists"] and i["status"] == "ok" and i["cipher"] == "aes-256-cbc"
    assert [b["type"] for b in i["backups"]][:2] == ["full", "incr"]
    full = i["backups"][0]
    assert full["label"] == "20261126-012851F" and full["prior"] is None
    assert full["stop"] == "2026-11-26T01:28:54+00:00" and full["size"] == 23047496
    assert i["backups"][1]["prior"] == "20261126-012851F"
    assert i["recoverable_from"] == full["stop"]
    assert i["archive"]["min"] == "000000010000000000000001"
    assert "--output=json" in pgbr.ran[0] and pgbr.ran[0][:4] == ["runuser", "-u", "pgbackrest", "--"]


def test_info_with_an_unreadable_repository_raises(pgbr):
    raw = json.loads(INFO)
    raw[0].update(backup=[], archive=[], status={"code": 99, "message": "other"})
    pgbr.results.append({"retcode": 0, "stdout": json.dumps(raw), "stderr": ""})
    with pytest.raises(pgbr.PgBackRestError, match=r"stanza main: other \(code 99\)"):
        pgbr.info("main")


def test_errors_are_one_line_with_pgbackrest_code(pgbr):
    pgbr.results.append({"retcode": 49, "stdout": CHECK_PG1_DOWN, "stderr": ""})
    with pytest.raises(pgbr.PgBackRestError) as exc:
        pgbr.check("main")
    assert str(exc.value) == (
        "pgbackrest check: [049] unable to connect to 'pg1:8432': [113] No route to host "
        "(pg1 unusable: [HostConnectError] unable to connect to 'pg1:8432': [113] No route to host)"
    )
    assert exc.value.code == 49


# Seen in the lab: a backup started while the restored leader was still promoting.
BACKUP_NO_PRIMARY = (
    "WARN: unable to check pg1: [DbConnectError] raised from remote-0 tls protocol on 'pg1': unable to connect "
    "to 'dbname='postgres' port=5432 host='/var/run/postgresql'': connection to server on socket "
    '"/var/run/postgresql/.s.PGSQL.5432" failed: FATAL:  the database system is starting up\n'
    "WARN: unable to check pg2: [DbConnectError] raised from remote-0 tls protocol on 'pg2': unable to connect "
    "to 'dbname='postgres' port=5432 host='/var/run/postgresql'': connection to server on socket "
    '"/var/run/postgresql/.s.PGSQL.5432" failed: No such file or directory\n'
    "ERROR: [056]: unable to find primary cluster - cannot proceed\n"
)


def test_no_primary_found_says_why_for_each_server(pgbr, monkeypatch):
    monkeypatch.setattr(pgbr, "reachable_options", lambda stanza: [])
    pgbr.results.append({"retcode": 56, "stdout": BACKUP_NO_PRIMARY, "stderr": ""})
    with pytest.raises(pgbr.PgBackRestError) as exc:
        pgbr.backup("main", kind="full")
    msg = str(exc.value)
    assert msg.startswith("pgbackrest backup: [056] unable to find primary cluster - cannot proceed (pg1 unusable: ")
    assert "failed: FATAL:  the database system is starting up; pg2 unusable: ..." in msg
    assert msg.endswith("failed: No such file or directory)")


def test_a_bad_backup_type_runs_nothing(pgbr):
    with pytest.raises(pgbr.PgBackRestError, match="backup kind 'weekly': must be full, diff or incr"):
        pgbr.backup("main", kind="weekly")
    assert pgbr.ran == []


def _port(listening: list[socket.socket]) -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    if listening is not None:
        s.listen()
        listening.append(s)
    else:
        s.close()
    return port


def test_servers_that_do_not_answer_are_left_out(pgbr, tmp_path):
    open_: list[socket.socket] = []
    down, up2, up3 = _port(None), _port(open_), _port(open_)
    conf = tmp_path / "pgbackrest.conf"
    lines = ["[global]", "tls-server-auth=pg1=main", "tls-server-auth=pg2=main", "[main]"]
    for i, port in enumerate((down, up2, up3), 1):
        lines += [f"pg{i}-host=127.0.0.1", f"pg{i}-host-port={port}", f"pg{i}-path=/srv/pg"]
    conf.write_text("\n".join(lines) + "\n")
    try:
        args = pgbr.reachable_options("main", config=str(conf), timeout=1)
        assert args == [
            f"--pg1-host-port={up2}",
            f"--pg2-host-port={up3}",
            "--reset-pg3-host",
            "--reset-pg3-host-port",
            "--reset-pg3-path",
        ]
        # Every server answers: no option at all.
        conf.write_text(conf.read_text().replace(str(down), str(up2)))
        assert pgbr.reachable_options("main", config=str(conf), timeout=1) == []
    finally:
        for s in open_:
            s.close()


def test_check_passes_the_reachable_options(pgbr, monkeypatch):
    monkeypatch.setattr(pgbr, "reachable_options", lambda stanza: ["--pg1-host=pg2", "--reset-pg3-host"])
    pgbr.results.append({"retcode": 0, "stdout": "", "stderr": ""})
    assert pgbr.check("main") is True
    assert pgbr.ran[0][-4:] == ["--stanza=main", "--pg1-host=pg2", "--reset-pg3-host", "check"]


@pytest.mark.parametrize(
    "fixture, why",
    [
        # Salt decodes pgBackRest's output with errors="replace"; the garbage holds control characters.
        (
            "info_wrong_passphrase",
            "[FormatError] unable to load info file '/var/lib/pgbackrest/backup/main/backup.info'",
        ),
        ("info_repo_unreachable", "[HostConnectError] unable to connect to 'backup:8499': [111] Connection refused"),
    ],
)
def test_an_unreadable_or_unreachable_repository_is_one_line_naming_why(pgbr, fixture, why):
    out = (FIXTURES / "pgbackrest" / f"{fixture}.json").read_bytes().decode(errors="replace")
    pgbr.results.append({"retcode": 0, "stdout": out, "stderr": ""})
    with pytest.raises(pgbr.PgBackRestError) as exc:
        pgbr.info("main", io_timeout=10)
    assert str(exc.value).startswith(f"pgbackrest info: stanza main: {why}")
    assert str(exc.value).endswith("(code 99)") and "\n" not in str(exc.value)
    assert "--io-timeout=10" in pgbr.ran[0]
