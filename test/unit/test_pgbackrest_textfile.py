"""pgBackRest's facts for the node exporter's textfile collector (pgcluster_textfile util), from
`pgbackrest info --output=json` recorded from the lab's real pgBackRest 2.45, checked by promtool."""

from __future__ import annotations

import copy
import json
import re
import subprocess

import pytest
from pgctest import FIXTURES, load_module
from test_alert_rules import promtool

INFO = json.loads((FIXTURES / "pgbackrest" / "info.json").read_text())


@pytest.fixture
def tf():
    return load_module("utils", "pgcluster_textfile")


def samples(text: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(r"^(\S+) (\S+)$", text, re.M)}


def test_the_newest_good_backup_of_each_type_and_the_stanza_status(tf):
    got = samples(tf.pgbackrest_metrics(INFO, repository_bytes=123456))
    assert got["pgcluster_pgbackrest_up"] == 1
    assert got['pgcluster_pgbackrest_stanza_status{stanza="main"}'] == 0
    assert got['pgcluster_pgbackrest_last_backup_timestamp_seconds{stanza="main",type="full"}'] == 1795656534
    assert got['pgcluster_pgbackrest_last_backup_timestamp_seconds{stanza="main",type="incr"}'] == 1795656850
    assert got['pgcluster_pgbackrest_last_backup_size_bytes{stanza="main",type="incr"}'] == 30592842
    assert got['pgcluster_pgbackrest_last_backup_repo_bytes{stanza="main",type="incr"}'] == 464
    assert got['pgcluster_pgbackrest_backups{stanza="main",type="incr"}'] == 2
    assert got["pgcluster_pgbackrest_repository_bytes"] == 123456


def test_a_failed_backup_is_not_the_last_backup(tf):
    raw = copy.deepcopy(INFO)
    raw[0]["backup"][-1]["error"] = True
    got = samples(tf.pgbackrest_metrics(raw))
    assert got['pgcluster_pgbackrest_last_backup_timestamp_seconds{stanza="main",type="incr"}'] == 1795656739
    assert got['pgcluster_pgbackrest_backups{stanza="main",type="incr"}'] == 1


def test_pgbackrest_not_answering_is_up_0_and_nothing_else(tf):
    assert samples(tf.pgbackrest_metrics(None)) == {"pgcluster_pgbackrest_up": 0}


def test_promtool_accepts_the_exposition(tf, tmp_path):
    res = subprocess.run([promtool(), "check", "metrics"], input=tf.pgbackrest_metrics(INFO, 1),
                         capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_file_is_replaced_whole_and_readable_by_the_collector(tf, tmp_path):
    path = tmp_path / "pgbackrest.prom"
    path.write_text("old\n")
    tf.write_textfile(str(path), "pgcluster_pgbackrest_up 1\n")
    assert path.read_text() == "pgcluster_pgbackrest_up 1\n"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in tmp_path.iterdir()] == ["pgbackrest.prom"]


def test_tree_bytes_counts_files_below(tf, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_bytes(b"1" * 100)
    (tmp_path / "y").write_bytes(b"1" * 23)
    assert tf.tree_bytes(str(tmp_path)) == 123
