"""PgBouncer follows the leader: callbacks -> events -> reactor -> every PgBouncer repointed."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from labtools import (
    ADDRESS,
    LAB,
    MEMBERS,
    PGBOUNCERS,
    admin_databases,
    all_route_to,
    all_route_to_by_console,
    cluster,
    events,
    lab,
    leader,
    psql,
    routes,
    runner_switchover_under_pgbench,
    salt_json,
    sh,
    streaming_replicas,
    switchover_by_hand,
    wait_for,
    wait_healthy,
)


def test_every_pgbouncer_routes_to_the_leader(deployed):
    assert all_route_to(leader())
    status = json.loads(lab("run", "pgcluster.status", "main", "--out=json").stdout)
    assert status["misrouted"] == [] and status["leader"] == leader()


def test_app1_connects_through_pgbouncer_with_no_prompt(deployed):
    out = sh("app1", "psql service=app -XAtc 'select current_user, inet_server_port()' </dev/null").stdout.strip()
    assert out == "app|5432"
    res = sh("app1", "cd / && runuser -u app -- env PGSERVICE=app pgbench -i -s 1 -q </dev/null 2>&1 && "
                     "runuser -u app -- env PGSERVICE=app pgbench -n -T 2 -c 2")  # fmt: skip
    assert "number of failed transactions: 0" in res.stdout
    assert sh("app1", "pgbench -n -t 5 service=app </dev/null").returncode == 0  # root, by service name
    creds = sh("app1", "stat -c '%a %U' /root/.pgpass /etc/pgbouncer/userlist.txt").stdout.split("\n")
    assert creds[:2] == ["600 root", "640 postgres"]
    assert "lab-app-pw" not in sh("app1", "cat /etc/pgbouncer/userlist.txt").stdout  # a verifier, not the password


def test_patronictl_switchover_by_hand_is_followed(deployed):
    old = leader()
    new = next(m for m in MEMBERS if m != old)
    sh(new, f"patronictl switchover main --leader {old} --candidate {new} --force")
    waited = wait_for(f"every PgBouncer to route to {new}", lambda: all_route_to(new), 60, interval=0.2)
    assert waited < 15  # the event path, not the 10 s safety net twice over
    wait_healthy(2, timeout=120)


def read_only_server() -> str:
    """Where app1's PgBouncer sends a read through app_ro: 'address|in recovery'."""
    return sh("app1", "psql service=app_ro -XAtc 'select inet_server_addr(), pg_is_in_recovery()' </dev/null"
              ).stdout.strip()  # fmt: skip


def test_reads_through_app_ro_go_to_a_replica_and_follow_the_leader(deployed):
    """app_ro serves reads from a streaming replica (the leader only when there is none) and
    follows a switchover like app does."""
    wait_healthy(2, timeout=120)
    lab("run", "pgcluster.reconcile", "--out=json")
    address, recovering = read_only_server().split("|")
    assert recovering == "t" and address != ADDRESS[leader()]
    replica = next(m for m, a in ADDRESS.items() if a == address)
    sh(replica, f"patronictl switchover main --leader {leader()} --candidate {replica} --force")
    wait_for(f"every PgBouncer to route to {replica}", lambda: all_route_to(replica), 60, interval=0.2)
    wait_for("app_ro on a replica again", lambda: read_only_server().endswith("|t"), 60, interval=1)
    assert read_only_server().split("|")[0] != ADDRESS[replica]
    wait_healthy(2, timeout=120)


def test_runner_switchover_under_pgbench_has_zero_failed_transactions(deployed):
    old = leader()
    res, out = runner_switchover_under_pgbench()
    ret = json.loads(res.stdout)
    assert res.returncode == 0 and ret["result"] is True, res.stdout
    assert ret["from"] == old and ret["to"] != old and ret["resume_failed"] == {}
    assert "number of failed transactions: 0 (0.000%)" in out, out
    assert all_route_to(ret["to"])
    wait_healthy(2, timeout=120)


@pytest.mark.parametrize(
    "args, message",
    [(["nope"], "unknown cluster 'nope'"), (["main", "candidate=pg9"], "unknown candidate 'pg9'")],
)
def test_runner_bad_input_is_refused_and_nothing_is_paused(deployed, args, message):
    lead = leader()
    res = lab("run", "pgcluster.switchover", *args, check=False)
    assert res.returncode == 1 and message in res.stdout and "Traceback" not in res.stdout
    assert leader() == lead
    paused = salt_json(",".join(PGBOUNCERS), "-L", "pgbouncer.show_databases")
    assert not [h for h, dbs in paused.items() for d in dbs if d["paused"]]


def test_forged_role_change_from_a_non_member_changes_nothing(deployed):
    listener = events(15)
    time.sleep(2)
    forged = json.dumps({"cluster": "main", "member": "pg1", "role": "primary", "action": "on_role_change"})
    sh("app1", f"salt-call event.send pgcluster/patroni/role_change '{forged}'")
    seen = listener.communicate(timeout=30)[0]
    lines = [line for line in seen.splitlines() if line.startswith("pgcluster/")]
    rejected = [line for line in lines if line.startswith("pgcluster/pgbouncer/rejected")]
    assert rejected and '"sender": "app1"' in rejected[0], seen
    assert not [line for line in lines if line.startswith("pgcluster/pgbouncer/repointed")], seen


def test_event_lost_while_master_is_down_is_corrected_by_the_safety_net(deployed):
    old = leader()
    new = next(m for m in MEMBERS if m != old)
    sh("salt", "systemctl stop salt-master")
    try:
        switchover_by_hand(old, new)
        time.sleep(3)
        stale = sh("app1", f"grep -c 'host={ADDRESS[old]}' /etc/pgbouncer/routing-main.ini", check=False).stdout
        assert stale.strip() == "1"  # nobody told app1's PgBouncer
    finally:
        sh("salt", "systemctl start salt-master")
    start = time.monotonic()
    wait_for("the safety net to repoint every PgBouncer", lambda: all_route_to_by_console(new), 60, interval=1)
    assert time.monotonic() - start <= 30
    wait_healthy(2, timeout=120)


def test_crash_of_the_leader_writes_resume_and_old_leader_never_gets_writes(deployed):
    old = leader()
    writer = subprocess.Popen(
        [str(LAB), "exec", "app1", "--", "bash", "-c",
         "exec -a failover-writer bash -c 'for i in $(seq 1 1500); do psql service=app -XAtq -c \"INSERT INTO "
         "failover_probe(note) VALUES (host(inet_server_addr())) RETURNING note\" 2>/dev/null; sleep 0.1; "
         "done' </dev/null"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(3)
    lab("crash", old)
    try:
        new = None

        def new_leader_routed() -> bool:
            nonlocal new
            new = leader()
            return bool(new) and new != old and all_route_to(new, down=(old,))

        wait_for("a new leader with every PgBouncer routed to it", new_leader_routed, 90, interval=1)
    finally:
        lab("boot", old)
    # Watched while the old leader boots and rejoins, until it has streamed as a replica for 5 s.
    seen_old, rejoined = [], None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and (rejoined is None or time.monotonic() - rejoined < 5):
        r = routes()
        seen_old += [h for h, a in r.items() if a == ADDRESS[old]]
        if rejoined is None and old in streaming_replicas(cluster()):
            rejoined = time.monotonic()
        time.sleep(0.5)
    sh("app1", "pkill -f failover-writer", check=False)
    written = writer.communicate(timeout=30)[0].split()
    assert rejoined, f"{old} did not rejoin as a streaming replica within 180 s"
    assert seen_old == []
    assert ADDRESS[new] in written  # writes went on through PgBouncer, to the new leader
    after_crash = written[written.index(ADDRESS[new]) :]
    assert ADDRESS[old] not in after_crash
    wait_healthy(2, timeout=240)
    rows = psql(leader(), f"SELECT count(*) FROM failover_probe WHERE note = '{ADDRESS[old]}' "
                          "AND at > now() - interval '60 seconds'").stdout.strip()  # fmt: skip
    assert rows == "0"


def app1_paused() -> bool:
    """Whether app1's PgBouncer holds app paused."""
    return any(r.get("name") == "app" and r.get("paused") == "1" for r in admin_databases("app1"))


VERIFIED = "/var/cache/salt/master/pgcluster/verified/main.json"  # what the safety net recorded


def reconcile_round(*args: str) -> dict:
    """One round of the safety net on cluster main, run by hand (again while a scheduled round holds the lock)."""
    deadline = time.monotonic() + 30
    while True:
        ret = json.loads(lab("run", "pgcluster.reconcile", *args, "--out=json").stdout)["main"]
        if not str(ret.get("comment", "")).startswith("skipped"):
            return ret
        assert time.monotonic() < deadline, f"every round skipped: {ret}"
        time.sleep(0.5)


def test_a_switchover_runner_killed_after_its_pause_is_undone_by_the_safety_net(deployed):
    """A switchover runner killed (-9) after its PAUSE, before its RESUME: its routing lock goes
    with it, and the safety net RESUMEs every PgBouncer and routes it to whoever leads, within
    30 s. While nothing changes, the safety net's rounds send no PgBouncer host a job."""
    wait_healthy(2, timeout=120)
    log = "/var/log/salt/master"
    count = f"grep -c \"reconcile repointed main .*resumed \\['app1'\" {log} || true"
    before = int(sh("salt", count).stdout.strip() or 0)
    switchover = subprocess.Popen([str(LAB), "exec", "salt", "--", "salt-run", "pgcluster.switchover", "main"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for("the switchover to PAUSE app1", app1_paused, 60, interval=0.1)
        sh("salt", "pkill -9 -f 'salt-run pgcluster.switchover'")
    finally:
        switchover.wait(timeout=60)
    assert app1_paused()  # the runner died before its RESUME
    killed = time.monotonic()

    def healed() -> bool:
        lead = leader()
        return not app1_paused() and lead is not None and all_route_to(lead)

    wait_for("the safety net to RESUME app1 and route it to the leader", healed, 60, interval=0.5)
    assert time.monotonic() - killed <= 30
    assert int(sh("salt", count).stdout.strip() or 0) == before + 1  # the reconciliation did it, and said so
    assert sh("app1", "psql service=app -XAtc 'select 1' </dev/null").stdout.strip() == "1"
    wait_healthy(2, timeout=120)
    reconcile_round()
    idle = reconcile_round()
    assert idle["result"] is True and idle["checked"] == [], idle


def app1_failed_seconds_ago() -> float | None:
    """How long ago the safety net recorded app1 as not answering (None: not recorded)."""
    out = sh("salt", f"cat {VERIFIED} 2>/dev/null", check=False).stdout
    failed = (json.loads(out or "{}").get("app1") or {}).get("failed")
    return time.time() - failed if failed else None


def test_a_pgbouncer_host_down_costs_the_routing_path_seconds_not_every_round(deployed):
    """With app1 (a PgBouncer host) down, every routing job waits for it while holding the
    cluster's routing lock. Such a job gives a silent host 4 + 2 s (it was 8 + 2 s), and the
    safety net leaves a host that did not answer out of its rounds for 30 s (it tried it every
    10 s round, so the lock was held most of the time and the events' lookups waited behind it):
    a leader change is still followed at once by the PgBouncers that run."""
    wait_healthy(2, timeout=120)
    old = leader()
    new = next(m for m in MEMBERS if m != old)
    lab("crash", "app1")
    try:
        res = lab("run", "pgcluster.follow_leader", "sender=pg1", "cluster=main", "--out=json", check=False)
        follow = json.loads(res.stdout)
        assert list(follow["failed"]) == ["app1"] and follow["seconds_to_repoint"] < 9, follow

        # That routing job made the safety net forget what it verified: its next scheduled round
        # tries every host and records app1 as silent. Right after that (a retry is 30 s away):
        def fresh() -> bool:
            age = app1_failed_seconds_ago()
            return age is not None and age < 12

        wait_for("a safety-net round to record app1 as silent", fresh, 60, interval=0.5)
        quiet = reconcile_round("full_every=0")
        assert sorted(quiet["checked"]) == sorted(MEMBERS) and quiet["failed"] == {}, quiet
        switchover_by_hand(old, new)
        waited = wait_for(
            f"pg1-3's PgBouncers routing to {new}", lambda: all_route_to_by_console(new, MEMBERS), 30, interval=0.2
        )
        assert waited < 5, f"the PgBouncers that run followed {new} only after {waited:.1f} s"
    finally:
        lab("boot", "app1")
    wait_for("app1's PgBouncer routing to the leader", lambda: all_route_to_by_console(leader()), 90, interval=1)
    wait_healthy(2, timeout=120)
