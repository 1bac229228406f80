"""An application host converged on its own: PgBouncer runs and, with no cluster answering,
routes nowhere (never to a guess); the client files let the application in without a prompt."""


def test_pgbouncer_runs_with_secret_files_closed(host):
    assert host.service("pgbouncer").is_running and host.service("pgbouncer").is_enabled
    for name in ("pgbouncer.ini", "pg_hba.conf", "userlist.txt"):
        f = host.file(f"/etc/pgbouncer/{name}")
        assert (f.user, f.group, f.mode) == ("postgres", "postgres", 0o640), name
    assert "lab-app-pw" not in host.file("/etc/pgbouncer/userlist.txt").content_string  # verifiers, no password
    assert host.socket("tcp://127.0.0.1:6432").is_listening


def test_no_leader_routes_nowhere(host):
    routing = host.file("/etc/pgbouncer/routing-main.ini").content_string
    assert "leader none" in routing and "app = host=127.0.0.1 port=1 dbname=app" in routing


def test_client_service_and_pgpass(host):
    service = host.file("/etc/postgresql-common/pg_service.conf").content_string
    assert "[app]" in service and "port=6432" in service
    pgpass = host.file("/root/.pgpass")
    assert (pgpass.user, pgpass.mode) == ("root", 0o600)
    assert host.user("app").exists and host.file("/var/lib/pgcluster-clients/app/.pgpass").mode == 0o600
