"""Rolling restart (issue 15): a parameter that needs a restart, another Patroni version or a new
PostgreSQL minor version, set in pillar and applied by highstate, reaches every member through
``salt-run pgcluster.rolling_restart`` with clients noticing nothing: under pgbench and an
insert-only writer through app1's PgBouncer, 0 failed transactions, every acknowledged write on
the new leader, the parameter (or version) in force everywhere."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
import yaml
from labtools import (
    ADDRESS,
    APP_PASSWORD,
    CA,
    LAB,
    MEMBERS,
    REPO,
    AckWriter,
    PgbenchLoop,
    cluster,
    failed_states,
    highstate,
    lab,
    leader,
    local_pillar,
    psql,
    sh,
    wait_for,
    wait_healthy,
)
from pglab.base import postgres_minor

PARAM = "max_files_per_process"  # postmaster context: a restart applies it; harmless to change
DEFAULT = 1000
DEFAULTS = yaml.safe_load((REPO / "salt/pgcluster/defaults.yaml").read_text())["pgcluster"]
# The Patroni release before the formula's default, in the lab's wheelhouse (test/lab/wheels-previous.txt).
PREVIOUS_PATRONI = "4.1.4"


def set_pillar(block: dict) -> None:
    """BLOCK (under pgcluster) as the lab's local pillar, applied by a highstate of the members."""
    local_pillar(block)
    ret = highstate(targets=MEMBERS)
    failed = failed_states(ret)
    assert failed == {m: [] for m in MEMBERS}, failed


def set_parameter(value: int) -> None:
    """The main cluster's PARAM = VALUE in pillar, applied by a highstate of the members."""
    set_pillar({"clusters": {"main": {"parameters": {PARAM: value}}}})


def pending() -> set[str]:
    return {m["name"] for m in cluster()["members"] if m["pending_restart"]}


def in_force(member: str) -> int:
    return int(psql(member, f"SHOW {PARAM}").stdout)


def rolling_restart(*args: str, name: str = "main") -> tuple[int, dict]:
    res = lab("run", "pgcluster.rolling_restart", name, *args, "--out=json", check=False, timeout=900)
    return res.returncode, json.loads(res.stdout or "{}")


@pytest.fixture(scope="module")
def pending_everywhere(deployed):
    """Every member with a restart pending for PARAM; afterwards the default back in force."""
    wait_healthy(2, timeout=180)
    value = max(in_force(m) for m in MEMBERS) + 100  # one no member runs yet
    set_parameter(value)
    wait_for("a restart pending on every member", lambda: pending() == set(MEMBERS), 60, interval=2)
    yield value
    set_parameter(DEFAULT)
    # Each member's Patroni flags the restart at its own loop: all of them before the run.
    wait_for("a restart pending on every member", lambda: pending() == set(MEMBERS), 60, interval=2)
    code, out = rolling_restart()
    local_pillar(None)
    wait_healthy(2, timeout=180)
    assert code == 0 and out["result"] is True, out
    # The version test (last in this module) leaves the previous Patroni running: back to the default.
    default = DEFAULTS["patroni"]["version"]
    assert running_patroni() == {m: default for m in MEMBERS}, out


def running_patroni() -> dict[str, str]:
    """{member: the Patroni version it runs}, from its REST API."""
    return {m: json.loads(sh(m, f"curl -s --cacert {CA} https://{ADDRESS[m]}:8008/patroni").stdout)["patroni"]["version"]
            for m in MEMBERS}  # fmt: skip


def test_rolling_restart_applies_a_restart_parameter_with_no_failed_transaction(pending_everywhere):
    before = leader()
    psql(before, "DROP TABLE IF EXISTS rolling_acks; CREATE TABLE rolling_acks(id bigint PRIMARY KEY); "
               "GRANT INSERT, SELECT ON rolling_acks TO app")  # fmt: skip
    sh("app1", "pgbench -i -s 1 -q service=app </dev/null")
    bench = subprocess.Popen(
        [str(LAB), "exec", "app1", "--", "bash", "-c", "pgbench -n -T 75 -c 4 -j 2 service=app </dev/null"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    writer = AckWriter("app1", "host=127.0.0.1 port=6432 dbname=app user=app", "rolling_acks", password=APP_PASSWORD)
    time.sleep(3)
    code, out = rolling_restart()
    time.sleep(2)
    report = writer.stop()
    bench_out, _ = bench.communicate(timeout=180)
    assert code == 0 and out["result"] is True, out
    assert sorted(r["member"] for r in out["restarted"]) == sorted(MEMBERS), out
    # Replicas first, the leader last, by a switchover that paused clients for seconds.
    assert out["restarted"][-1]["member"] == before and out["switchover"]["from"] == before, out
    assert out["leader_after"] != before and out["switchover"]["paused_seconds"] < 15, out
    assert bench.returncode == 0 and "number of failed transactions: 0 " in bench_out, bench_out
    assert report["failed"] == [] and len(report["acked"]) > 20 and not report["stuck"], report["failed"][:5]
    assert writer.missing_on(leader(), "app") == []
    assert pending() == set()
    assert {m: in_force(m) for m in MEMBERS} == {m: pending_everywhere for m in MEMBERS}


def test_nothing_pending_does_nothing(pending_everywhere):
    before = leader()
    code, out = rolling_restart()
    assert code == 0 and out["restarted"] == [] and "no member of main has a restart pending" in out["comment"], out
    assert leader() == before


def test_a_member_down_refuses_with_nothing_done(pending_everywhere):
    replica = next(m for m in MEMBERS if m != leader())
    sh(replica, "systemctl stop patroni")
    try:
        wait_for(f"{replica} stopped in Patroni's view", lambda: replica not in _up(), 60, interval=2)
        code, out = rolling_restart("every=True")
    finally:
        sh(replica, "systemctl start patroni")
    assert code != 0 and f"{replica} " in out["error"] and "needs every member up: nothing done" in out["error"], out
    wait_healthy(2, timeout=180)


def _up() -> set[str]:
    return {m["name"] for m in cluster()["members"] if m["state"] in ("running", "streaming")}


def test_bad_arguments_are_one_clear_message(pending_everywhere):
    code, out = rolling_restart("every=sometimes")  # (salt-run reads every=yes as True, YAML)
    assert code != 0 and out["error"] == "every='sometimes': give True or False", out
    code, out = rolling_restart(name="nope")
    assert code != 0 and "unknown cluster 'nope'" in out["error"], out


def version_num(debian_version: str) -> int:
    """server_version_num (150020) of a Debian package version ('15.20-0+deb12u1')."""
    major, minor = re.match(r"(?:\d+:)?(\d+)\.(\d+)", debian_version).groups()
    return int(major) * 10000 + int(minor)


def running_postgres() -> dict[str, int]:
    """{member: the server_version_num its PostgreSQL runs}."""
    return {m: int(psql(m, "SHOW server_version_num").stdout) for m in MEMBERS}


def rolled_under_load(table: str) -> dict:
    """``rolling_restart`` under pgbench and the ack writer (into TABLE) through app1's PgBouncer;
    asserts it succeeded with 0 failed transactions and no acknowledged write lost, waits for
    health, and returns its steps."""
    bench = PgbenchLoop()
    writer = AckWriter("app1", "host=127.0.0.1 port=6432 dbname=app user=app", table, password=APP_PASSWORD)
    try:
        code, out = rolling_restart()
    finally:
        bench.stop()
        report = writer.stop()
    assert code == 0 and out["result"] is True, out
    assert bench.failed() is None, bench.failed()
    assert report["failed"] == [] and len(report["acked"]) > 20 and not report["stuck"], report["failed"][:5]
    assert writer.missing_on(leader(), "app") == []
    wait_healthy(2, timeout=180)
    return out


def test_a_postgresql_minor_rolls_through_with_no_failed_transaction(pending_everywhere):
    """A new PostgreSQL minor (``postgresql:package_version``) in pillar: highstate installs it
    (running servers keep the old binaries mapped in memory, and nothing flags a restart), then
    the rolling restart restarts the members whose running server is not the one installed,
    replicas first, the leader by its handover. Under pgbench and the ack writer through app1's
    PgBouncer: 0 failed transactions, no acknowledged write lost. A real Debian upgrade: the
    newest postgresql-15 Debian offers, which `lab prepare` puts in apt's cache (the hosts have
    no route out). It stays afterwards (a downgrade is not a routine operation)."""
    installed, newer = postgres_minor()
    assert newer != installed, f"no PostgreSQL minor newer than {installed} to roll to (`lab prepare` caches one)"
    old, wanted = version_num(installed), version_num(newer)
    assert running_postgres() == {m: old for m in MEMBERS}
    before = leader()
    psql(before, "DROP TABLE IF EXISTS minor_acks; CREATE TABLE minor_acks(id bigint PRIMARY KEY); "
                 "GRANT INSERT, SELECT ON minor_acks TO app")  # fmt: skip
    set_pillar({"clusters": {"main": {"parameters": {PARAM: pending_everywhere}}},
                "postgresql": {"package_version": newer}})  # fmt: skip
    for m in MEMBERS:
        assert f"(Debian {newer})" in sh(m, "/usr/lib/postgresql/15/bin/postgres -V").stdout
    assert running_postgres() == {m: old for m in MEMBERS} and pending() == set()  # installed, not running
    out = rolled_under_load("minor_acks")
    to = f"{wanted // 10000}.{wanted % 10000}"
    assert out["postgresql_version"] == {"to": to, "members": sorted(MEMBERS)} and "patroni_version" not in out, out
    assert sorted(r["member"] for r in out["restarted"]) == sorted(MEMBERS) and out["switchover"]["from"] == before
    assert running_postgres() == {m: wanted for m in MEMBERS}


def test_a_patroni_version_change_rolls_through_with_no_failed_transaction(pending_everywhere):
    """A Patroni version in pillar: highstate installs it (running members keep theirs), the
    rolling restart restarts Patroni member by member, replicas first, the leader after its
    handover. Under pgbench and the ack writer through app1's PgBouncer: 0 failed transactions,
    no acknowledged write lost. The way back to the formula's default is the module's teardown
    (the same runner, with the parameter), which asserts every member runs the default again."""
    default = DEFAULTS["patroni"]["version"]
    assert set(running_patroni().values()) == {default}
    psql(leader(), "DROP TABLE IF EXISTS version_acks; CREATE TABLE version_acks(id bigint PRIMARY KEY); "
                   "GRANT INSERT, SELECT ON version_acks TO app")  # fmt: skip
    set_pillar({"clusters": {"main": {"parameters": {PARAM: pending_everywhere}}},
                "patroni": {"version": PREVIOUS_PATRONI}})  # fmt: skip
    assert set(running_patroni().values()) == {default}
    out = rolled_under_load("version_acks")
    assert out["patroni_version"] == {"to": PREVIOUS_PATRONI, "members": sorted(MEMBERS)}, out
    assert running_patroni() == {m: PREVIOUS_PATRONI for m in MEMBERS}
