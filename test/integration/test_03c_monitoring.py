"""Monitoring in the lab: Prometheus on the backup host scrapes every exporter, Patroni and etcd
over TLS; exporters answer the monitoring host only; a replica down fires its alert in
Alertmanager and coming back resolves it; the exporter's role reads statistics, not data.

(Before test_07_ports, which takes the shared lab down at its end.)
"""

from __future__ import annotations

import json
import shlex
import subprocess

from labtools import CA, MEMBERS, lab, psql, sh, wait_for, wait_healthy

PROMETHEUS = "https://198.18.0.20:9090"
ALERTMANAGER = "http://127.0.0.1:9093"  # loopback of the backup host only
# job: hosts, from the lab's model (every host runs the node exporter).
TARGETS = {
    "node": {"salt", "pg1", "pg2", "pg3", "backup", "app1", "legacy"},
    "postgres": set(MEMBERS),
    "patroni": set(MEMBERS),
    "etcd": set(MEMBERS),
    "pgbouncer": {"pg1", "pg2", "pg3", "app1"},
}


def prometheus(path: str, **params: str) -> dict:
    """GET PATH of Prometheus's API from the backup host (TLS checked against the cluster's CA)."""
    args = " ".join(f"--data-urlencode {shlex.quote(f'{k}={v}')}" for k, v in params.items())
    out = sh("backup", f"curl -sf --cacert {CA} -G {args} {PROMETHEUS}{path}").stdout
    return json.loads(out)["data"]


def targets() -> dict[tuple[str, str], str]:
    return {
        (t["labels"]["job"], t["labels"]["host"]): t["health"] for t in prometheus("/api/v1/targets")["activeTargets"]
    }


def alerts(name: str) -> list[dict]:
    """Alerts NAME that Alertmanager holds as active."""
    out = sh(
        "backup", f"curl -sf -G --data-urlencode 'filter=alertname=\"{name}\"' {ALERTMANAGER}/api/v2/alerts"
    ).stdout
    return [a for a in json.loads(out) if a["status"]["state"] == "active"]


def test_every_scrape_target_is_up(deployed):
    want = {(job, host) for job, hosts in TARGETS.items() for host in hosts}
    wait_for("every scrape target up", lambda: {k for k, v in targets().items() if v == "up"} >= want, 90, 3)
    assert set(targets()) == want  # nothing else scraped


def test_every_series_the_alert_rules_read_is_collected(deployed):
    names = ["patroni_postgres_running", "patroni_primary", "patroni_xlog_replayed_location", "patroni_sync_standby",
             "etcd_server_has_leader", "node_filesystem_avail_bytes", "pgbouncer_waiting_clients",
             "pgcluster_database_xid_age", "pgcluster_connections_used", "pgcluster_archiver_failing",
             "pgcluster_pgbackrest_last_backup_timestamp_seconds"]  # fmt: skip

    def collected() -> list[str]:
        return [n for n in names if not prometheus("/api/v1/query", query=f"count({n})")["result"]]

    wait_for("every series collected", lambda: not collected(), 60, 3)
    rules = prometheus("/api/v1/rules")["groups"][0]["rules"]
    assert {r["name"] for r in rules} >= {"PgclusterMemberDown", "PgclusterNoSynchronousStandby"}
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]


def test_no_exporter_answers_app1_and_every_exporter_speaks_tls_only(deployed):
    ports = {"pg1": [9100, 9187, 9127, 2379], "backup": [9090, 9093], "app1": [9100, 9127]}
    for host, plist in ports.items():
        for port in plist:
            src = "pg2" if host == "app1" else "app1"
            probe = f"timeout 3 bash -c '</dev/tcp/{host}/{port}'"
            assert sh(src, probe, check=False).returncode != 0, f"{host}:{port} answers {src}"
    for port in (9100, 9187, 9127):  # the monitoring host gets TLS, not plain http
        assert (
            sh(
                "backup", f"curl -sf --cacert {CA} -o /dev/null https://198.18.0.11:{port}/metrics", check=False
            ).returncode
            == 0
        )
        assert (
            sh(
                "backup", f"curl -sf -o /dev/null --max-time 3 http://198.18.0.11:{port}/metrics", check=False
            ).returncode
            != 0
        )


def test_the_exporters_role_reads_statistics_not_data(deployed):
    leader = deployed_leader()
    as_monitor = "cd / && runuser -u prometheus -- psql -XAtq -h /var/run/postgresql -U pgcluster_monitor"
    assert sh(leader, f"{as_monitor} -d postgres -c 'SELECT count(*) >= 0 FROM pg_stat_activity'").stdout.strip() == "t"
    # It may connect to app (the sizes of its tables) but reads no row of it.
    # (failover_probe: made by the deployed fixture.)
    read = sh(leader, f"{as_monitor} -d app -c 'SELECT count(*) FROM failover_probe'", check=False)
    assert read.returncode != 0 and "permission denied" in read.stderr
    denied = sh(leader, f"{as_monitor} -d postgres -c 'CREATE TABLE t (i int)'", check=False)
    assert denied.returncode != 0 and "permission denied" in denied.stderr
    assert psql(leader, "SELECT rolsuper OR rolcreatedb OR rolcreaterole, rolpassword IS NULL FROM pg_authid "
                        "WHERE rolname = 'pgcluster_monitor'", db="postgres").stdout.strip() == "f|t"  # fmt: skip


def deployed_leader() -> str:
    return wait_healthy(2, timeout=120)["leader"]


def test_a_replica_down_fires_its_alert_and_coming_back_resolves_it(deployed):
    replica = next(m for m in MEMBERS if m != deployed_leader())
    assert not [a for a in alerts("PgclusterMemberDown") if a["labels"].get("host") == replica]
    sh(replica, "systemctl stop patroni")
    try:
        fired = wait_for(
            f"PgclusterMemberDown for {replica} in Alertmanager",
            lambda: any(a["labels"].get("host") == replica for a in alerts("PgclusterMemberDown")),
            150, 3,
        )  # fmt: skip
        print(f"alert active in Alertmanager {fired:.0f} s after Patroni stopped")
    finally:
        sh(replica, "systemctl start patroni")
    wait_healthy(2, timeout=180)
    wait_for(
        f"PgclusterMemberDown for {replica} resolved",
        lambda: not any(a["labels"].get("host") == replica for a in alerts("PgclusterMemberDown")),
        150, 3,
    )  # fmt: skip


MB = 2**20


def runner(*args: str) -> subprocess.CompletedProcess:
    return lab("run", *args, timeout=300)


def app_size() -> float:
    found = prometheus("/api/v1/query", query='max(pgcluster_database_size_bytes{cluster="main",datname="app"})')
    return float(found["result"][0]["value"][1]) if found["result"] else 0.0


def test_growth_report_shows_a_known_volume_written_and_draws_its_chart(deployed):
    leader = deployed_leader()
    psql(leader, "DROP TABLE IF EXISTS growth_probe")
    wait_for("app's size in Prometheus", lambda: app_size() > 0, 60, 3)
    before = app_size()
    psql(leader, "CREATE TABLE growth_probe AS SELECT g AS id, repeat('x', 1000) AS pad "
                 "FROM generate_series(1, 20000) g")  # fmt: skip
    try:
        wait_for("the 20 MiB written seen by Prometheus", lambda: app_size() >= before + 20 * MB, 90, 3)
        # A lab's history is minutes long: ask for a forecast from what there is.
        args = ("pgcluster.growth", "main", "days=0.05", "min_history_hours=0")
        rep = json.loads(runner(*args, "--out=json").stdout)
        app = rep["databases"]["app"]
        assert app["size_bytes"] >= before + 20 * MB
        assert app["per_day_bytes"] > 0  # it grew over the window
        assert rep["largest_tables"]["app"][0]["table"] == "public.growth_probe"
        assert rep["largest_tables"]["app"][0]["bytes"] >= 20 * MB
        assert set(rep["filesystems"]) == set(MEMBERS) and rep["fullest"] in MEMBERS
        assert rep["wal_per_day_bytes"] > 0 and rep["repository"]["size_bytes"] > 0
        # The members' timer writes the largest tables for Prometheus (run now, not in 5 minutes).
        sh(leader, "systemctl start pgcluster-table-sizes.service")
        probe = 'pgcluster_table_size_bytes{datname="app",table="public.growth_probe"}'
        wait_for("growth_probe's size in Prometheus", lambda: bool(prometheus("/api/v1/query", query=probe)["result"]),
                 60, 3)  # fmt: skip
        assert float(prometheus("/api/v1/query", query=probe)["result"][0]["value"][1]) >= 20 * MB
        # The chart: a valid PNG on the master, named in the report.
        check = ("import struct,sys,zlib; b=open(sys.argv[1],'rb').read(); assert b[:8]==b'\\x89PNG\\r\\n\\x1a\\n'; "
                 "w,h=struct.unpack('>II',b[16:24]); print(w,h)")  # fmt: skip
        assert sh("salt", f"python3 -c {shlex.quote(check)} {rep['chart']}").stdout.split() == ["800", "400"]
        text = runner(*args).stdout
        assert "DATABASE" in text and "growth_probe" in text and "fullest member:" in text
        short = runner("pgcluster.growth", "main", "days=0.05").stdout  # the default 6 h of history: no forecast
        assert "no growth rate yet: too little history" in short
    finally:
        psql(leader, "DROP TABLE IF EXISTS growth_probe")


def test_growth_and_status_refuse_bad_input_clearly(deployed):
    res = lab("run", "pgcluster.growth", "nosuch", check=False)
    assert res.returncode != 0 and "unknown cluster 'nosuch' (clusters: main)" in res.stdout + res.stderr
    res = lab("run", "pgcluster.growth", "main", "days=-1", check=False)
    assert res.returncode != 0 and "days=-1 must be between 0 and 3660" in res.stdout + res.stderr


def test_status_is_one_screen_with_members_routes_backups_sizes_and_alerts(deployed):
    status = json.loads(runner("pgcluster.status", "main", "--out=json").stdout)
    assert {m["name"] for m in status["members"]} == set(MEMBERS)
    assert [m["name"] for m in status["members"] if m["role"] == "leader"] == [status["leader"]]
    assert status["misrouted"] == []
    watch = status["watch"]
    assert "error" not in watch, watch
    assert watch["database_bytes"]["app"] > 0 and "app" in watch["database_growth_last_day_bytes"]
    assert "full" in watch["last_backup_age_hours"]
    assert isinstance(watch["alerts_firing"], list)
