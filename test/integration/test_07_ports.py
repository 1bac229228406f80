"""Non-default ports everywhere (PostgreSQL 5433, Patroni's REST API 8009, PgBouncer 6433), set in
pillar only: a fresh lab deploys with them, PgBouncer follows the leader on a switchover by hand and
after a crash, and the runner's zero-error switchover works. Every port comes from the one model.

This module takes the shared lab down and deploys its own (last in the suite)."""

from __future__ import annotations

import json

import labtools
import pytest
from labtools import (
    ADDRESS,
    CA,
    MEMBERS,
    all_route_to,
    ensure_probe_table,
    highstate,
    lab,
    leader,
    runner_switchover_under_pgbench,
    sh,
    wait_for,
    wait_healthy,
)

PORTS = {"postgresql": 5433, "restapi": 8009, "pgbouncer": 6433}
OVERRIDE = f"""pgcluster:
  postgresql:
    port: {PORTS["postgresql"]}
  patroni:
    restapi_port: {PORTS["restapi"]}
  pgbouncer:
    port: {PORTS["pgbouncer"]}
"""


@pytest.fixture(scope="module")
def ported(lab_up):
    labtools.PG_PORT["port"] = PORTS["postgresql"]
    lab("down")
    lab("up")
    sh("salt", "mkdir -p /srv/lab-pillar/pgcluster && cat > /srv/lab-pillar/pgcluster/local.sls", stdin=OVERRIDE)
    lab("salt", "*", "saltutil.refresh_pillar", "--out=quiet")
    try:
        ret = highstate()
        failed = {m: [s["__id__"] for s in st.values() if s["result"] is False] for m, st in ret.items()}
        assert failed == {m: [] for m in ret}, failed
        wait_healthy(2, timeout=180)
        ensure_probe_table()
        yield
    finally:
        sh("salt", "rm -f /srv/lab-pillar/pgcluster/local.sls")
        labtools.PG_PORT["port"] = 5432
        lab("down")


def test_every_component_listens_where_pillar_says(ported):
    assert sh("app1", f"ss -Hltn 'sport = :{PORTS['pgbouncer']}' | wc -l").stdout.strip() != "0"
    lead = leader()
    assert sh(lead, f"ss -Hltn 'sport = :{PORTS['postgresql']}' | wc -l").stdout.strip() != "0"
    primary = (
        f"curl -s -o /dev/null -w '%{{http_code}}' --cacert {CA} https://{ADDRESS[lead]}:{PORTS['restapi']}/primary"
    )
    assert sh(lead, primary).stdout == "200"
    out = sh("app1", "psql service=app -XAtc 'select inet_server_port()' </dev/null").stdout.strip()
    assert out == str(PORTS["postgresql"])
    status = json.loads(lab("run", "pgcluster.status", "main", "--out=json").stdout)
    assert status["leader"] == lead and status["misrouted"] == []


def test_a_switchover_by_hand_is_followed(ported):
    old = leader()
    new = next(m for m in MEMBERS if m != old)
    sh(new, f"patronictl switchover main --leader {old} --candidate {new} --force")
    waited = wait_for(f"every PgBouncer to route to {new}", lambda: all_route_to(new), 60, interval=0.2)
    assert waited < 15
    wait_healthy(2, timeout=120)


def test_runner_switchover_under_pgbench_has_zero_failed_transactions(ported):
    old = leader()
    res, out = runner_switchover_under_pgbench(seconds=25, settle=6)
    ret = json.loads(res.stdout)
    assert res.returncode == 0 and ret["result"] is True and ret["from"] == old, res.stdout
    assert "number of failed transactions: 0 (0.000%)" in out, out
    assert all_route_to(ret["to"])
    wait_healthy(2, timeout=120)


def test_a_crash_of_the_leader_is_followed(ported):
    old = leader()
    lab("crash", old)
    try:
        wait_for("a new leader with every PgBouncer routed to it",
                 lambda: (leader() or old) != old and all_route_to(leader(), down=(old,)), 90, interval=1)  # fmt: skip
    finally:
        lab("boot", old)
    assert sh("app1", "psql service=app -XAtqc \"INSERT INTO failover_probe(note) VALUES ('ports') RETURNING 1\" "
                      "</dev/null").stdout.strip() == "1"  # fmt: skip
    wait_healthy(2, timeout=240)
