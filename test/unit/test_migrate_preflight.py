"""What stands in the way of a migration (pgcluster_migrate util), judged from a survey recorded
from a real PostgreSQL 15 (test/functional/test_pgsql_survey.py's legacy-like server: database
shop with pg_trgm, a table without key, an unlogged table, a large object; wal_level=replica)."""

from __future__ import annotations

import copy
import json

import pytest
from pgctest import FIXTURES, load_module

SURVEY = json.loads((FIXTURES / "pgsql" / "survey_legacy.json").read_text())
GB = 1024**3
mig = load_module("utils", "pgcluster_migrate")


def target(**changes) -> dict:
    """An empty cluster on PostgreSQL 15 whose members have contrib, C.UTF-8 and 20 GB free."""
    facts = {"major": 15, "extensions": {"pg_trgm", "hstore", "plpgsql"}, "locales": {"C", "C.utf8", "POSIX"},
             "free": {"pg1": 20 * GB, "pg2": 20 * GB, "pg3": 20 * GB},
             "user_tables": {"postgres": 0, "app": 0}}  # fmt: skip
    facts.update(changes)
    return facts


def problems(migrate: dict, survey: dict | None = None, **changes) -> list[str]:
    return mig.problems("main", {"source": "legacy", **migrate}, survey or SURVEY, target(**changes))


def test_a_physical_migration_of_the_legacy_server_into_an_empty_cluster_is_clear():
    assert problems({"mode": "physical"}) == []


def test_a_logical_migration_names_every_table_and_setting_in_the_way():
    assert problems({"mode": "logical", "databases": ["shop"]}) == [
        "legacy has wal_level=replica: logical replication needs wal_level=logical (a restart of the source)",
        "database shop: table public.events has no primary key or replica identity: logical replication cannot "
        "carry its UPDATE and DELETE (add a key or REPLICA IDENTITY FULL)",
        "database shop: unlogged table public.scratch is not replicated (make it logged or leave it)",
        "database shop has 1 large objects: logical replication does not carry them (use mode physical)",
    ]


def test_a_cluster_holding_data_other_versions_and_unknown_databases_are_refused():
    found = problems({"mode": "physical"}, major=16, user_tables={"app": 3})
    assert found == [
        "legacy runs PostgreSQL 15, main runs 16: a physical migration needs the same major version (use mode logical)",
        "main already holds user data (app (3 tables)): a physical migration replaces every member's data; migrate "
        "into an empty cluster or use mode logical",
    ]
    assert problems({"mode": "logical", "databases": ["nope"]})[0] == (
        "database nope does not exist on legacy (it has: postgres, shop)"
    )


def test_missing_extensions_locales_and_disk_are_named_per_member():
    survey = copy.deepcopy(SURVEY)
    survey["databases"]["shop"]["collate"] = "de_DE.UTF-8"
    found = problems({"mode": "physical"}, survey, extensions={"plpgsql"}, free={"pg1": 20 * GB, "pg2": 10**6})
    assert "database shop uses extension pg_trgm, which main's members do not have (install its package there)" in found
    assert "database shop has LC_COLLATE de_DE.UTF-8, a locale main's members lack" in found
    assert "pg2: 0.0 GB free for data, the migration needs 0.0 GB (0.0 GB and 20 %)" in found
    assert not [f for f in found if f.startswith("pg1:")]


@pytest.mark.parametrize("mode", [None, "copy"])
def test_a_mode_that_is_no_mode_is_named(mode):
    assert f"mode {mode!r}: must be physical or logical" in problems({"mode": mode})


def with_roles(survey: dict, **facts) -> dict:
    return {**copy.deepcopy(survey), **facts}


def test_application_roles_must_be_declared_with_the_sources_own_verifier():
    survey = with_roles(SURVEY, role_digests={"shop": "ab" * 32, "reports": "cd" * 32, "batch": ""})
    found = problems({"mode": "logical", "databases": ["shop"]}, survey, role_digests={"shop": "ff" * 32})
    roles = [p for p in found if p.startswith("role ")]
    assert roles == [
        "role batch has no password on legacy: it cannot log in through PgBouncer (give it one there, or make it "
        "NOLOGIN)",
        "role reports is not declared in pgcluster:clusters:main:roles: it could not log in through PgBouncer "
        "(declare it with verifier: its rolpassword in legacy's pg_authid)",
        "role shop: the verifier pgcluster:clusters:main:roles:shop declares is not legacy's (PgBouncer logs in "
        "with the very same one on both sides: declare verifier: its rolpassword in legacy's pg_authid)",
    ]
    declared = problems({"mode": "physical"}, with_roles(SURVEY, role_digests={"shop": "ab" * 32}),
                        role_digests={"shop": "ab" * 32})  # fmt: skip
    assert declared == []


@pytest.mark.parametrize(
    "ssl, cert, refused",
    [(False, "", False), (True, "/etc/ssl/certs/ssl-cert-snakeoil.pem", False),
     (True, "/etc/postgresql/15/main/pgcluster-migrate.crt", False), (True, "/etc/ssl/private/db.example.crt", True)],
)  # fmt: skip
def test_pgbouncer_must_be_able_to_check_the_sources_certificate(ssl, cert, refused):
    survey = with_roles(SURVEY, ssl=ssl, ssl_cert_file=cert)
    found = [p for p in problems({"mode": "logical", "databases": ["shop"]}, survey) if "certificate" in p]
    assert bool(found) is refused
    if refused:
        assert found[0].startswith("legacy presents its own certificate (/etc/ssl/private/db.example.crt)")


def test_a_physical_migration_names_the_settings_a_standby_of_the_source_needs():
    survey = {**SURVEY, "standby_settings": {"max_connections": 300, "max_wal_senders": 10},
              "shared_preload_libraries": ["pg_stat_statements"]}  # fmt: skip
    cluster = {"standby_settings": {"max_connections": 100, "max_wal_senders": 10}, "shared_preload_libraries": []}
    assert problems({"mode": "physical"}, survey, **cluster) == [
        "legacy has max_connections=300, main 100: a standby of the source needs at least as much (set it in "
        "pgcluster:clusters:main:parameters)",
        "legacy preloads pg_stat_statements (shared_preload_libraries), main does not: its data may need it (add "
        "it to the cluster's parameters)",
    ]
    even = {"standby_settings": {"max_connections": 300, "max_wal_senders": 12},
            "shared_preload_libraries": ["pg_stat_statements"]}  # fmt: skip
    assert problems({"mode": "physical"}, survey, **even) == []


def test_a_physical_migration_judges_every_database_of_the_source_listed_or_not():
    """The whole instance moves: an extension of a database the block does not list (PgBouncer
    routes only the listed ones) must be available on the members too."""
    found = problems({"mode": "physical", "databases": ["postgres"]}, extensions={"plpgsql"})
    assert "database shop uses extension pg_trgm, which main's members do not have (install its package there)" in found


@pytest.mark.parametrize("mode", ["physical", "logical"])
def test_a_source_with_a_certificate_of_its_own_is_named_in_either_mode(mode):
    survey = with_roles(SURVEY, ssl=True, ssl_cert_file="/etc/ssl/private/db.example.crt")
    found = [p for p in problems({"mode": mode, "databases": ["shop"]}, survey) if "certificate" in p]
    assert found and found[0].startswith("legacy presents its own certificate")
