"""_modules/pgbouncer.py and pgsql.query: SHOW DATABASES read by column name from PgBouncer 1.18's
recorded answer (and from a later layout with columns added), every value from the routing spec."""

from __future__ import annotations

import pytest
from pgctest import FIXTURES, load_module

# Recorded with psql -F $'\x1f'; pgsql.query's own separator is put in their place.
SHOW_1_18 = (FIXTURES / "pgbouncer" / "show_databases_1.18.txt").read_text().replace("\x1f", "\x02")
# PgBouncer 1.19+ adds columns (server_lifetime, load_balance_hosts...) before paused/disabled.
SHOW_LATER = (
    "name\x1fhost\x1fport\x1fdatabase\x1fforce_user\x1fpool_size\x1fmin_pool_size\x1freserve_pool\x1f"
    "server_lifetime\x1fpool_mode\x1fload_balance_hosts\x1fmax_connections\x1fcurrent_connections\x1f"
    "max_client_connections\x1fcurrent_client_connections\x1fpaused\x1fdisabled\n"
    "app\x1f198.18.0.12\x1f5433\x1fapp\x1f\x1f20\x1f0\x1f0\x1f3600\x1f\x1f\x1f0\x1f1\x1f0\x1f1\x1f1\x1f0\n"
).replace("\x1f", "\x02")
SPEC = {"cluster": "main", "port": 5433, "databases": ["app"], "admin_port": 6433,
        "admin_socket_dir": "/run/pgb", "path": "/nonexistent/routing-main.ini"}  # fmt: skip


@pytest.fixture
def pgb():
    ran = []

    def run_all(cmd, stdin=None, timeout=None, env=None, **kwargs):
        ran.append({"cmd": cmd, "sql": stdin, "timeout": timeout, "env": env})
        return {"retcode": 0, "stdout": pgb.answer, "stderr": ""}

    pgsql = load_module("modules", "pgsql", salt={"cmd.run_all": run_all})
    pgb = load_module("modules", "pgbouncer", salt={"pgsql.query": pgsql.query})
    pgb.ran = ran
    return pgb


@pytest.mark.parametrize("answer", [SHOW_1_18, SHOW_LATER], ids=["1.18", "later"])
def test_show_databases_is_read_by_column_name(pgb, answer):
    pgb.answer = answer
    app = next(d for d in pgb.show_databases(spec=SPEC) if d["name"] == "app")
    assert app["host"].startswith("198.18.0.") and app["database"] == "app"
    assert app["paused"] is (answer == SHOW_LATER) and app["disabled"] is False


def test_the_admin_console_is_asked_where_the_spec_says_with_a_timeout(pgb):
    pgb.answer = SHOW_1_18
    pgb.targets("main", spec=SPEC)
    cmd = pgb.ran[-1]["cmd"]
    assert cmd[cmd.index("-p") + 1] == "6433" and cmd[cmd.index("-h") + 1] == "/run/pgb"
    assert cmd[cmd.index("-d") + 1] == "pgbouncer" and pgb.ran[-1]["sql"] == "SHOW DATABASES"
    assert pgb.ran[-1]["timeout"] and pgb.ran[-1]["env"]["PGCONNECT_TIMEOUT"]


def test_a_host_that_serves_no_such_cluster_says_so(pgb):
    pgb.__salt__["pgcluster.settings"] = lambda: {"node": {"routing": {"main": SPEC}}}
    with pytest.raises(pgb.CommandExecutionError, match="this host serves no cluster 'other' \\(it serves: main\\)"):
        pgb.targets("other")


def test_a_trailing_empty_field_survives_the_stripped_output():
    # cmd.run_all strips its output: a row whose last field is empty must keep it.
    pgsql = load_module("modules", "pgsql", salt={"cmd.run_all": lambda cmd, **kw: {
        "retcode": 0, "stdout": ("t" + "\x02" + "\n").strip(), "stderr": ""}})  # fmt: skip
    assert pgsql.query("SELECT rolcanlogin, coalesce(rolpassword, '') FROM pg_authid") == [["t", ""]]


def test_repoint_with_an_older_timeline_is_refused_and_touches_nothing(pgb, tmp_path):
    # The recorded SHOW DATABASES routes app to 198.18.0.12; the file says timeline 8 for it.
    pgb.answer = SHOW_1_18
    spec = {**SPEC, "path": str(tmp_path / "routing-main.ini")}
    routing = pgb.__utils__
    routing["pgcluster_routing.install_route"](spec, "198.18.0.12", 8, "7712164727101477447")
    before = (tmp_path / "routing-main.ini").read_text()
    ret = pgb.repoint("main", "198.18.0.11", timeline=7, system="7712164727101477447", spec=spec)
    assert ret["changed"] is False and "older than the installed one (timeline 8)" in ret["refused"]
    assert (tmp_path / "routing-main.ini").read_text() == before
    assert [r["sql"] for r in pgb.ran] == ["SHOW DATABASES"]  # no RELOAD
    with pytest.raises(pgb.CommandExecutionError, match="timeline 7 is older.*route left as it is"):
        pgb.write_routing("main", "198.18.0.11", 7, spec=spec, system="7712164727101477447")


def show(rows: dict[str, str]) -> str:
    """A SHOW DATABASES answer (PgBouncer 1.18's columns) routing each database to its host."""
    head = SHOW_1_18.splitlines()[0]
    cols = head.split("\x02")
    lines = [head]
    for db, host in rows.items():
        values = {"name": db, "host": host, "port": "5433", "database": db, "paused": "0", "disabled": "0"}
        lines.append("\x02".join(values.get(c, "0") for c in cols))
    return "\n".join(lines) + "\n"


def test_repoint_keeps_a_database_being_migrated_at_its_source_until_it_is_cut_over(pgb, tmp_path):
    spec = {**SPEC, "path": str(tmp_path / "routing-main.ini"), "databases": ["app", "shop"],
            "sources": {"shop": {"address": "198.18.0.40", "port": 5432}}}  # fmt: skip
    # PgBouncer already shows the wanted routes: the repoint verifies them per database.
    pgb.answer = show({"app": "198.18.0.12", "shop": "198.18.0.40"})
    assert pgb.repoint("main", "198.18.0.12", timeline=3, spec=spec)["targets"] == {
        "app": "198.18.0.12", "shop": "198.18.0.40"}  # fmt: skip
    pgb.answer = show({"app": "198.18.0.12", "shop": "198.18.0.12"})
    ret = pgb.repoint("main", "198.18.0.12", timeline=3, spec=spec, cut_over=["shop"])
    assert ret["changed"] is True and ret["targets"] == {"app": "198.18.0.12", "shop": "198.18.0.12"}
    # PgBouncer still sending shop to the source after the RELOAD: the repoint says so.
    pgb.answer = show({"app": "198.18.0.12", "shop": "198.18.0.40"})
    with pytest.raises(pgb.CommandExecutionError, match="still routes to"):
        pgb.repoint("main", "198.18.0.13", timeline=4, spec=spec, timeout=0.2)


def test_a_repoint_that_resumes_uses_its_verifying_show_databases_and_one_session_for_the_resumes(pgb):
    """Inside a switchover's pause every admin session counts: RELOAD and SHOW DATABASES in one,
    then the RESUME of what that SHOW DATABASES says is paused in one more; no second SHOW."""
    pgb.__utils__ = {**pgb.__utils__, "pgcluster_routing.install_route": lambda *a, **k: (True, None),
                     "pgcluster_routing.routed": lambda s: {"cut": []},
                     "pgcluster_routing.destinations": lambda s, leader, cut: {"app": (leader, 5433)}}  # fmt: skip
    pgb.answer = SHOW_LATER  # app routed to 198.18.0.12, paused
    out = pgb.repoint("main", "198.18.0.12", timeline=4, resume_paused=True, spec=SPEC)
    assert [r["sql"] for r in pgb.ran] == ["RELOAD;\nSHOW DATABASES;", "RESUME app;\n"]
    assert out["resumed"] == ["app"] and out["targets"] == {"app": "198.18.0.12"} and out["changed"] is True


def test_a_repoint_resumes_nothing_that_is_not_paused(pgb):
    pgb.__utils__ = {**pgb.__utils__, "pgcluster_routing.install_route": lambda *a, **k: (False, None),
                     "pgcluster_routing.routed": lambda s: {"cut": []},
                     "pgcluster_routing.destinations": lambda s, leader, cut: {"app": (leader, 5433)}}  # fmt: skip
    pgb.answer = SHOW_LATER.replace("\x021\x020\n", "\x020\x020\n")  # app not paused
    out = pgb.repoint("main", "198.18.0.12", resume_paused=True, spec=SPEC)
    assert [r["sql"] for r in pgb.ran] == ["SHOW DATABASES"] and out["resumed"] == []
