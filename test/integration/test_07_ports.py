"""The lab's second shape, deployed fresh from pillar only: non-default ports everywhere
(PostgreSQL 5433, Patroni's REST API 8009, PgBouncer 6433) and a two-server cluster (members pg1
and pg2; pg3 only the third etcd member, a witness, and a PgBouncer host) with the ``pair``
profile. PgBouncer follows the leader on a switchover by hand and after a crash, the runner's
zero-error switchover works, and each server crashed in turn leaves the other taking writes with
no acknowledged write lost; the cluster grows to four members (pg3, until then the etcd witness,
and pg4, a new server booted from the lab's spare host) and shrinks back to two under load while
the etcd witness moves from pg3 to app1; a changed etcd setting restarts etcd one host at a time.
Every port comes from the one model.

This module takes the shared lab down and deploys its own (last in the suite)."""

from __future__ import annotations

import json
from itertools import pairwise

import labtools
import pytest
import yaml
from labtools import (
    ADDRESS,
    APP_PASSWORD,
    CA,
    AckWriter,
    PgbenchLoop,
    all_route_to,
    cluster,
    ensure_probe_table,
    failed_states,
    fresh_lab,
    highstate,
    lab,
    leader,
    local_pillar,
    psql,
    runner_switchover_under_pgbench,
    salt_json,
    sh,
    wait_for,
    wait_healthy,
)

DEFAULTS = yaml.safe_load((labtools.REPO / "salt/pgcluster/defaults.yaml").read_text())["pgcluster"]
FAILOVER_BOUND = DEFAULTS["profiles"]["pair"]["failover_bound"]
PORTS = {"postgresql": 5433, "restapi": 8009, "pgbouncer": 6433}
PAIR = ("pg1", "pg2")
SPARE, SPARE_ADDRESS = "pg4", "198.18.0.14"  # test/lab/topology.toml: booted by the test that grows the cluster
OVERRIDE = f"""pgcluster:
  postgresql:
    port: {PORTS["postgresql"]}
  patroni:
    restapi_port: {PORTS["restapi"]}
  pgbouncer:
    port: {PORTS["pgbouncer"]}
  clusters:
    main:
      profile: pair
      members: [{", ".join(PAIR)}]
"""


@pytest.fixture(scope="module")
def ported(lab_up):
    labtools.PG_PORT["port"] = PORTS["postgresql"]
    fresh_lab()
    local_pillar(OVERRIDE)
    try:
        ret = highstate()
        failed = failed_states(ret)
        assert failed == {m: [] for m in ret}, failed
        wait_healthy(1, timeout=180)
        ensure_probe_table()
        yield
    finally:
        sh("salt", f"rm -f {labtools.LOCAL_PILLAR}")  # no refresh: the lab goes down next
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
    new = next(m for m in PAIR if m != old)
    sh(new, f"patronictl switchover main --leader {old} --candidate {new} --force")
    waited = wait_for(f"every PgBouncer to route to {new}", lambda: all_route_to(new), 60, interval=0.2)
    assert waited < 15
    wait_healthy(1, timeout=120)


def test_runner_switchover_under_pgbench_has_zero_failed_transactions(ported):
    old = leader()
    res, out = runner_switchover_under_pgbench(seconds=25, settle=6)
    ret = json.loads(res.stdout)
    assert res.returncode == 0 and ret["result"] is True and ret["from"] == old, res.stdout
    assert "number of failed transactions: 0 (0.000%)" in out, out
    assert all_route_to(ret["to"])
    wait_healthy(1, timeout=120)


def status() -> dict:
    return json.loads(lab("run", "pgcluster.status", "main", "--out=json").stdout)


def test_two_servers_are_synchronous_while_both_run(ported):
    # The test before crashed the leader: back, it streams a loop before /sync names it again.
    replica = next(m for m in PAIR if m != leader())
    wait_for(f"{replica} synchronous", lambda: _synchronous(replica), 120, interval=2)
    out = status()
    roles = {m["name"]: m["role"] for m in out["members"]}
    assert set(roles) == set(PAIR) and sorted(roles.values()) == ["leader", "quorum_standby"], out
    assert out["writes"] == f"{out['leader']} accepts writes", out


def test_each_server_crashed_in_turn_leaves_the_other_taking_writes_and_loses_no_acknowledged_write(ported):
    """The pair profile: the replica down -> the leader goes on alone; the leader down -> the
    replica (synchronous) takes over with every acknowledged write, every PgBouncer following it."""
    lead = leader()
    replica = next(m for m in PAIR if m != lead)
    psql(lead, "CREATE TABLE pair_acks(id bigint PRIMARY KEY); GRANT INSERT, SELECT ON pair_acks TO app")
    dsn = f"host=127.0.0.1 port={PORTS['pgbouncer']} dbname=app user=app"
    writer = AckWriter("app1", dsn, "pair_acks", password=APP_PASSWORD)

    def rows(host: str) -> int:
        return int(psql(host, "SELECT count(*) FROM pair_acks").stdout)

    try:
        wait_for("acknowledged writes", lambda: rows(lead) > 10, 20, interval=0.5)
        lab("crash", replica)
        try:
            first = rows(lead)
            waited = wait_for(f"writes on {lead} alone", lambda: rows(lead) > first + 20, 60, interval=0.5)
            assert status()["writes"] == f"{lead} accepts writes"
        finally:
            lab("boot", replica)
        wait_for(f"{replica} synchronous again", lambda: _synchronous(replica), 180, interval=2)
        lab("crash", lead)
        try:
            wait_for(f"{replica} leading", lambda: _leads(replica), FAILOVER_BOUND + 30, interval=1)
            first = rows(replica)
            wait_for(f"writes on {replica} through PgBouncer", lambda: rows(replica) > first + 20, 60, interval=0.5)
            wait_for(f"every PgBouncer routing to {replica}", lambda: all_route_to(replica, down=(lead,)), 30, 1)
            report = writer.stop()
        finally:
            lab("boot", lead)
    finally:
        if not writer.result:
            writer.stop()
    assert waited < 30, f"writes waited {waited:.1f} s for the leader to go on alone"
    assert len(report["acked"]) > 50 and not report["stuck"], report
    assert writer.missing_on(replica, "app") == [], "acknowledged writes lost when the leader died"
    wait_healthy(1, timeout=240)


def _leads(member: str) -> bool:
    try:
        return leader(via=member) == member
    except AssertionError:  # its Patroni does not answer (yet)
        return False


def _synchronous(member: str) -> bool:
    return any(m["name"] == member and m["role"] == "quorum_standby" for m in cluster()["members"])


def test_status_says_when_writes_are_blocked_for_lack_of_a_standby(ported):
    """With two servers the strict 'durable' profile blocks every commit while one is down."""
    lead = leader()
    replica = next(m for m in PAIR if m != lead)
    salt_json(lead, "patroni.config_patch", '{"synchronous_mode_strict": true}')
    sh(replica, "systemctl stop patroni")
    try:
        wait_for("the blocked writes in status", lambda: status()["writes"].startswith("writes blocked"), 60, 2)
    finally:
        sh(replica, "systemctl start patroni")
        salt_json(lead, "patroni.config_patch", '{"synchronous_mode_strict": false}')
    wait_healthy(1, timeout=180)
    assert status()["writes"] == f"{lead} accepts writes"


def _members(
    members: tuple[str, ...], etcd: tuple[str, ...] | None = None, election_timeout: int = 0, spare: bool = False
) -> None:
    """The override's members of main set to MEMBERS (and its etcd hosts to ETCD, etcd's
    election timeout to ELECTION_TIMEOUT ms; with SPARE the lab's spare host in the model's
    hosts), every minion's pillar refreshed."""
    override = OVERRIDE.replace(f"members: [{', '.join(PAIR)}]", f"members: [{', '.join(members)}]")
    if etcd:
        override += f"      etcd: [{', '.join(etcd)}]\n"
    if spare:
        override = override.replace("pgcluster:\n", f"pgcluster:\n  hosts:\n    {SPARE}: {SPARE_ADDRESS}\n", 1)
    if election_timeout:
        override = override.replace(
            "pgcluster:\n", f"pgcluster:\n  etcd:\n    election_timeout: {election_timeout}\n", 1
        )
    local_pillar(override)


def _no_failed_state() -> None:
    ret = highstate()
    failed = failed_states(ret)
    assert failed == {m: [] for m in ret}, failed


def _etcd_members() -> dict[str, bool]:
    """{name or id: started} of etcd's members as pg1 sees them."""
    return {m["name"] or m["id"]: m["started"] for m in salt_json("pg1", "pgcluster.etcd_members")["pg1"]}


def _joined(member: str, total: int) -> None:
    """MEMBER got its replica from the pgBackRest repository and holds the TOTAL writes made
    before it joined."""
    on_it = "SELECT count(*) FROM grow_acks"
    wait_for(f"{member} holding the writes made before it joined", lambda: int(psql(member, on_it).stdout) >= total, 30)
    restored = sh(member, "cat /var/log/pgbackrest/main-restore.log", check=False).stdout
    assert "restore command end: completed successfully" in restored, (member, restored)


def _left(member: str) -> None:
    """MEMBER's Patroni and etcd are stopped and disabled, its etcd data directory moved aside."""
    for service in ("patroni", "etcd"):
        assert sh(member, f"systemctl is-enabled {service}", check=False).stdout.strip() != "enabled", (member, service)
    assert "active" not in sh(member, "systemctl is-active patroni etcd", check=False).stdout.split(), member
    moved = sh(member, "test ! -e /var/lib/etcd/main", check=False)
    assert moved.returncode == 0, f"{member}'s etcd data directory is still in place"


def test_the_cluster_grows_to_four_servers_and_shrinks_to_two_under_load_and_etcd_restarts_one_host_at_a_time(ported):
    """Adding members is a pillar edit and a highstate: pg3 (until now only the etcd witness)
    and pg4 (a new server: the lab's spare host, booted now with nothing but Salt on it) get
    their replicas from the pgBackRest repository and stream, every PgBouncer host learns both
    (their leader finder asks all four members), the members' firewalls let them replicate.
    Taking them out is a pillar edit, ``pgcluster.remove_member`` for each and a highstate. The
    etcd witness moves from pg3 to app1 in the same steps: app1 joins the running etcd in the
    first highstate (etcd then has four members), the runner takes pg3 out of etcd as well. The
    second pillar edit also changes an etcd setting read on restart (the election timeout): the
    second highstate restarts etcd on every etcd host, one at a time under the cluster's restart
    lock (the windows from stop to healthy never overlap: the quorum holds). pgbench (in 10 s
    runs) and the ack writer go through app1's PgBouncer the whole time: no failed transaction,
    nothing acknowledged lost, the leader stays through the etcd restarts. (One test: each
    highstate of this lab costs about a minute.)"""
    lead = leader()
    psql(lead, "CREATE TABLE grow_acks(id bigint PRIMARY KEY); GRANT INSERT, SELECT ON grow_acks TO app")
    dsn = f"host=127.0.0.1 port={PORTS['pgbouncer']} dbname=app user=app"
    lab("boot", SPARE)
    try:
        _grow_and_shrink(lead, dsn)
    finally:
        lab("retire", SPARE)


def _grow_and_shrink(lead: str, dsn: str) -> None:
    bench = PgbenchLoop()
    writer = AckWriter("app1", dsn, "grow_acks", password=APP_PASSWORD)
    four = (*PAIR, "pg3", SPARE)
    try:
        _members(four, etcd=("pg1", "pg2", "pg3", "app1"), spare=True)
        _no_failed_state()
        assert _etcd_members() == {"pg1": True, "pg2": True, "pg3": True, "app1": True}
        wait_healthy(3, timeout=180)
        joined = {m["name"]: m for m in cluster()["members"]}
        assert sorted(joined) == sorted(four) and all(joined[m]["state"] == "streaming" for m in ("pg3", SPARE)), joined
        total = int(psql(lead, "SELECT count(*) FROM grow_acks").stdout)
        for member in ("pg3", SPARE):
            _joined(member, total)
        spec = json.loads(sh("app1", "cat /etc/pgbouncer/routing-main.json").stdout)
        assert sorted(spec["members"]) == sorted(four), spec["members"]
        refused = lab("run", "pgcluster.remove_member", "main", SPARE, check=False)
        assert refused.returncode != 0 and "still in clusters:main:members" in refused.stdout, refused.stdout
        _members(PAIR, etcd=("pg1", "pg2", "app1"), election_timeout=1200, spare=True)
        assert status()["etcd"]["not_in_model"] == ["pg3"]
        removed = {}
        for member in ("pg3", SPARE):
            res = lab("run", "pgcluster.remove_member", "main", member, "--out=json", check=False)
            removed[member] = json.loads(res.stdout)
            assert res.returncode == 0 and removed[member]["patroni"] == "stopped and disabled", res.stdout
        assert removed["pg3"]["etcd"].startswith("removed from etcd"), removed
        assert sorted(m["name"] for m in cluster()["members"]) == sorted(PAIR)
        assert _etcd_members() == {"pg1": True, "pg2": True, "app1": True}
        before_restarts = leader()
        ret = highstate()
        assert failed_states(ret) == {m: [] for m in ret}, failed_states(ret)
        _one_etcd_host_at_a_time(ret, ("pg1", "pg2", "app1"), 1200)
        assert leader() == before_restarts
        for member in ("pg3", SPARE):
            _left(member)
        assert sh("pg3", "ls -d /var/lib/etcd/main.removed-*", check=False).returncode == 0, "pg3's etcd data kept"
        spec = json.loads(sh("app1", "cat /etc/pgbouncer/routing-main.json").stdout)
        assert sorted(spec["members"]) == sorted(PAIR), spec["members"]
        after = status()
        assert after["not_in_model"] == [] and after["writes"].endswith("accepts writes"), after
        etcd = {"members": {"pg1": True, "pg2": True, "app1": True}, "not_in_model": [], "not_started": []}
        assert after["etcd"] == etcd, after["etcd"]
    finally:
        bench.stop()
        report = writer.stop()
        _members(PAIR, etcd=tuple(h for h, started in _etcd_members().items() if started))
    assert bench.failed() is None, bench.failed()
    assert report["failed"] == [] and len(report["acked"]) > 50 and not report["stuck"], report
    assert writer.missing_on(leader(), "app") == []


def _one_etcd_host_at_a_time(ret: dict, etcd: tuple[str, ...], election_timeout: int) -> None:
    """Highstate's return RET restarted etcd on every host of ETCD, the windows from stop to
    healthy never overlapping, and each etcd now runs with ELECTION_TIMEOUT ms."""
    windows = sorted(
        (s["changes"]["restarted"]["from"], s["changes"]["restarted"]["to"], m)
        for m, states in ret.items()
        for s in states.values()
        if s["__id__"] == "etcd-restarted-one-host-at-a-time" and s.get("changes")
    )
    assert sorted(w[2] for w in windows) == sorted(etcd), windows
    for (_, ended, one), (began, _, other) in pairwise(windows):
        assert ended <= began, f"etcd on {one} and {other} were down at the same time: {windows}"
    for host in etcd:
        assert f"election = {election_timeout}ms" in sh(host, "journalctl -u etcd --no-pager | tail -400").stdout, host
