"""A member of the cluster converged masterless with the whole formula: Patroni leads or
streams, PostgreSQL answers, roles and databases exist, archiving reaches the repository."""

import json


def test_cluster_healthy_from_here(host):
    c = json.loads(host.run("patronictl list -f json").stdout)
    roles = sorted(m["Role"] for m in c)
    assert roles.count("Leader") == 1 and len(c) == 3
    assert all(m["State"] in ("running", "streaming") for m in c)


def test_application_role_and_database(host):
    out = host.run("runuser -u postgres -- psql -XAtc \"SELECT datname FROM pg_database WHERE datname = 'app'\"")
    assert out.stdout.strip() == "app"


def test_pgbouncer_routes_to_the_leader(host):
    c = json.loads(host.run("patronictl list -f json").stdout)
    leader = next(m["Host"] for m in c if m["Role"] == "Leader")
    assert f"leader {leader}" in host.file("/etc/pgbouncer/routing-main.ini").content_string


def test_exporters_serve_tls_on_the_host_address(host):
    for unit in ("prometheus-node-exporter", "prometheus-postgres-exporter", "pgcluster-pgbouncer-exporter"):
        assert host.service(unit).is_running and host.service(unit).is_enabled, unit
    addr = host.run("hostname -I").stdout.split()[0]
    for port, series in ((9100, "node_filesystem_avail_bytes"), (9187, "pgcluster_database_size_bytes"),
                         (9127, "pgbouncer_waiting_clients")):  # fmt: skip
        out = host.run(f"curl -sf --cacert /etc/pgcluster/pki/ca.crt https://{addr}:{port}/metrics")
        assert out.rc == 0 and series in out.stdout, (port, out.stderr)
