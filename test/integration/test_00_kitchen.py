"""kitchen.yml's suites, run by the lab as kitchen-salt would (masterless, converged twice, the
second converge changing nothing, testinfra verifiers on the hosts). Runs first: it needs the lab
down and removes its hosts afterwards."""

from __future__ import annotations

import re

import pytest
from labtools import lab

SUITES = ["member", "pgbouncer", "backup", "cluster"]


@pytest.mark.parametrize("suite", SUITES)
def test_kitchen_suite(suite):
    lab("down")
    res = lab("kitchen", suite, check=False, timeout=1800)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    verdicts = re.findall(r"kitchen (\S+)\s+(passed|FAILED)$", out, re.M)
    assert verdicts and all(v == "passed" for _, v in verdicts), out[-6000:]
    assert re.search(r"idempotence [\d.]+ s, 0 changed, 0 failed", out), out[-3000:]
