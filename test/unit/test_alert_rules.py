"""The alert rules the monitoring host gets (pgcluster_monitoring util), run by promtool: every
rule fires on the series that should fire it and stays quiet on its neighbours
(test/unit/promtool/pgcluster_rules_test.yml)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from pgctest import REPO, load_module

CASES = REPO / "test" / "unit" / "promtool" / "pgcluster_rules_test.yml"
DEFAULTS = yaml.safe_load((REPO / "salt/pgcluster/defaults.yaml").read_text())["pgcluster"]


def promtool() -> str:
    found = shutil.which("promtool") or "/opt/pgcluster-lab/bin/promtool"
    assert Path(found).exists(), "promtool not found: test/lab/lab prepare installs it"
    return found


def model(**alerts) -> dict:
    """Clusters main (durable) and reports (fast), the default thresholds with ALERTS over them."""
    monitoring = {"alerts": {**DEFAULTS["monitoring"]["alerts"], **alerts}}
    clusters = {"main": {"profile": "durable"}, "reports": {"profile": "fast"}}
    return {"monitoring": monitoring, "profiles": DEFAULTS["profiles"], "clusters": clusters}


def run_cases(tmp_path: Path, rules: dict) -> subprocess.CompletedProcess:
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    shutil.copy(CASES, tmp_path / CASES.name)
    check = subprocess.run([promtool(), "check", "rules", "rules.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    return subprocess.run([promtool(), "test", "rules", CASES.name], cwd=tmp_path, capture_output=True, text=True)


@pytest.fixture
def mon():
    return load_module("utils", "pgcluster_monitoring")


def test_every_rule_fires_and_stays_quiet_as_its_cases_say(tmp_path, mon):
    res = run_cases(tmp_path, mon.alert_rules(model()))
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_rule_has_a_case_that_fires_and_one_that_stays_quiet(mon):
    names = {r["alert"] for r in mon.alert_rules(model())["groups"][0]["rules"]}
    fires, quiet = set(), set()
    for test in yaml.safe_load(CASES.read_text())["tests"]:
        for case in test["alert_rule_test"]:
            (fires if case["exp_alerts"] else quiet).add(case["alertname"])
    assert names - fires == set() and names - quiet == set()
    assert names == fires == quiet  # and no case for a rule that does not exist


def test_thresholds_come_from_the_model(tmp_path, mon):
    # With a replication lag limit of 2 GB, pg3's 1 GB lag in the cases no longer fires.
    res = run_cases(tmp_path, mon.alert_rules(model(replication_lag_bytes=2_000_000_000)))
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "alertname: PgclusterReplicationLag" in out and "alertname: PgclusterNoLeader" not in out


def test_only_strict_synchronous_clusters_get_the_no_standby_alert(mon):
    rules = mon.alert_rules(model())["groups"][0]["rules"]
    (standby,) = [r for r in rules if r["alert"] == "PgclusterNoSynchronousStandby"]
    assert 'cluster=~"main"' in standby["expr"]
    fast_only = model()
    fast_only["clusters"] = {"reports": {"profile": "fast"}}
    names = [r["alert"] for r in mon.alert_rules(fast_only)["groups"][0]["rules"]]
    assert "PgclusterNoSynchronousStandby" not in names


def test_the_scrape_configuration_passes_promtool_and_covers_every_exporter(tmp_path):
    mon = load_module("utils", "pgcluster_monitoring")
    pgc = load_module("utils", "pgcluster_model")
    osmap = yaml.safe_load((REPO / "salt/pgcluster/osfamilymap.yaml").read_text())
    lab = yaml.safe_load((REPO / "pillar/pgcluster/lab_model.yaml").read_text())["pgcluster"]
    model = pgc.validate(pgc.merge({"pgcluster": DEFAULTS}, osmap, lab, "Debian"))
    tls = {k: str(tmp_path / f"{k}.pem") for k in ("ca", "cert", "key")}
    for path in tls.values():
        Path(path).write_text("")
    conf = mon.scrape_config(model, tls)
    conf["rule_files"] = [str(tmp_path / "rules.yml")]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(mon.alert_rules(model)))
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(conf))
    res = subprocess.run([promtool(), "check", "config", "--syntax-only", "prometheus.yml"], cwd=tmp_path,
                         capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    jobs = {j["job_name"]: j for j in conf["scrape_configs"]}
    targets = {name: {t["labels"]["host"]: t["targets"][0] for t in j["static_configs"]} for name, j in jobs.items()}
    assert set(targets["node"]) == {"salt", "pg1", "pg2", "pg3", "backup", "app1", "legacy"}
    assert targets["patroni"] == {"pg1": "198.18.0.11:8008", "pg2": "198.18.0.12:8008", "pg3": "198.18.0.13:8008"}
    assert set(targets["postgres"]) == set(targets["etcd"]) == {"pg1", "pg2", "pg3"}
    assert set(targets["pgbouncer"]) == {"pg1", "pg2", "pg3", "app1"}
    assert jobs["etcd"]["tls_config"]["cert_file"] == tls["cert"] and jobs["patroni"]["scheme"] == "https"
    assert all(t["labels"]["cluster"] == "main" for t in jobs["patroni"]["static_configs"])
    assert {jobs[j]["scheme"] for j in ("node", "postgres", "pgbouncer")} == {"https"}  # the exporters serve TLS


def amtool() -> str:
    found = shutil.which("amtool") or "/opt/pgcluster-lab/bin/amtool"
    assert Path(found).exists(), "amtool not found: test/lab/lab prepare installs it"
    return found


@pytest.mark.parametrize(
    "receivers, smtp",
    [({"webhook": [], "email": []}, {}),
     ({"webhook": ["https://hooks.example.org/pg"], "email": ["dba@example.org"]},
      {"smarthost": "mail.example.org:587", "from": "alerts@example.org"})],
)  # fmt: skip
def test_the_alertmanager_configuration_passes_amtool(tmp_path, receivers, smtp):
    mon = load_module("utils", "pgcluster_monitoring")
    m = model()
    m["monitoring"] = {**DEFAULTS["monitoring"], "receivers": receivers,
                       "smtp": {**DEFAULTS["monitoring"]["smtp"], **smtp}}  # fmt: skip
    conf = mon.alertmanager_config(m)
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(conf))
    res = subprocess.run([amtool(), "check-config", "alertmanager.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    (receiver,) = conf["receivers"]
    assert [h["url"] for h in receiver.get("webhook_configs", [])] == receivers["webhook"]
    assert [e["to"] for e in receiver.get("email_configs", [])] == receivers["email"]
    assert conf["route"]["group_by"] == ["alertname", "cluster"]
