"""The formula through Salt's own loader and renderers, masterless (no daemons).

Every lab role renders the states its model implies; a bad pillar stops the render
with a message naming the key; no secret is rendered into state data.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pgctest import REPO

SALT_CALL = str(Path(sys.executable).parent / "salt-call")
LAB_PILLAR = yaml.safe_load((REPO / "pillar/pgcluster/lab_model.yaml").read_text())["pgcluster"]
LAB_TLS = yaml.safe_load((REPO / "test/kitchen/pillar/tls.yaml").read_text())
SECRETS = [
    *LAB_PILLAR["clusters"]["main"]["passwords"].values(),
    LAB_PILLAR["clusters"]["main"]["roles"]["app"]["password"],
    LAB_PILLAR["clusters"]["main"]["pgbackrest"]["cipher_pass"],
    # Every private key: its base64 body (PEM line breaks differ once rendered to JSON).
    *(h["key"].split("-----")[2].split()[0] for h in LAB_TLS["hosts"].values()),
]


@pytest.fixture(scope="module")
def confdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("salt")
    ext = d / "ext"
    ext.mkdir()
    for sub in ("_modules", "_states", "_utils"):
        (ext / sub).symlink_to(REPO / sub)
    # The kitchen suites' pillar: the lab's model, TLS from pillar (pki mode pillar: masterless).
    pillar = d / "pillar"
    (pillar / "pgcluster").mkdir(parents=True)
    (pillar / "top.sls").write_text("base:\n  '*':\n    - pgcluster.lab\n    - pgcluster.tls\n")
    for name, src in [
        ("lab.sls", "pillar/pgcluster/lab.sls"),
        ("model.jinja", "pillar/pgcluster/model.jinja"),
        ("lab_model.yaml", "pillar/pgcluster/lab_model.yaml"),
        ("formula_defaults.yaml", "salt/pgcluster/defaults.yaml"),
        ("tls.sls", "test/kitchen/pillar/tls.sls"),
        ("tls.yaml", "test/kitchen/pillar/tls.yaml"),
    ]:
        (pillar / "pgcluster" / name).symlink_to(REPO / src)
    (d / "minion").write_text(
        yaml.safe_dump(
            {
                "file_client": "local",
                "file_roots": {"base": [str(REPO / "salt"), str(ext)]},
                "pillar_roots": {"base": [str(pillar)]},
                "cachedir": str(d / "cache"),
                # Not Salt's default under /var/cache/salt: the lab's hosts see the machine's files.
                "extension_modules": str(d / "cache" / "extmods"),
                "minion_id_caching": False,
                "pki_dir": str(d / "pki"),
                "log_file": str(d / "minion.log"),
                "sock_dir": str(d / "sock"),
            }
        )
    )  # fmt: skip
    res = salt_call(d, "pg1", "saltutil.sync_all")  # custom modules into the masterless cache
    assert res.returncode == 0, res.stderr
    return d


def salt_call(confdir: Path, minion: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SALT_CALL, "-c", str(confdir), "--local", f"--id={minion}", "--out=json", "--retcode-passthrough", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def states_of(confdir: Path, minion: str, sls: str = "pgcluster", *extra: str) -> dict:
    res = salt_call(confdir, minion, "state.show_sls", sls, *extra)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout)["local"]


def test_database_server_gets_etcd_postgresql_patroni(confdir):
    ids = set(states_of(confdir, "pg1"))
    assert {"etcd-service-running", "etcd-cluster-healthy", "postgresql-default-cluster-stopped",
            "patroni-config-managed", "patroni-service-running", "patroni-cluster-healthy",
            "pgcluster-role-app-present", "pgcluster-database-app-present"} <= ids  # fmt: skip
    # The lab's profile (durable) is synchronous: highstate waits until a standby is synchronous.
    synchronous = states_of(confdir, "pg1")["patroni-cluster-synchronous"]["patroni"]
    assert {"sync_standbys": 1} in synchronous and {"replicas": 2} in synchronous


def test_the_ca_minion_without_a_role_runs_the_node_exporter_only(confdir):
    # (pki mode pillar here: with the CA run by Salt it would hold the CA, see the lab tests.)
    ids = set(states_of(confdir, "salt"))
    assert {"pgcluster-pki-ca-from-pillar", "pgcluster-pki-key-from-pillar", "pgcluster-firewall-rules-managed",
            "monitoring-node-exporter-running"} <= ids  # fmt: skip
    assert not [i for i in ids if i.startswith(("patroni", "etcd", "pgbouncer", "pgbackrest", "postgresql"))]
    assert not {"monitoring-postgres-exporter-running", "monitoring-prometheus-running"} & ids
    # Without monitoring it holds the CA certificate only.
    off = json.dumps({"pgcluster": {"monitoring": {"enabled": False}}})
    assert set(states_of(confdir, "salt", "pgcluster", f"pillar={off}")) == {
        "pgcluster-pki-group-present", "pgcluster-pki-dir-present", "pgcluster-pki-ca-from-pillar"}  # fmt: skip


def test_monitoring_follows_the_roles(confdir):
    pg1, app1, backup = (set(states_of(confdir, h)) for h in ("pg1", "app1", "backup"))
    assert {"monitoring-postgres-exporter-running", "monitoring-pgbouncer-exporter-running",
            "pgcluster-monitoring-role-present"} <= pg1  # fmt: skip
    assert "monitoring-pgbouncer-exporter-running" in app1 and "monitoring-postgres-exporter-running" not in app1
    assert {"monitoring-prometheus-running", "monitoring-alertmanager-running", "monitoring-prometheus-ready",
            "monitoring-pgbackrest-textfile-timer-active"} <= backup  # fmt: skip
    assert not {"monitoring-prometheus-running", "monitoring-pgbackrest-textfile-timer-active"} & (pg1 | app1)


def test_package_version_pins_the_minor_packages_and_nothing_else(confdir):
    def pkgs(*extra: str) -> list:
        state = states_of(confdir, "pg1", "pgcluster", *extra)["postgresql-packages-installed"]["pkg"]
        return next(a["pkgs"] for a in state if isinstance(a, dict) and "pkgs" in a)

    assert pkgs() == ["postgresql-15", "postgresql-contrib"]  # unpinned: whatever the repositories give
    pin = json.dumps({"pgcluster": {"postgresql": {"package_version": "15.20-0+deb12u1"}}})
    assert pkgs(f"pillar={pin}") == ["postgresql-contrib", {"postgresql-15": "15.20-0+deb12u1"},
                                     {"postgresql-client-15": "15.20-0+deb12u1"}]  # fmt: skip


def test_a_minion_outside_the_model_gets_nothing_to_do(confdir):
    assert set(states_of(confdir, "stranger")) == {"pgcluster-no-role-on-this-minion"}


@pytest.mark.parametrize("minion", ["pg1", "backup", "app1"])
def test_no_secret_is_rendered_into_state_data(confdir, minion):
    rendered = json.dumps(states_of(confdir, minion))
    assert not [s for s in SECRETS if s in rendered]


def test_secret_file_is_0600_and_not_diffed(confdir):
    conf = states_of(confdir, "pg1")["patroni-config-managed"]["file"]
    args = {k: v for d in conf if isinstance(d, dict) for k, v in d.items()}
    assert args["mode"] == "0600" and args["user"] == "postgres" and args["show_changes"] is False


@pytest.mark.parametrize(
    "override, message",
    [
        ({"etcd": ["pg1", "pg2"]}, "pgcluster:clusters:main:etcd: 2 members; etcd needs at least 3"),
        ({"members": ["pg1", "pg2", "db7"]}, "pgcluster:clusters:main:members[2]: 'db7' has no address"),
        ({"passwords": {"superuser": "short"}}, "pgcluster:clusters:main:passwords:superuser: shorter than 12"),
        ({"port": "fivefourthreetwo"}, "pgcluster:clusters:main:port: 'fivefourthreetwo' is not a port number"),
        ({"profile": "turbo"}, "pgcluster:clusters:main:profile: unknown profile 'turbo'"),
        (
            {"postgresql": {"package_version": "16.4-1"}},
            "pgcluster:postgresql:package_version: '16.4-1' is not a package version of PostgreSQL 15",
        ),  # fmt: skip
    ],
)
def test_bad_pillar_stops_the_render_naming_the_key(confdir, override, message):
    top = "postgresql" in override
    pillar = json.dumps({"pgcluster": override if top else {"clusters": {"main": override}}})
    res = salt_call(confdir, "pg1", "state.show_sls", "pgcluster", f"pillar={pillar}")
    assert res.returncode != 0
    assert message in res.stdout
    assert "invalid pgcluster pillar" in res.stdout


@pytest.mark.parametrize(
    "minion, removed",
    [
        ("pg1", {"patroni-clean-services-dead", "postgresql-clean-packages-removed", "etcd-clean-packages-removed",
                 "pgbackrest-clean-package-removed", "pgbouncer-clean-package-removed",
                 "pgcluster-firewall-clean-service-dead"}),
        ("app1", {"pgclient-clean-files-absent", "pgclient-clean-os-account-app-absent",
                  "pgbouncer-clean-files-absent"}),
        ("backup", {"pgbackrest-clean-services-dead", "pgcluster-firewall-clean-files-absent"}),
    ],
)  # fmt: skip
def test_clean_removes_what_each_role_installed_and_keeps_data_by_default(confdir, minion, removed):
    ids = set(states_of(confdir, minion, "pgcluster.clean"))
    assert removed <= ids
    assert not {i for i in ids if "data" in i or "repository" in i}
    rendered = json.dumps(states_of(confdir, minion, "pgcluster.clean"))
    assert "/var/lib/pgbackrest" not in rendered and "patroni-main" not in rendered


def test_clean_removes_data_only_when_pillar_says_so(confdir):
    pillar = json.dumps({"pgcluster": {"clean": {"data": True}}})
    pg1 = states_of(confdir, "pg1", "pgcluster.clean", f"pillar={pillar}")
    assert {"postgresql-clean-data-absent", "etcd-clean-data-absent"} <= set(pg1)
    assert "/var/lib/postgresql/15/patroni-main" in json.dumps(pg1["postgresql-clean-data-absent"])
    backup = states_of(confdir, "backup", "pgcluster.clean", f"pillar={pillar}")
    assert "/var/lib/pgbackrest" in json.dumps(backup["pgbackrest-clean-files-absent"])


@pytest.mark.parametrize("minion", ["pg1", "backup", "app1"])
def test_every_file_template_renders(confdir, minion):
    # test=True renders every file.managed template (its diff is computed) and changes nothing.
    res = salt_call(confdir, minion, "state.apply", "pgcluster", "test=True")
    states = json.loads(res.stdout)["local"]
    broken = {s["__id__"]: s["comment"][:300] for s in states.values()
              if "Unable to manage file" in str(s.get("comment")) or "Jinja" in str(s.get("comment"))}  # fmt: skip
    assert broken == {}
