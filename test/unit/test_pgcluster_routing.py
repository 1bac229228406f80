"""The one leader finder and the routing file (the pgcluster_routing util), against responses
recorded from the lab's real Patroni 4.1.5, replayed by local HTTP servers."""

from __future__ import annotations

import socket
import time

from pgctest import load_module, patroni_replay

routing = load_module("utils", "pgcluster_routing")
LEADER = {"/cluster": "cluster", "/primary": "primary_on_leader"}  # pg2 leads in the recording
REPLICA = {"/cluster": "cluster", "/primary": "primary_on_replica"}


def test_the_leader_is_the_one_patroni_names_and_that_accepts_writes():
    with patroni_replay({"pg1": REPLICA, "pg2": LEADER, "pg3": REPLICA}) as apis:
        found = routing.find_leader(apis)
    assert found == {"name": "pg2", "api": apis["pg2"], "timeline": 1, "system": "7712164727101477447",
                     "replicas": ["pg1", "pg3"]}  # fmt: skip


def test_only_streaming_replicas_close_behind_serve_reads():
    member = {"role": "replica", "state": "streaming", "lag": 0}
    view = {"members": [{**member, "name": "pg1"}, {"name": "pg2", "role": "leader", "state": "running"},
                        {**member, "name": "pg3", "lag": routing.REPLICA_MAX_LAG + 1},
                        {**member, "name": "pg4", "state": "starting", "lag": None},
                        {**member, "name": "pg5", "role": "quorum_standby", "lag": 100}]}  # fmt: skip
    assert routing.readable(view) == ["pg1", "pg5"]


def test_a_leader_whose_postgresql_still_promotes_is_not_the_leader_yet():
    # Recorded during a switchover: /primary was 200 (Patroni held the lock), PostgreSQL in recovery.
    promoting = {"/cluster": "cluster", "/primary": "primary_while_promoting"}
    with patroni_replay({"pg1": REPLICA, "pg2": promoting, "pg3": REPLICA}) as apis:
        assert routing.find_leader(apis) is None


def test_members_that_do_not_answer_cost_one_timeout_not_one_each():
    with patroni_replay({"pg1": None, "pg2": LEADER, "pg3": None}) as apis:
        assert routing.find_leader(apis, timeout=1)["name"] == "pg2"
    with patroni_replay({"pg1": None, "pg2": None, "pg3": None}) as apis:
        start = time.monotonic()
        assert routing.find_leader(apis, timeout=1) is None
        assert time.monotonic() - start < 1.5


def test_a_crashed_member_costs_nothing_once_a_majority_names_the_leader():
    """A crashed host accepts no connection and answers nothing: the two members that answer name
    pg2, and pg2 accepts writes, so the lookup does not wait out the third one's timeout."""
    with patroni_replay({"pg1": None, "pg2": LEADER, "pg3": REPLICA}) as apis:
        silent = socket.socket()  # connects (the backlog), never answers: a hung member
        silent.bind((patroni_replay.hosts["pg1"], patroni_replay.port))
        silent.listen(8)
        try:
            start = time.monotonic()
            found = routing.find_leader(apis, timeout=3)
            took = time.monotonic() - start
        finally:
            silent.close()
    assert found["name"] == "pg2" and found["replicas"] == ["pg1", "pg3"], found
    assert took < 1.5, f"waited {took:.1f} s for the silent member"


def _members(leader: str) -> dict:
    return {"members": [{"name": m, "role": "leader" if m == leader else "replica", "state": "streaming", "lag": 0}
                        for m in ("pg1", "pg2", "pg3")]}  # fmt: skip


def fake_patroni(monkeypatch, views: dict, writable: set, slow: dict) -> dict:
    """get_json answering as Patroni would: VIEWS {member: the leader its /cluster names},
    WRITABLE the members whose /primary says primary, SLOW {member: seconds before it answers}."""

    def get_json(url, timeout, context=None):
        member, path = url.split("/", 3)[2], "/" + url.split("/", 3)[3]
        time.sleep(slow.get(member, 0))
        if path == "/cluster":
            return 200, _members(views[member])
        return (200, {"role": "primary", "timeline": 5}) if member in writable else (503, {"role": "replica"})

    monkeypatch.setattr(routing, "get_json", get_json)
    return {m: f"https://{m}" for m in ("pg1", "pg2", "pg3")}


def test_a_slow_member_believing_it_leads_does_not_outvote_the_majority(monkeypatch):
    apis = fake_patroni(monkeypatch, {"pg1": "pg1", "pg2": "pg2", "pg3": "pg2"}, {"pg1", "pg2"}, {"pg1": 1.0})
    start = time.monotonic()
    assert routing.find_leader(apis)["name"] == "pg2"
    assert time.monotonic() - start < 0.8


def test_views_that_disagree_wait_for_every_member_and_two_writable_leaders_give_none(monkeypatch):
    apis = fake_patroni(monkeypatch, {"pg1": "pg2", "pg2": "pg2", "pg3": "pg3"}, {"pg2"}, {"pg1": 0.5})
    start = time.monotonic()
    assert routing.find_leader(apis)["name"] == "pg2"  # pg3 is named too, but is no primary
    assert time.monotonic() - start >= 0.5
    apis = fake_patroni(monkeypatch, {"pg1": "pg1", "pg2": "pg2", "pg3": "pg3"}, {"pg1", "pg2"}, {})
    assert routing.find_leader(apis) is None


def test_a_member_named_leader_by_nobody_is_not_asked():
    with patroni_replay({"pg1": REPLICA, "pg2": {"/cluster": "cluster"}, "pg3": REPLICA}) as apis:
        # pg2 is named leader but its /primary does not answer (404 here): no leader.
        assert routing.find_leader(apis) is None


def test_the_routing_file_carries_the_leader_and_its_timeline(tmp_path):
    spec = {
        "cluster": "main",
        "port": 5433,
        "databases": ["app", "billing"],
        "path": str(tmp_path / "routing-main.ini"),
    }
    text = routing.routing_text(spec, "198.18.0.12", 7)
    assert "app = host=198.18.0.12 port=5433 dbname=app" in text and "billing = host=198.18.0.12" in text
    assert routing.write_routing(spec, text) is True and routing.write_routing(spec, text) is False
    assert routing.routed_timeline(spec) == 7
    assert (tmp_path / "routing-main.ini").stat().st_mode & 0o777 == 0o644


def test_no_leader_routes_nowhere_never_to_a_former_leader():
    spec = {"cluster": "main", "port": 5432, "databases": ["app"], "path": "/nonexistent"}
    assert "app = host=127.0.0.1 port=1 dbname=app" in routing.routing_text(spec, None)


def test_read_only_entries_go_to_the_replicas_else_to_the_leader():
    spec = {"cluster": "main", "port": 5432, "databases": ["app"], "path": "/nonexistent"}
    text = routing.routing_text(spec, "198.18.0.12", 3, replicas=["198.18.0.13", "198.18.0.11"])
    assert "app_ro = host=198.18.0.11 port=5432 dbname=app" in text
    assert "app_ro = host=198.18.0.12 port=5432 dbname=app" in routing.routing_text(spec, "198.18.0.12", 3)
    assert "_ro" not in routing.routing_text(spec, None)  # no leader: no reads either


SYSTEM = "7712164727101477447"


def spec_in(tmp_path) -> dict:
    return {"cluster": "main", "port": 5432, "databases": ["app"], "path": str(tmp_path / "routing-main.ini")}


def test_the_header_says_leader_timeline_and_system_and_reads_back(tmp_path):
    spec = spec_in(tmp_path)
    assert routing.routed(spec) is None
    assert routing.install_route(spec, "198.18.0.12", 7, SYSTEM) == (True, None)
    assert routing.routed(spec) == {"leader": "198.18.0.12", "timeline": 7, "system": SYSTEM, "cut": []}
    routing.install_route(spec, None)
    assert routing.routed(spec) == {"leader": None, "timeline": None, "system": None, "cut": []}


def test_a_header_written_before_the_system_was_recorded_still_reads(tmp_path):
    spec = spec_in(tmp_path)
    (tmp_path / "routing-main.ini").write_text(
        "; Managed by Salt (pgcluster): routing of cluster main; leader 198.18.0.12; timeline 7.\n[databases]\n"
    )
    assert routing.routed(spec) == {"leader": "198.18.0.12", "timeline": 7, "system": None, "cut": []}
    assert routing.install_route(spec, "198.18.0.11", 6, SYSTEM)[1] is not None  # older: refused


def test_the_fence_refuses_an_older_timeline_and_keeps_the_route(tmp_path):
    spec = spec_in(tmp_path)
    routing.install_route(spec, "198.18.0.12", 8, SYSTEM)
    before = (tmp_path / "routing-main.ini").read_text()
    changed, why = routing.install_route(spec, "198.18.0.11", 7, SYSTEM)
    assert not changed and why == "route for timeline 7 is older than the installed one (timeline 8)"
    assert (tmp_path / "routing-main.ini").read_text() == before


def test_the_same_timeline_is_idempotent_and_cannot_name_another_leader(tmp_path):
    spec = spec_in(tmp_path)
    assert routing.install_route(spec, "198.18.0.12", 8, SYSTEM) == (True, None)
    assert routing.install_route(spec, "198.18.0.12", 8, SYSTEM) == (False, None)
    changed, why = routing.install_route(spec, "198.18.0.11", 8, SYSTEM)
    assert not changed and "already routes to 198.18.0.12" in why
    # Nowhere (the leader died, no new one yet) is allowed on the same timeline; then the leader.
    assert routing.install_route(spec, None, 8, SYSTEM) == (True, None)
    assert routing.install_route(spec, "198.18.0.13", 9, SYSTEM) == (True, None)


def test_a_newer_timeline_another_system_or_an_operators_route_pass(tmp_path):
    spec = spec_in(tmp_path)
    routing.install_route(spec, "198.18.0.12", 8, SYSTEM)
    assert routing.install_route(spec, "198.18.0.11", 9, SYSTEM) == (True, None)
    # A cluster built anew (another database system) starts again at timeline 1.
    assert routing.install_route(spec, "198.18.0.13", 1, "7000000000000000001") == (True, None)
    # No timeline: an operator's or a restore's route.
    assert routing.install_route(spec, "198.18.0.12") == (True, None)


def test_no_leader_at_start_routes_nowhere_whatever_was_installed(tmp_path):
    spec = {**spec_in(tmp_path), "members": {"pg1": {"api": "https://127.0.0.1:1", "address": "198.18.0.11"}}}
    routing.install_route(spec, "198.18.0.12", 8, SYSTEM)
    assert routing.route_to_leader(spec, timeout=0.5) is None
    assert "app = host=127.0.0.1 port=1 dbname=app" in (tmp_path / "routing-main.ini").read_text()


def test_the_fence_holds_whatever_type_the_command_line_gave(tmp_path):
    # salt app1 pgbouncer.repoint main ADDR timeline=7 system=7712...: YAML makes both ints.
    spec = spec_in(tmp_path)
    routing.install_route(spec, "198.18.0.12", 8, SYSTEM)
    assert routing.install_route(spec, "198.18.0.11", "7", int(SYSTEM))[1].startswith("route for timeline 7 is older")


def migrating(tmp_path) -> dict:
    """app served by the cluster, shop and stock being migrated in from the legacy host."""
    source = {"address": "198.18.0.40", "port": 5432}
    return dict(spec_in(tmp_path), databases=["app", "shop", "stock"], sources={"shop": source, "stock": source})


def test_a_database_being_migrated_goes_to_its_source_until_cut_over(tmp_path):
    spec = migrating(tmp_path)
    text = routing.routing_text(spec, "198.18.0.12", 3, replicas=["198.18.0.11"])
    assert "app = host=198.18.0.12 port=5432 dbname=app" in text
    assert "shop = host=198.18.0.40 port=5432 dbname=shop" in text and "shop_ro" not in text
    assert "; cut over none." in text.splitlines()[0]
    # The source serves its databases whatever the cluster does: no leader sends only app nowhere.
    assert routing.destinations(spec, None)["shop"] == ("198.18.0.40", 5432)
    assert routing.destinations(spec, None)["app"] == routing.NOWHERE


def test_a_cutover_is_kept_by_every_later_route(tmp_path):
    spec = migrating(tmp_path)
    routing.install_route(spec, "198.18.0.12", 3, SYSTEM)
    assert routing.install_route(spec, "198.18.0.12", 3, SYSTEM, cut_over=["shop"]) == (True, None)
    assert routing.routed(spec)["cut"] == ["shop"]
    # A reconcile, a failover, the start-up hook: none of them passes cut_over, shop stays cut over.
    routing.install_route(spec, "198.18.0.13", 4, SYSTEM)
    routing.install_route(spec, None)
    routing.install_route(spec, "198.18.0.11", 5, SYSTEM)
    text = (tmp_path / "routing-main.ini").read_text()
    assert "shop = host=198.18.0.11 port=5432" in text and "stock = host=198.18.0.40" in text
    assert routing.routed(spec)["cut"] == ["shop"]


def test_the_cutover_mark_goes_with_the_migrate_block(tmp_path):
    spec = migrating(tmp_path)
    routing.install_route(spec, "198.18.0.12", 3, SYSTEM, cut_over=["shop", "stock"])
    # The operator moves the databases to the cluster's own and removes the migrate block.
    done = dict(spec, sources={})
    assert routing.install_route(done, "198.18.0.12", 3, SYSTEM) == (True, None)
    assert "cut over" not in (tmp_path / "routing-main.ini").read_text()
    assert routing.routed(done)["cut"] == []


def test_a_standby_cluster_has_a_standby_leader_and_no_leader():
    """Recorded while a physical migration ran the cluster as a standby cluster of the source:
    no member accepts writes, pg1 is its standby leader."""
    standby = {"/cluster": "cluster_standby", "/primary": "primary_on_standby_leader"}
    with patroni_replay({"pg1": standby, "pg2": None, "pg3": None}) as apis:
        assert routing.find_leader(apis, timeout=1) is None
        assert routing.standby_leader(apis, timeout=1) == "pg1"
    with patroni_replay({"pg1": REPLICA, "pg2": LEADER, "pg3": REPLICA}) as apis:
        assert routing.standby_leader(apis) is None
