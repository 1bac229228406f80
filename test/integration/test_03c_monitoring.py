"""Monitoring in the lab: Prometheus on the backup host scrapes every exporter, Patroni and etcd
over TLS; exporters answer the monitoring host only; a replica down fires its alert in
Alertmanager and coming back resolves it; the exporter's role reads statistics, not data.

(Before test_07_ports, which takes the shared lab down at its end.)
"""

from __future__ import annotations

import json
import shlex

from labtools import CA, MEMBERS, psql, sh, wait_for, wait_healthy

PROMETHEUS = "https://198.18.0.20:9090"
ALERTMANAGER = "http://127.0.0.1:9093"  # loopback of the backup host only
# job: hosts, from the lab's model (every host runs the node exporter).
TARGETS = {
    "node": {"salt", "pg1", "pg2", "pg3", "backup", "app1"},
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
    assert sh(leader, f"{as_monitor} -d app -c 'SELECT 1'", check=False).returncode != 0  # no way into app's data
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
