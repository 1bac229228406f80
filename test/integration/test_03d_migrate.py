"""Migrating the legacy host's standalone PostgreSQL into the cluster: the preflight
(``salt-run migrate.check``) against the real source, as Debian left it and then prepared.

(Before test_07_ports, which takes the shared lab down at its end.)
"""

from __future__ import annotations

import json

import pytest
from labtools import lab, sh

LOCAL = "/srv/lab-pillar/pgcluster/local.sls"
SOURCE = "198.18.0.40"


def declare(migrate: dict | None) -> None:
    """Put MIGRATE under the main cluster's pillar (None: no migrate block) and refresh pillars."""
    if migrate is None:
        sh("salt", f"rm -f {LOCAL}")
    else:
        block = json.dumps({"pgcluster": {"clusters": {"main": {"migrate": migrate}}}})
        sh("salt", f"mkdir -p {LOCAL.rsplit('/', 1)[0]} && cat > {LOCAL}", stdin=block)
    lab("salt", "*", "saltutil.refresh_pillar", "wait=True", "--out=quiet")


def on_legacy(sql: str) -> str:
    """SQL run on the legacy server as its superuser (peer, over the socket); psql's -At output."""
    return sh("legacy", "su postgres -c 'psql -X -At -v ON_ERROR_STOP=1'", stdin=sql).stdout


def check() -> tuple[int, dict]:
    res = lab("run", "migrate.check", "main", "--out=json", check=False)
    return res.returncode, json.loads(res.stdout)


@pytest.fixture(scope="module")
def legacy(deployed):
    """The legacy host's server as Debian installed it; the migrate block removed afterwards."""
    yield
    declare(None)


def test_check_without_a_migrate_block_names_the_missing_block(legacy):
    declare(None)
    rc, out = check()
    assert rc != 0
    assert "declares no migration" in out["error"] and "pgcluster:clusters:main:migrate" in out["error"]


def test_check_of_a_stock_server_names_each_problem(legacy):
    declare({"source": "legacy", "mode": "logical", "databases": ["shop"]})
    rc, out = check()
    assert rc != 0 and out["ready"] is False
    assert out["version"].startswith("15.")
    assert out["databases"]["shop"]["tables"] == 2 and out["databases"]["shop"]["encoding"] == "UTF8"
    problems = "\n".join(out["problems"])
    # Debian's defaults: wal_level=replica, listening on localhost only.
    assert "legacy has wal_level=replica" in problems
    for host in ("pg1", "pg2", "pg3", "app1"):
        assert f"{host} cannot reach legacy's PostgreSQL at {SOURCE}:5432" in problems
    assert len(out["problems"]) == 5, out["problems"]  # nothing else stands in the way


def test_check_of_a_wrong_port_says_the_server_does_not_answer(legacy):
    declare({"source": "legacy", "port": 5439, "mode": "logical", "databases": ["shop"]})
    rc, out = check()
    assert rc != 0
    assert out["error"].startswith("source legacy, port 5439: ") and "5439" in out["error"]


def test_check_of_an_unknown_database_names_it(legacy):
    declare({"source": "legacy", "mode": "logical", "databases": ["shop", "nosuch"]})
    rc, out = check()
    assert rc != 0
    assert "database nosuch does not exist on legacy (it has: postgres, shop)" in out["problems"]


def test_check_of_a_prepared_server_is_ready(legacy):
    """The source prepared the way start needs it (logical WAL, listening on its address):
    nothing stands in the way, and check changed nothing on either side."""
    on_legacy("ALTER SYSTEM SET wal_level = 'logical'; ALTER SYSTEM SET listen_addresses = '*';")
    sh("legacy", "systemctl restart postgresql@15-main")
    declare({"source": "legacy", "mode": "logical", "databases": ["shop"]})
    slots = "SELECT count(*) FROM pg_replication_slots"
    before = on_legacy(slots)
    rc, out = check()
    assert (rc, out["problems"], out["ready"]) == (0, [], True)
    assert out["target"]["leader"] in ("pg1", "pg2", "pg3")
    assert set(out["target"]["free_bytes"]) == {"pg1", "pg2", "pg3"}
    assert on_legacy(slots) == before


def test_check_refuses_a_physical_migration_into_a_cluster_that_holds_data(legacy):
    declare({"source": "legacy", "mode": "physical"})
    rc, out = check()
    assert rc != 0
    assert [p for p in out["problems"] if "already holds user data" in p] == out["problems"] != []
    assert "migrate into an empty cluster or use mode logical" in out["problems"][0]
