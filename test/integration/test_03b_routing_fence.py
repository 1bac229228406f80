"""Routing that cannot go wrong: events are only hints (a flood of forged ones costs bounded
work), one routing operation at a time per cluster, and a PgBouncer refuses a route older than
the one it has."""

from __future__ import annotations

import json
import subprocess
import time

from labtools import ADDRESS, LAB, MEMBERS, all_route_to, events, lab, leader, salt_json, sh, wait_for, wait_healthy

SALT_PYTHON = "/opt/pgcluster-lab/venv/bin/python"
LOCK = "/var/cache/salt/master/pgcluster/locks/main.lock"
FLOOD = """
import salt.client, salt.config
caller = salt.client.Caller(mopts=salt.config.minion_config("/etc/salt/minion"))
payload = {"cluster": "main", "member": "pg1", "role": "primary", "action": "on_role_change"}
# The batch form: the master puts each event on its bus as given, "id" included (forged: pg1).
forged = [{"tag": "pgcluster/patroni/role_change", "data": {"id": "pg1", "data": payload}} for _ in range(200)]
caller.cmd("event.fire_master", {}, "pgcluster/flood", preload={"events": forged})
# The plain form: the master stamps app1's own id on each.
for _ in range(200):
    caller.cmd("event.fire_master", payload, "pgcluster/patroni/role_change")
print("sent")
"""


def test_a_flood_of_forged_events_costs_bounded_lookups_and_routing_stays_right(deployed):
    lead = leader()
    listener = events(60)
    time.sleep(3)
    start = time.monotonic()
    assert sh("app1", f"{SALT_PYTHON} - <<'EOF'\n{FLOOD}\nEOF", timeout=120).stdout.strip().endswith("sent")
    sent = time.monotonic() - start
    # The master answers normally right after.
    t = time.monotonic()
    assert set(salt_json("*", "test.ping")) >= {"pg1", "pg2", "pg3", "app1", "backup"}
    ping = time.monotonic() - t
    seen = listener.communicate(timeout=90)[0].splitlines()
    forged = [x for x in seen if x.startswith("pgcluster/patroni/role_change")]
    lookups = [x for x in seen if x.startswith("pgcluster/pgbouncer/repointed")]
    rejected = [x for x in seen if x.startswith("pgcluster/pgbouncer/rejected")]
    assert len(forged) >= 400, f"the flood did not reach the bus: {len(forged)} events"
    # 400 events: lookups (and rejections) are coalesced to a handful, not one each. How many get
    # through depends on how fast each is handled while the flood lasts (13 rejections seen once).
    assert 1 <= len(lookups) <= 20 and len(rejected) <= 20, (len(lookups), len(rejected), sent)
    assert ping < 30
    print(f"flood: {len(forged)} events sent in {sent:.1f} s -> {len(lookups)} lookups, {len(rejected)} "
          f"rejections; test.ping after it {ping:.1f} s")  # fmt: skip
    assert leader() == lead and all_route_to(lead)


def test_two_switchovers_at_once_the_second_is_refused_naming_the_first(deployed):
    wait_healthy(2)
    first = subprocess.Popen([str(LAB), "run", "pgcluster.switchover", "main", "--out=json"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:

        def holds() -> bool:
            return "switchover" in sh("salt", f"cat {LOCK} 2>/dev/null", check=False).stdout

        wait_for("the first switchover to hold the routing lock", holds, 60, interval=0.1)
        second = lab("run", "pgcluster.switchover", "main", check=False)
    finally:
        out, _ = first.communicate(timeout=180)
    assert first.returncode == 0, out
    assert second.returncode == 1, second.stdout
    assert "holds its routing lock: nothing done" in second.stdout and "switchover from" in second.stdout
    new = json.loads(out)["to"]
    wait_for(f"every PgBouncer to route to {new}", lambda: all_route_to(new), 30)
    wait_healthy(2)


def test_a_pgbouncer_refuses_a_route_older_than_the_one_it_has(deployed):
    # As a reconcile would send it had it looked up the leader before the last switchover.
    lead = leader()
    other = next(m for m in MEMBERS if m != lead)
    header = sh("app1", "head -1 /etc/pgbouncer/routing-main.ini").stdout
    timeline = int(header.split("; timeline ")[1].split(";")[0])
    system = header.split("; system ")[1].rstrip(".\n")
    ret = salt_json("app1", "pgbouncer.repoint", "main", ADDRESS[other], f"timeline={timeline - 1}",
                    f"system={system}")["app1"]  # fmt: skip
    assert ret["changed"] is False and "older than the installed one" in ret["refused"], ret
    assert sh("app1", "head -1 /etc/pgbouncer/routing-main.ini").stdout == header
    assert all_route_to(lead)
