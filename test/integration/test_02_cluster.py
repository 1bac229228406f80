"""HA PostgreSQL by highstate in the lab: etcd, Patroni, failover, idempotence, secrets."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import yaml
from labtools import (
    MEMBERS,
    REPO,
    AckWriter,
    changed_states,
    cluster,
    ensure_probe_table,
    failed_states,
    fresh_lab,
    highstate,
    lab,
    leader,
    psql,
    salt_json,
    sh,
    wait_for,
    wait_healthy,
)

LAB_PILLAR = yaml.safe_load((REPO / "pillar/pgcluster/lab_model.yaml").read_text())["pgcluster"]
LAB_CLUSTER = LAB_PILLAR["clusters"]["main"]
APP_PW = LAB_CLUSTER["roles"]["app"]["password"]
SECRETS = [*LAB_CLUSTER["passwords"].values(), APP_PW]
DEFAULTS = yaml.safe_load((REPO / "salt/pgcluster/defaults.yaml").read_text())["pgcluster"]
FAILOVER_BOUND = DEFAULTS["profiles"][LAB_CLUSTER["profile"]]["failover_bound"]


@pytest.fixture(scope="module")
def first_highstate(lab_up) -> dict:
    """A fresh lab (bare hosts), then one highstate: returns its result and duration."""
    fresh_lab()
    start = time.monotonic()
    ret = highstate()
    ended = time.monotonic()
    out = {"ret": ret, "seconds": ended - start, "ended": ended, "leader": _reported_leader(ret)}
    if out["leader"]:  # as the first highstate left it, before the crash test restarts anything (one query)
        q = ("SELECT current_setting('archive_mode'), string_agg(name, ',') FILTER (WHERE pending_restart) "
             "FROM pg_settings")  # fmt: skip
        out["archive_mode"], out["pending_restart"] = psql(out["leader"], q).stdout.strip().split("|")
    return out


def _reported_leader(ret: dict) -> str | None:
    """The leader the highstate's synchronous check named ("leader pg2 with 2+ streaming replicas,
    1+ synchronous": /sync named a standby and the leader's PostgreSQL waited for it)."""
    said = [s["comment"] for st in ret.values() if isinstance(st, dict) for s in st.values()
            if s.get("__id__") == "patroni-cluster-synchronous" and s.get("result")]  # fmt: skip
    ok = said and said[0].startswith("leader ") and said[0].endswith(", 1+ synchronous")
    return said[0].split()[1] if ok else None


@pytest.fixture
def deployed(first_highstate) -> dict:
    """A healthy cluster (waits for it: a previous test may have just failed over)."""
    return wait_healthy(2, timeout=180)


def test_a_leader_crash_right_after_the_first_highstate_fails_over_loses_nothing_and_the_old_leader_rejoins(
    first_highstate,
):
    """Ready means the durable promise holds: the leader the highstate reports dies seconds after
    it returned, under a writer through app1's PgBouncer; a replica takes over within the profile's
    bound and holds every acknowledged commit (Patroni's /sync named it when highstate returned).
    Booted again, the old leader rejoins as a streaming replica on the new timeline."""
    old = first_highstate["leader"]
    assert old, "the first highstate did not report a leader with a synchronous standby"
    psql(old, "CREATE TABLE crash_acks(id bigint PRIMARY KEY); GRANT INSERT, SELECT ON crash_acks TO app")
    writer = AckWriter("app1", "host=127.0.0.1 port=6432 dbname=app user=app", "crash_acks", password=APP_PW)
    wait_for("a first acknowledged write", lambda: psql(old, "SELECT count(*) FROM crash_acks").stdout.strip() != "0",
             10, interval=0.2)  # fmt: skip
    after = time.monotonic() - first_highstate["ended"]
    old_tl = next(m["timeline"] for m in cluster()["members"] if m["name"] == old)
    lab("crash", old)
    try:
        took = wait_for("a new leader", lambda: leader() not in (None, old), FAILOVER_BOUND + 30, interval=1)
        new = leader()

        def rows() -> int:
            return int(psql(new, "SELECT count(*) FROM crash_acks").stdout)

        first = rows()
        wait_for("writes acknowledged by the new leader through PgBouncer", lambda: rows() > first + 5, 60, 1)
        report = writer.stop()
    finally:
        lab("boot", old)
    assert after < 10, f"the crash came {after:.1f} s after highstate returned"
    assert took <= FAILOVER_BOUND, f"a new leader after {took:.1f} s"
    assert len(report["acked"]) > 5 and not report["stuck"], report
    assert writer.missing_on(new, "app") == [], f"acknowledged writes lost after a crash {after:.1f} s in"
    c = wait_healthy(2, timeout=240)
    roles = {m["name"]: (m["role"], m["state"], m["timeline"]) for m in c["members"]}
    assert roles[old][0] != "leader" and roles[old][1] == "streaming" and roles[old][2] > old_tl, roles
    token = str(uuid.uuid4())
    ensure_probe_table()
    psql(c["leader"], f"INSERT INTO failover_probe(note) VALUES ('{token}')")
    wait_for("row on the old leader", lambda: psql(old, f"SELECT count(*) FROM failover_probe WHERE note = '{token}'")
             .stdout.strip() == "1", 15)  # fmt: skip


def test_first_highstate_from_bare_hosts_gives_a_healthy_cluster(first_highstate):
    ret = first_highstate["ret"]
    failed = failed_states(ret)
    assert failed == {m: [] for m in ret}, failed
    c = cluster()
    assert c["leader"] in MEMBERS
    replicas = [m for m in c["members"] if m["name"] != c["leader"]]
    assert sorted(m["name"] for m in c["members"]) == list(MEMBERS)
    assert all(m["state"] == "streaming" and m["lag"] is not None for m in replicas)
    # Bootstrapped with its whole configuration, as the first highstate left it: archiving on,
    # nothing waiting for a restart (a reload sent to a Patroni bootstrapping a new cluster left
    # archive_mode off and a restart pending).
    assert (first_highstate.get("archive_mode"), first_highstate.get("pending_restart")) == ("on", ""), first_highstate
    tls = "--cacert=/etc/pgcluster/pki/ca.crt --cert=/etc/pgcluster/pki/host.crt --key=/etc/pgcluster/pki/host.key"
    health = json.loads(sh("pg1", "ETCDCTL_API=3 etcdctl --endpoints=https://pg1:2379,https://pg2:2379,"
                                  f"https://pg3:2379 {tls} endpoint health -w json").stdout)  # fmt: skip
    assert len(health) == 3 and all(h["health"] for h in health)


def test_debian_default_cluster_neither_runs_nor_starts(deployed):
    for host in MEMBERS:
        assert sh(host, "systemctl is-enabled postgresql@15-main postgresql", check=False).stdout.split() == [
            "disabled",
            "disabled",
        ]
        assert sh(host, "cat /etc/postgresql/15/main/start.conf").stdout.strip() == "disabled"
        datadirs = sh(host, "ps -C postgres -o args= | grep -o -- '-D [^ ]*' | sort -u").stdout.split("\n")
        assert [d for d in datadirs if d] == ["-D /var/lib/postgresql/15/patroni-main"]


def test_second_highstate_changes_nothing(deployed):
    assert changed_states(highstate()) == {m: [] for m in ("salt", "pg1", "pg2", "pg3", "backup", "app1", "legacy")}


def test_test_mode_changes_nothing(deployed):
    ret = highstate("test=True")
    would = {
        m: [s["__id__"] for s in st.values() if s["result"] is not True or s.get("changes")] for m, st in ret.items()
    }
    assert would == {m: [] for m in ret}


def test_row_written_on_leader_is_read_on_both_replicas(deployed):
    lead = deployed["leader"]
    token = str(uuid.uuid4())
    psql(lead, "CREATE TABLE IF NOT EXISTS replication_probe(token text)", db="app")
    psql(lead, f"INSERT INTO replication_probe VALUES ('{token}')", db="app")
    for replica in (m for m in MEMBERS if m != lead):
        wait_for(
            f"row on {replica}",
            lambda r=replica: (
                psql(r, f"SELECT count(*) FROM replication_probe WHERE token = '{token}'").stdout.strip() == "1"
            ),
            10,
        )
        assert psql(replica, "SELECT pg_is_in_recovery()").stdout.strip() == "t"


def test_app_role_and_database_exist_with_least_privilege(deployed):
    lead = deployed["leader"]
    assert psql(lead, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'app'").stdout.strip() == "app"
    ok = sh(
        "app1", f"PGPASSWORD={SECRETS[-1]} psql -XAtq -h {lead} -U app -d app -c 'select current_user'", check=False
    )
    assert ok.stdout.strip() == "app"
    denied = sh("app1", f"PGPASSWORD={SECRETS[-1]} psql -XAtq -h {lead} -U app -d postgres -c 'select 1'", check=False)
    assert denied.returncode != 0 and "pg_hba.conf rejects connection" in denied.stderr
    bad = sh("app1", f"PGPASSWORD=wrong psql -XAtq -h {lead} -U app -d app -c 'select 1'", check=False)
    assert bad.returncode != 0 and "password authentication failed" in bad.stderr
    method = psql(lead, "SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = 'app'").stdout.strip()
    assert method == "SCRAM-SHA-256$"


def test_patronictl_list_agrees_with_patroni_cluster(deployed):
    for host in MEMBERS:
        ctl = json.loads(sh(host, "patronictl list -f json").stdout)
        mod = cluster(host)
        assert {r["Member"]: r["Role"].lower().replace(" ", "_") for r in ctl} == {
            m["name"]: m["role"] for m in mod["members"]
        }
        assert {r["Member"]: r["State"] for r in ctl} == {m["name"]: m["state"] for m in mod["members"]}
        assert {r["Member"]: r["TL"] for r in ctl} == {m["name"]: m["timeline"] for m in mod["members"]}


def test_switchover_through_salt_moves_the_leader(deployed):
    old = deployed["leader"]
    new = next(m for m in MEMBERS if m != old)
    ret = salt_json(old, "patroni.switchover", f"candidate={new}")[old]
    assert ret["from"] == old and ret["to"] == new
    wait_for(f"{new} to lead", lambda: leader() == new, 60)
    c = wait_healthy(2, timeout=120)
    assert c["leader"] == new
    assert {m["name"]: m["role"] for m in c["members"]}[old] != "leader"


@pytest.mark.parametrize(
    "candidate, message", [("pg9", "no member 'pg9' in cluster 'main'"), ("LEADER", "is already the leader")]
)
def test_switchover_with_bad_arguments_is_a_clear_error(deployed, candidate, message):
    candidate = deployed["leader"] if candidate == "LEADER" else candidate
    res = lab("salt", "pg1", "patroni.switchover", f"candidate={candidate}", check=False)
    assert res.returncode != 0
    assert message in res.stdout and "Traceback" not in res.stdout
    assert leader() == deployed["leader"]


def test_unreachable_patroni_is_a_clear_error(deployed):
    res = lab("salt", "pg1", "patroni.cluster", "url=http://198.18.0.13:8999", check=False)
    assert res.returncode != 0
    assert "GET http://198.18.0.13:8999/cluster: cannot connect (is Patroni running?)" in res.stdout


def test_state_leader_and_dynamic_config(deployed):
    target = next(m for m in MEMBERS if m != deployed["leader"])
    ret = salt_json("pg1", "state.single", "patroni.leader", f"name={target}")["pg1"]
    (r,) = ret.values()
    assert r["result"] is True and r["changes"] == {"leader": {"old": deployed["leader"], "new": target}}
    wait_healthy(2, timeout=120)
    (r,) = salt_json("pg1", "state.single", "patroni.leader", f"name={target}")["pg1"].values()
    assert r["result"] is True and r["changes"] == {}
    (r,) = salt_json("pg2", "state.single", "patroni.dynamic_config", "name=c", 'config={"ttl": 20}')["pg2"].values()
    assert r["changes"] == {}
    cfg = '{"postgresql": {"parameters": {"work_mem": "8MB"}}}'
    (r,) = salt_json("pg2", "state.single", "patroni.dynamic_config", "name=c", f"config={cfg}", "test=True")[
        "pg2"
    ].values()
    assert r["result"] is None and r["changes"] == {"patch": {"postgresql": {"parameters": {"work_mem": "8MB"}}}}
    assert "work_mem" not in salt_json("pg2", "patroni.config_get")["pg2"]["postgresql"]["parameters"]


def test_stopping_patroni_stops_every_postgres_process(deployed):
    replica = next(m for m in MEMBERS if m != deployed["leader"])
    sh(replica, "systemctl stop patroni")
    try:
        assert sh(replica, "pgrep -u postgres -c postgres", check=False).stdout.strip() == "0"
    finally:
        sh(replica, "systemctl start patroni")
    wait_healthy(2, timeout=120)


def test_no_secret_in_process_lists_logs_or_readable_files(deployed):
    for host in MEMBERS:
        ps = sh(host, "ps -eo args=").stdout
        logs = sh(host, "journalctl --no-pager -o cat; cat /var/log/salt/minion 2>/dev/null", check=False).stdout
        for secret in SECRETS:
            assert secret not in ps, f"password in a process list on {host}"
            assert secret not in logs, f"password in the logs of {host}"
        modes = sh(host, "stat -c '%n %a %U' /etc/patroni/config.yml /etc/patroni/.pgpass").stdout.split("\n")
        assert modes[:2] == ["/etc/patroni/config.yml 600 postgres", "/etc/patroni/.pgpass 600 postgres"]
        readable = sh(host, f"grep -rlF {SECRETS[0]} /etc /var/lib/postgresql /opt 2>/dev/null", check=False).stdout
        for path in filter(None, readable.split("\n")):
            mode = sh(host, f"stat -c '%a %U' {path}").stdout.strip()
            assert mode.split()[0][-1] == "0" and mode.split()[0][-2] in "04", f"{path} is {mode}"
    master_logs = sh("salt", "cat /var/log/salt/master; journalctl --no-pager -o cat", check=False).stdout
    assert not [s for s in SECRETS if s in master_logs]


def test_bad_pillar_stops_highstate_before_any_change(deployed):
    before = sh("pg1", "stat -c %Y /etc/patroni/config.yml /etc/default/etcd").stdout
    pillar = json.dumps({"pgcluster": {"clusters": {"main": {"etcd": ["pg1", "pg2"]}}}})
    ret = highstate(f"pillar={pillar}")
    for host in MEMBERS:
        assert isinstance(ret[host], list), ret[host]
        assert any("pgcluster:clusters:main:etcd: 2 members; etcd needs at least 3" in e for e in ret[host])
    assert sh("pg1", "stat -c %Y /etc/patroni/config.yml /etc/default/etcd").stdout == before


def reachable(src: str, dst: str, port: int) -> bool:
    return sh(src, f"timeout 2 bash -c '</dev/tcp/{dst}/{port}'", check=False).returncode == 0


def test_etcd_and_postgresql_only_answer_the_hosts_that_need_them(deployed):
    assert reachable("pg2", "pg1", 2379) and reachable("pg2", "pg1", 2380)
    assert not reachable("app1", "pg1", 2379) and not reachable("backup", "pg1", 2380)
    assert reachable("backup", "pg1", 2379)  # the monitoring host reads etcd's /metrics
    assert reachable("app1", "pg1", 5432)  # a PgBouncer host
    assert not reachable("backup", "pg1", 5432) and not reachable("salt", "pg3", 5432)
    # Patroni's REST API: members, PgBouncer hosts, the master and the monitoring host (/metrics).
    assert reachable("pg2", "pg1", 8008) and reachable("app1", "pg1", 8008) and reachable("salt", "pg1", 8008)
    assert reachable("backup", "pg1", 8008)
    assert not reachable("pg1", "app1", 6432) and not reachable("backup", "pg2", 6432)
    rules = sh("pg1", "nft list table inet pgcluster").stdout
    assert "tcp dport 2380 ip saddr { 198.18.0.11, 198.18.0.12, 198.18.0.13 } accept" in rules
    assert not reachable("salt", "pg1", 2379)
