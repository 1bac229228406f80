"""Salt extension manners: a CLI example for every public function, __virtual__ saying what is
missing, Salt's file helpers in execution modules, no builtin shadowed."""

from __future__ import annotations

import ast

import pytest
from pgctest import REPO, load_module

SOURCES = sorted([*(REPO / "_modules").glob("*.py"), *(REPO / "_runners").glob("*.py")])


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_public_function_has_a_cli_example(path):
    tree = ast.parse(path.read_text())
    missing = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")
               and "CLI Example:" not in (ast.get_docstring(n) or "")]  # fmt: skip
    assert missing == []


@pytest.mark.parametrize("path", sorted((REPO / "_modules").glob("*.py")), ids=lambda p: p.name)
def test_execution_modules_open_files_through_salt(path):
    calls = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)]
    assert not [c.lineno for c in calls if isinstance(c.func, ast.Name) and c.func.id == "open"]


@pytest.mark.parametrize(
    "kind, name, dunders, reason",
    [
        ("modules", "patroni", {"utils": {}}, "patroni: the pgcluster_routing util is missing"),
        ("modules", "pgbouncer", {"utils": {}}, "pgbouncer: the pgcluster_routing util is missing"),
        ("modules", "pgcluster", {"utils": {}}, "pgcluster: the pgcluster_model util is missing"),
        ("states", "pgbackrest", {}, "pgbackrest states: the pgbackrest execution module is not available"),
        ("states", "patroni", {}, "the patroni execution module is not available"),
        ("states", "pgcluster", {}, "pgcluster states: execution modules missing: pgcluster.settings"),
    ],
)
def test_virtual_says_what_is_missing(kind, name, dunders, reason):
    verdict = load_module(kind, name, **dunders).__virtual__()
    assert verdict[0] is False and verdict[1].startswith(reason)


def test_pgbackrest_module_needs_the_binary(monkeypatch):
    mod = load_module("modules", "pgbackrest")
    monkeypatch.setattr(mod, "BIN", "/nonexistent/pgbackrest")
    assert mod.__virtual__() == (False, "pgbackrest: /nonexistent/pgbackrest is not installed (Debian: pgbackrest)")


def test_pgsql_module_needs_psql(monkeypatch):
    mod = load_module("modules", "pgsql")
    monkeypatch.setattr(mod.shutil, "which", lambda cmd: None)
    assert mod.__virtual__() == (False, "pgsql: psql is not installed (Debian: postgresql-client)")
