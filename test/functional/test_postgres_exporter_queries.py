"""pgcluster's queries for Debian's PostgreSQL exporter (salt/pgcluster/monitoring/files/
postgres-exporter-queries.yaml), run by the real exporter (0.11, unpacked by lab prepare) against
the real PostgreSQL 15 of conftest.py: every series the alert rules read exists, with values that
make sense."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from pgctest import REPO

EXPORTER = "/opt/pgcluster-lab/bin/postgres_exporter"
QUERIES = REPO / "salt/pgcluster/monitoring/files/postgres-exporter-queries.yaml"
LISTEN = "127.0.0.1:19187"


@pytest.fixture(scope="module")
def metrics(server) -> dict[str, float]:
    assert Path(EXPORTER).exists(), "the PostgreSQL exporter is not unpacked: test/lab/lab prepare does it"
    dsn = f"host={server['socket_dir']} port={server['port']} user=postgres dbname=postgres sslmode=disable"
    proc = subprocess.Popen(["runuser", "-u", "postgres", "--", "env", f"DATA_SOURCE_NAME={dsn}", EXPORTER,
                             f"--web.listen-address={LISTEN}", f"--extend.query-path={QUERIES}",
                             "--disable-default-metrics"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd="/")  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://{LISTEN}/metrics", timeout=5) as resp:
                    text = resp.read().decode()
                if "pgcluster_database_size_bytes" in text:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the exporter served no pgcluster series within 30 s"
            time.sleep(0.3)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    failed = [line for line in err.splitlines() if "level=error" in line and "pgcluster" in line]
    assert not failed, failed  # a query of ours the server refused
    return {m[1]: float(m[2]) for m in re.finditer(r"^(pgcluster_\S+) (\S+)$", text, re.M)}


def test_every_series_the_alert_rules_read_is_there(metrics):
    names = {k.split("{")[0] for k in metrics}
    assert {"pgcluster_database_size_bytes", "pgcluster_database_xid_age", "pgcluster_connections_used",
            "pgcluster_connections_max", "pgcluster_archiver_failing",
            "pgcluster_wal_position_bytes"} <= names  # fmt: skip
    rules = (REPO / "_utils/pgcluster_monitoring.py").read_text()
    for name in ("pgcluster_database_xid_age", "pgcluster_connections_used", "pgcluster_connections_max",
                 "pgcluster_archiver_failing"):  # fmt: skip
        assert name in rules


def one(metrics: dict[str, float], name: str, label: str = "") -> float:
    """The value of series NAME (with LABEL among its labels); the exporter adds server="..."."""
    (value,) = [v for k, v in metrics.items() if k.split("{")[0] == name and label in k]
    return value


def test_the_values_are_those_of_the_server(metrics):
    assert one(metrics, "pgcluster_database_size_bytes", 'datname="shop"') > 1_000_000
    assert one(metrics, "pgcluster_connections_max") == 100 and one(metrics, "pgcluster_connections_used") >= 1
    assert one(metrics, "pgcluster_archiver_failing") == 0 and one(metrics, "pgcluster_wal_position_bytes") > 0
    xid = [v for k, v in metrics.items() if k.startswith("pgcluster_database_xid_age")]
    assert xid and all(0 <= v < 2**31 for v in xid)
