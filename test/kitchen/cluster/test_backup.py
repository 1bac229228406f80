"""The backup host of the cluster converged masterless: stanza created, a full backup taken."""

import json


def test_a_full_backup_of_the_cluster(host):
    out = host.run("runuser -u pgbackrest -- pgbackrest --stanza=main --output=json info")
    info = json.loads(out.stdout)[0]
    assert info["status"]["code"] == 0
    assert [b["type"] for b in info["backup"]][:1] == ["full"]


def test_prometheus_and_alertmanager_run_with_the_generated_rules(host):
    for unit in ("prometheus", "prometheus-alertmanager", "prometheus-node-exporter"):
        assert host.service(unit).is_running and host.service(unit).is_enabled, unit
    assert host.run("promtool check rules /etc/prometheus/pgcluster-rules.yml").rc == 0
    out = host.run("curl -sf --cacert /etc/pgcluster/pki/ca.crt https://198.18.0.20:9090/api/v1/rules")
    assert out.rc == 0 and "PgclusterMemberDown" in out.stdout
    # pgBackRest's facts for the node exporter, written by the timer.
    assert "pgcluster_pgbackrest_up 1" in host.file("/var/lib/prometheus/node-exporter/pgbackrest.prom").content_string
