"""Point-in-time restore of the whole cluster (salt-run pgcluster.restore): refusals that touch
nothing, a restore to a time between two writes, a restore to the end of the archive."""

from __future__ import annotations

import json
import uuid

import pytest
from labtools import (
    MEMBERS,
    changed_states,
    cluster,
    highstate,
    lab,
    leader,
    psql,
    salt_json,
    sh,
    wait_for,
    wait_healthy,
)

CONF = "/etc/pgbackrest/pgbackrest.conf"
RUN = uuid.uuid4().hex[:8]  # notes of this run: a lab kept from an earlier run holds others


def restore(*args: str, timeout: float = 900):
    """salt-run pgcluster.restore main ARGS; returns (exit code, parsed return)."""
    res = lab("run", "pgcluster.restore", "main", *args, "--out=json", check=False, timeout=timeout)
    return res.returncode, json.loads(res.stdout or "{}")


def notes(via: str | None = None) -> list[str]:
    """This run's notes (on VIA, default the leader), oldest first, without the run's suffix."""
    rows = psql(via or leader(), f"SELECT note FROM restore_probe WHERE note LIKE '%-{RUN}' ORDER BY id").stdout.split()
    return [r.removesuffix(f"-{RUN}") for r in rows]


def write(note: str) -> str:
    """Insert NOTE on the leader (committed); returns the leader's time right after the commit."""
    psql(leader(), f"INSERT INTO restore_probe(note) VALUES ('{note}-{RUN}')")
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


def answers(host: str) -> bool:
    return "True" in lab("salt", host, "test.ping", "-t", "5", check=False).stdout


def test_a_restore_with_a_member_out_of_reach_is_refused_and_changes_nothing(probe):
    """A member the runner cannot reach through Salt (its minion frozen: the same silence as a
    host down, without a PostgreSQL to bring back afterwards) stops the restore before any step."""
    write("before-member-out-of-reach")
    old = leader()
    victim = next(m for m in MEMBERS if m != old)
    sh(victim, "pkill -STOP -f bin/salt-minion")
    try:
        code, ret = restore("confirm=True")
        # Asked through the leader's minion: the victim's would not answer.
        assert leader(via=old) == old and notes(via=old)[-1] == "before-member-out-of-reach"
    finally:
        sh(victim, "pkill -CONT -f bin/salt-minion")
        wait_for(f"{victim}'s minion answering", lambda: answers(victim), 60)
    assert code != 0 and f"{victim} does not answer" in ret.get("error", ""), ret
    assert snapshot()["leader"] == old


def restored_from(host: str) -> str:
    """The backup set of HOST's last pgBackRest restore, from its restore log."""
    log = sh(host, "grep -h 'restore backup set' /var/log/pgbackrest/main-restore.log | tail -1").stdout
    return log.split("restore backup set ", 1)[1].split(",")[0]


def test_restore_to_a_time_between_two_writes(probe):
    write("A")
    target = write("A2")
    psql(leader(), "SELECT pg_sleep(1)")
    write("B")
    # A backup after the target: pgBackRest must pick the one before it.
    after_target = salt_json("backup", "pgbackrest.backup", "main", "kind=incr", "-t", "600")["backup"]["label"]
    timeline = max(m["timeline"] for m in cluster()["members"])
    code, ret = restore(f"target={target}", "confirm=True")
    assert code == 0, ret
    after = notes()
    assert "A" in after and "A2" in after and "B" not in after, after
    assert restored_from(ret["leader"]) != after_target
    c = wait_healthy(2, timeout=120)
    assert c["leader"] == ret["leader"] and min(m["timeline"] for m in c["members"]) > timeline
    assert sorted(ret["streaming"]) == sorted(m for m in MEMBERS if m != ret["leader"])
    # Clients through PgBouncer write to the restored leader; archiving works on the new timeline.
    assert sh("app1", "psql service=app -XAtc \"INSERT INTO failover_probe(note) VALUES ('after-restore') "
                      "RETURNING inet_server_port()\" </dev/null").stdout.strip()  # fmt: skip
    assert salt_json("backup", "pgbackrest.check", "main")["backup"] is True
    # The replicas came from the repository (the new timeline's full backup), not from basebackup.
    for m in ret["streaming"]:
        assert restored_from(m) == ret["backup"]
    # Backups from before the restore are kept (the restore's own backup expires nothing).
    assert after_target in {b["label"] for b in salt_json("backup", "pgbackrest.info", "main")["backup"]["backups"]}


def test_restore_to_a_time_after_the_last_commit_of_a_quiet_cluster(probe):
    write("C")
    target = write("C2")
    psql(leader(), "SELECT pg_sleep(1)")
    # No commit after TARGET but the runner's own: without it recovery would end before the target.
    code, ret = restore(f"target={target}", "confirm=True")
    assert code == 0, ret
    assert notes()[-2:] == ["C", "C2"]
    wait_healthy(2, timeout=120)


def test_restore_to_latest_keeps_every_archived_write_and_highstate_is_quiet_after(probe):
    write("D")
    code, ret = restore("target=latest", "confirm=True")
    assert code == 0, ret
    assert notes()[-1] == "D"
    wait_healthy(2, timeout=120)
    ret = highstate()
    assert changed_states(ret) == {m: [] for m in ret}


def test_a_restore_stopped_after_its_leader_is_up_says_so_and_running_it_again_finishes_it(probe):
    write("E")
    target = write("E2")
    psql(leader(), "SELECT pg_sleep(1)")
    write("F")
    # The repository refuses new backups (info, check and archive-get still work): the restore
    # gets its leader up, then fails at the full backup of the new timeline.
    repo_dir = "/var/lib/pgbackrest/backup/main"
    sh("backup", f"chmod 0555 {repo_dir}")
    try:
        code, ret = restore(f"target={target}", "confirm=True")
    finally:
        sh("backup", f"chmod 0750 {repo_dir}")
    error = ret.get("error", "")
    assert code != 0 and "stopped at 'full backup of the new timeline'" in error, ret
    assert "confirms no commit until a replica streams" in error, error
    assert "It resumes at 'full backup of the new timeline'." in error, error
    assert error.endswith("To finish: salt-run pgcluster.restore main confirm=True"), error
    # The one command the message names finishes the job: replicas rebuilt, commits confirmed again.
    code, ret = restore("confirm=True")
    assert code == 0 and ret["resumed"] is True, ret
    assert notes()[-2:] == ["E", "E2"]
    wait_healthy(2, timeout=120)
    assert sh("app1", "psql service=app -qXAtc \"INSERT INTO failover_probe(note) VALUES ('after-resumed-restore') "
                      "RETURNING 1\" </dev/null", timeout=60).stdout.strip() == "1"  # fmt: skip
    assert salt_json("backup", "pgbackrest.check", "main")["backup"] is True
