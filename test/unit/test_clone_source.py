"""salt/pgcluster/patroni/files/pgcluster-clone-source.sh, Patroni's clone method of a physical
migration, with a pg_basebackup stand-in that lays out a Debian source's data directory: the
source's postgresql.auto.conf and (non-Debian) postgresql.conf are kept beside as *.source and
empty ones put in place; Patroni's arguments are required."""

from __future__ import annotations

import os
import subprocess

from pgctest import REPO

SCRIPT = REPO / "salt/pgcluster/patroni/files/pgcluster-clone-source.sh"
FAKE = """#!/bin/sh
echo "$*" > "$CALLED.args"
for a in "$@"; do
  case "$a" in --pgdata=*) d="${a#--pgdata=}";; --dbname=*) echo "${a#--dbname=}" > "$CALLED";; esac
done
mkdir -p "$d" && echo "ssl_cert_file = '/var/lib/postgresql/15/lent.crt'" > "$d/postgresql.auto.conf"
[ -z "$WITH_CONF" ] || echo "hba_file = '/etc/elsewhere'" > "$d/postgresql.conf"
"""


def _clone(tmp_path, *args, with_conf=""):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "pg_basebackup").write_text(FAKE)
    (bin_dir / "pg_basebackup").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLED": str(tmp_path / "called"),
           "WITH_CONF": with_conf}  # fmt: skip
    return subprocess.run(["sh", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=30)


def test_a_debian_source_leaves_empty_configuration_files_and_keeps_its_own_beside(tmp_path):
    d = tmp_path / "data"
    res = _clone(tmp_path, "--scope=main", "--role=replica", f"--datadir={d}", "--connstring=host=198.18.0.40")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "called").read_text().strip() == "host=198.18.0.40"
    assert (d / "postgresql.auto.conf").read_text() == "" and (d / "postgresql.conf").read_text() == ""
    assert "lent.crt" in (d / "postgresql.auto.conf.source").read_text()
    assert not (d / "postgresql.conf.source").exists()


def test_a_source_with_its_own_postgresql_conf_keeps_it_beside(tmp_path):
    d = tmp_path / "data"
    res = _clone(tmp_path, f"--datadir={d}", "--connstring=host=x", with_conf="1")
    assert res.returncode == 0, res.stderr
    assert (d / "postgresql.conf").read_text() == "" and "elsewhere" in (d / "postgresql.conf.source").read_text()


def test_without_patronis_arguments_it_says_what_is_missing(tmp_path):
    res = _clone(tmp_path, "--scope=main")
    assert res.returncode == 2 and "--datadir= and --connstring= are required" in res.stderr


def test_the_copy_rate_patroni_hands_over_limits_pg_basebackup(tmp_path):
    """migrate:copy_max_rate reaches the method as --max_rate (with Patroni's other keys, ignored)."""
    d = tmp_path / "data"
    res = _clone(tmp_path, "--no_params=False", "--keep_data=False", "--max_rate=2M", f"--datadir={d}",
                 "--connstring=host=x")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "called.args").read_text().split()[-1] == "--max-rate=2M"
    _clone(tmp_path, f"--datadir={tmp_path / 'again'}", "--connstring=host=x")
    assert "max-rate" not in (tmp_path / "called.args").read_text()
