"""Point-in-time restore of the whole cluster (salt-run pgcluster.restore): refusals that touch
nothing, a restore to a time between two writes, a restore to the end of the archive."""

from __future__ import annotations

import json

import pytest
from labtools import MEMBERS, changed_states, cluster, highstate, lab, leader, psql, salt_json, sh, wait_healthy

CONF = "/etc/pgbackrest/pgbackrest.conf"


def restore(*args: str, timeout: float = 900):
    """salt-run pgcluster.restore main ARGS; returns (exit code, parsed return)."""
    res = lab("run", "pgcluster.restore", "main", *args, "--out=json", check=False, timeout=timeout)
    return res.returncode, json.loads(res.stdout or "{}")


def notes() -> list[str]:
    return psql(leader(), "SELECT note FROM restore_probe ORDER BY id").stdout.split()


def write(note: str) -> str:
    """Insert NOTE on the leader (committed); returns the leader's time right after the commit."""
    psql(leader(), f"INSERT INTO restore_probe(note) VALUES ('{note}')")
    return psql(leader(), "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                          "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')").stdout.strip()  # fmt: skip


def snapshot() -> dict:
    """What a refused restore must leave as it was."""
    c = wait_healthy(2, timeout=60)
    state = {m["name"]: (m["role"], m["state"], m["timeline"]) for m in c["members"]}
    return {"leader": c["leader"], "members": state, "notes": notes()}


@pytest.fixture(scope="module")
def probe(deployed):
    psql(leader(), "CREATE TABLE IF NOT EXISTS restore_probe(id bigserial, note text)")


@pytest.mark.parametrize(
    "case, args, setup, undo, expected",
    [
        ("no confirmation", ["target=latest"], "", "", "nothing done; run again with confirm=True"),
        ("target before the oldest backup", ["target=2000-01-01T00:00:00+00:00", "confirm=True"], "", "",
         "is before the end of the oldest backup"),
        ("target in the future", ["target=2099-01-01T00:00:00+00:00", "confirm=True"], "", "", "is in the future"),
        ("wrong passphrase", ["confirm=True"],
         f"cp -p {CONF} /root/pgbackrest.conf.good && "
         f"sed -i 's/^repo1-cipher-pass=.*/repo1-cipher-pass=not-the-passphrase-at-all/' {CONF}",
         f"cp -p /root/pgbackrest.conf.good {CONF}", "(is the repository passphrase right?)"),
        ("unreachable repository", ["confirm=True"], "systemctl stop pgbackrest", "systemctl start pgbackrest",
         "cannot reach the repository"),
    ],
)  # fmt: skip
def test_a_refused_restore_changes_nothing(probe, case, args, setup, undo, expected):
    write(f"before-{case.replace(' ', '-')}")
    before = snapshot()
    if setup:
        sh("backup", setup)
    try:
        code, ret = restore(*args)
    finally:
        if undo:
            sh("backup", undo)
    assert code != 0 and expected in ret.get("error", ""), ret
    assert snapshot() == before


def test_restore_to_a_time_between_two_writes(probe):
    write("A")
    target = write("A2")
    psql(leader(), "SELECT pg_sleep(1)")
    write("B")
    timeline = max(m["timeline"] for m in cluster()["members"])
    code, ret = restore(f"target={target}", "confirm=True")
    assert code == 0, ret
    after = notes()
    assert "A" in after and "A2" in after and "B" not in after, after
    c = wait_healthy(2, timeout=120)
    assert c["leader"] == ret["leader"] and min(m["timeline"] for m in c["members"]) > timeline
    assert sorted(ret["streaming"]) == sorted(m for m in MEMBERS if m != ret["leader"])
    # Clients through PgBouncer write to the restored leader; archiving works on the new timeline.
    assert sh("app1", "psql service=app -XAtc \"INSERT INTO failover_probe(note) VALUES ('after-restore') "
                      "RETURNING inet_server_port()\" </dev/null").stdout.strip()  # fmt: skip
    assert salt_json("backup", "pgbackrest.check", "main")["backup"] is True
    # The replicas came from the repository (the new timeline's full backup), not from basebackup.
    for m in ret["streaming"]:
        log = sh(m, "cat /var/log/pgbackrest/main-restore.log").stdout
        assert f"restore backup set {ret['backup']}," in log


def test_restore_to_latest_keeps_every_archived_write_and_highstate_is_quiet_after(probe):
    write("C")
    code, ret = restore("target=latest", "confirm=True")
    assert code == 0, ret
    assert "C" in notes()
    wait_healthy(2, timeout=120)
    ret = highstate()
    assert changed_states(ret) == {m: [] for m in ret}
