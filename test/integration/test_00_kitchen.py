"""kitchen.yml's suites, run by the lab as kitchen-salt would (masterless, converged twice, the
second converge changing nothing, testinfra verifiers on the hosts). Runs first: it needs the lab
down and removes its hosts afterwards. One ``lab kitchen`` runs every suite (suites on hosts of
their own at the same time); each test reads its suite's verdict."""

from __future__ import annotations

import re

import pytest
from labtools import lab

SUITES = {"member": ["member"], "pgbouncer": ["pgbouncer"], "backup": ["backup"],
          "cluster": ["cluster-pg1", "cluster-pg2", "cluster-pg3", "cluster-backup", "cluster-app1"]}  # fmt: skip


@pytest.fixture(scope="module")
def kitchen() -> str:
    lab("down")
    res = lab("kitchen", check=False, timeout=3600)
    return res.stdout + res.stderr


@pytest.mark.parametrize("suite", SUITES)
def test_kitchen_suite(kitchen, suite):
    for name in SUITES[suite]:
        verdict = re.search(rf"^lab: kitchen {re.escape(name)}\s+(passed|FAILED)$", kitchen, re.M)
        assert verdict and verdict.group(1) == "passed", kitchen[-6000:]
        idem = rf"kitchen {re.escape(name)}: idempotence [\d.]+ s, 0 changed, 0 failed"
        assert re.search(idem, kitchen), kitchen[-3000:]
