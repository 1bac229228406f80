"""The Patroni callback relay's checks."""

from __future__ import annotations

import importlib.util
import json

import pytest
from pgctest import REPO


def load_relay():
    spec = importlib.util.spec_from_file_location("relay", REPO / "salt/pgcluster/patroni/files/pgcluster-events.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    "msg, problem",
    [
        ({"action": "on_role_change", "role": "primary", "cluster": "other"}, "is not this host's cluster"),
        ({"action": "rm -rf", "role": "primary", "cluster": "main"}, "unknown action"),
        ({"action": "on_start", "role": "root", "cluster": "main"}, "unknown role"),
        (["on_start"], "not a JSON object"),
    ],
)
def test_relay_refuses_malformed_callbacks(msg, problem):
    relay = load_relay()
    with pytest.raises(ValueError, match=problem):
        relay.parse(json.dumps(msg).encode(), "main")


def test_relay_accepts_patroni_3_and_4_role_names():
    relay = load_relay()
    for role in ("primary", "master"):
        ev = relay.parse(json.dumps({"action": "on_role_change", "role": role, "cluster": "main"}).encode(), "main")
        assert ev == {"action": "on_role_change", "role": "primary", "cluster": "main"}
    for role in ("replica", "demoted", "standby_leader"):
        assert relay.parse(json.dumps({"action": "on_stop", "role": role, "cluster": "main"}).encode(), "main")
