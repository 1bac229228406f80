"""Shared test helpers: load the project's Salt modules outside Salt, recorded fixtures."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import requests

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "test" / "fixtures"


def load_module(kind: str, name: str, **dunders: object) -> ModuleType:
    """Import REPO/_KIND/NAME.py as a fresh module with Salt's dunders set (unit tests)."""
    spec = importlib.util.spec_from_file_location(f"pgc_{kind}_{name}", REPO / f"_{kind}" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for key in ("__salt__", "__opts__", "__pillar__", "__grains__"):
        setattr(mod, key, dunders.get(key.strip("_"), {}))
    return mod


def recorded(name: str) -> requests.Response:
    """A requests.Response rebuilt from a response recorded from the lab's real Patroni."""
    rec = json.loads((FIXTURES / "patroni" / f"{name}.json").read_text())
    resp = requests.Response()
    resp.status_code = rec["status"]
    resp._content = rec["body"].encode()
    resp.url = "http://198.18.0.11:8008" + rec["path"]
    resp.request = requests.Request(rec["method"], resp.url).prepare()
    return resp
