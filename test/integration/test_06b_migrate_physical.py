"""A physical migration of the legacy host's whole PostgreSQL into the cluster (``salt-run
migrate.start main confirm=True``): the cluster rebuilt as a Patroni standby cluster of the
source, followed (``status``), aborted (the cluster back as it was, same system), started again,
then cut over under a live writer through app1's PgBouncer (``cutover``: paused, the source
frozen, its last WAL replayed, every table verified, the standby cluster promoted, PgBouncer
repointed, Patroni's roles and the pgBackRest stanza settled). Afterwards the cluster is a normal
pgcluster cluster: highstates, a switchover, backups.

The cluster must hold no user data: this module empties it first. It leaves the cluster holding
the legacy server's data (before test_07_ports, which starts from a fresh lab).
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from labtools import (
    ADDRESS,
    AckWriter,
    changed_states,
    failed_states,
    highstate,
    lab,
    leader,
    local_pillar,
    psql,
    salt_json,
    sh,
    wait_for,
    wait_healthy,
)
from migratetools import (
    SHOP_PASSWORD,
    SOURCE,
    apply_states,
    declare,
    direct_write_refused,
    empty_cluster,
    on_cluster,
    on_legacy,
    run,
    shop_routes,
    thaw_legacy,
    via_pgbouncer,
)

# The copy limited (about 10 s for the lab's source) so that it can be watched and crashed.
PHYSICAL = {"source": "legacy", "mode": "physical", "databases": ["shop"], "copy_max_rate": "4M"}
SYSTEM = "SELECT system_identifier FROM pg_control_system()"
HBA = "cat /etc/postgresql/15/main/pg_hba.conf"
SOURCE_STATE = ("SELECT current_setting('ssl'), (SELECT count(*) FROM pg_replication_slots), "
                "(SELECT count(*) FROM pg_roles WHERE rolname = 'replicator')")  # fmt: skip
CHECKSUM = "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM {} t"
# acks goes on growing on the cluster after the cutover (the writer), verified at the cutover.
TABLES = ("public.customers", "public.orders")


def members_system() -> set[str]:
    return {psql(m, SYSTEM, db="postgres").stdout.strip() for m in ("pg1", "pg2", "pg3")}


@pytest.fixture(scope="module")
def prepared(deployed):
    """The legacy server listening on its address (a restart), the cluster emptied, the physical
    migrate block declared with its highstate (the members admit PgBouncer to shop, PgBouncer
    sends shop to the source, the source's pillar holds the replication verifier)."""
    on_legacy("ALTER SYSTEM RESET ALL; ALTER SYSTEM SET listen_addresses = '*'")
    sh("legacy", "systemctl restart postgresql@15-main")
    on_legacy("DROP TABLE IF EXISTS acks", "shop")
    on_legacy("CREATE TABLE acks (id bigint PRIMARY KEY, at timestamptz DEFAULT now()); ALTER TABLE acks OWNER TO shop",
              "shop")  # fmt: skip
    # A large object: logical replication cannot carry one, the physical copy does.
    on_legacy("SELECT lo_unlink(oid) FROM pg_largeobject_metadata; SELECT lo_from_bytea(0, 'the scanned invoice')",
              "shop")  # fmt: skip
    empty_cluster()
    declare(PHYSICAL)
    apply_states()
    yield
    lab("run", "migrate.abort", "main", check=False)
    declare(None)
    thaw_legacy()
    on_legacy("ALTER SYSTEM RESET ALL")
    sh("legacy", "systemctl restart postgresql@15-main")
    on_legacy("DROP TABLE IF EXISTS acks; SELECT lo_unlink(oid) FROM pg_largeobject_metadata", "shop")


@pytest.fixture(scope="module")
def before(prepared):
    """The cluster's system identifier, the source's pg_hba and migration state before any start."""
    (system,) = members_system()
    return system, sh("legacy", HBA).stdout, on_legacy(SOURCE_STATE)


def test_start_needs_confirm_and_changes_nothing_without_it(before):
    rc, out = run("start")
    assert rc != 0 and "replaces the data of every member of main" in out["error"]
    assert "confirm=True" in out["error"]
    assert members_system() == {before[0]}
    assert (sh("legacy", HBA).stdout, on_legacy(SOURCE_STATE)) == before[1:]


def _copy_from_legacy() -> dict | None:
    """The standby leader's copy of the source as ``migrate.status`` reports it, once bytes flow."""
    rc, st = run("status")
    copy = next((x for x in (st.get("copying") or {}).values() if x["from"] == "legacy"), None) if rc == 0 else None
    return copy if copy and copy["copied_bytes"] > 0 else None


def test_start_makes_the_cluster_a_standby_cluster_of_the_source(before):
    """Started with the copy limited to 4 MB/s: status shows it with an ETA; the source crashes
    in the middle (status says so) and comes back: Patroni copies again, start finishes."""
    started: dict = {}

    def start() -> None:
        started["rc"], started["out"] = run("start", "confirm=True")

    thread = threading.Thread(target=start)
    thread.start()
    try:
        wait_for("status to show the standby leader copying legacy", lambda: _copy_from_legacy() is not None, 180,
                 interval=0.5)  # fmt: skip
        copy = _copy_from_legacy() or {}
        assert 0 < copy["copied_bytes"] < copy["total_bytes"] and copy["phase"] == "streaming database files", copy
        assert 0 < copy["copied_fraction"] < 1 and copy["eta_seconds"] > 0, copy
        sh("legacy", "systemctl kill -s KILL postgresql@15-main")
        rc, st = run("status")
        assert rc != 0 and st["error"].startswith("legacy: "), st
        time.sleep(2)
    finally:
        sh("legacy", "systemctl start postgresql@15-main")
        thread.join(timeout=900)
    rc, out = started["rc"], started["out"]
    assert rc == 0, out
    assert out["mode"] == "physical" and out["standby_leader"] in ("pg1", "pg2", "pg3")
    print(f"physical start: {out['timings']}")
    legacy_system = on_legacy(SYSTEM)
    assert members_system() == {legacy_system} != {before[0]}
    rc, st = run("status")
    assert rc == 0, st
    assert st["streaming"] is True and st["standby_leader"] == out["standby_leader"]
    assert st["lag_bytes"] >= 0 and "lag_seconds" in st, st
    if st["lag_bytes"] == 0:
        assert st["lag_seconds"] == 0, st
    roles = sorted(m["role"] for m in st["members"].values())
    assert roles == ["replica", "replica", "standby_leader"], st["members"]
    assert st["copying"] == {}, st  # every copy done (the source and the standby leader asked)
    # A write on the source reaches every member.
    on_legacy("INSERT INTO acks (id) VALUES (-1)", "shop")
    for m in ("pg1", "pg2", "pg3"):
        deadline = time.monotonic() + 30
        while psql(m, "SELECT count(*) FROM acks WHERE id = -1", db="shop").stdout.strip() != "1":
            assert time.monotonic() < deadline, f"{m} did not replay the source's insert"
            time.sleep(0.5)
    # The source lets in replication from the members' addresses only, over TLS with a password.
    hba = sh("legacy", HBA).stdout
    for m in ("pg1", "pg2", "pg3"):
        assert f'hostssl replication "replicator" {ADDRESS[m]}/32 scram-sha-256' in hba
    refused = sh("app1", f"psql -X 'host={SOURCE} dbname=replication replication=true user=replicator "
                         "sslmode=require connect_timeout=5' -c 'IDENTIFY_SYSTEM'", check=False, stdin="")  # fmt: skip
    assert refused.returncode != 0 and "pg_hba.conf" in refused.stderr
    # PgBouncer still sends shop to the source: clients write there.
    assert set(shop_routes().values()) == {SOURCE}
    assert via_pgbouncer("SELECT inet_server_addr()") == SOURCE


def test_a_second_start_is_refused(before):
    rc, out = run("start", "confirm=True")
    assert rc != 0 and "a migration of main from legacy was started at" in out["error"]


def test_a_highstate_while_the_cluster_follows_the_source_fails_nothing_and_changes_nothing(before):
    """A scheduled highstate during the migration: the states that need a writable leader stand
    aside and say why (PgBouncer's routes kept, pgBackRest's check, the members' dynamic
    configuration and synchronous promise) instead of waiting 300 s each and failing; nothing
    changes; the cluster goes on following the source."""
    t = time.monotonic()
    ret = highstate()
    took = time.monotonic() - t
    assert failed_states(ret) == {m: [] for m in ret}, failed_states(ret)
    assert changed_states(ret) == {m: [] for m in ret}, changed_states(ret)
    aside = {m: sorted(s["__id__"] for s in states.values() if "standby cluster of legacy" in str(s.get("comment")))
             for m, states in ret.items()}  # fmt: skip
    assert aside["app1"] == ["pgbouncer-routes-main-to-leader"], aside
    assert aside["backup"] == ["pgbackrest-stanza-main-archiving-checked"], aside
    member_ids = {s["__id__"] for s in ret["pg1"].values()}
    assert "patroni-cluster-synchronous" not in member_ids and "patroni-dynamic-config-applied" not in member_ids
    assert took < 180, took
    print(f"highstate while migrating: {took:.1f} s")
    rc, st = run("status")
    assert rc == 0 and st["streaming"] is True and st["standby_leader"], st
    assert set(shop_routes().values()) == {SOURCE}


def test_abort_puts_the_cluster_back_as_it_was(before):
    rc, out = run("abort")
    assert rc == 0 and out["aborted"] is True, out
    assert members_system() == {before[0]}
    wait_healthy(2, timeout=120)
    assert psql(leader(), "SELECT txid_current() > 0", db="postgres").stdout.strip() == "t"
    assert (sh("legacy", HBA).stdout, on_legacy(SOURCE_STATE)) == before[1:]
    assert on_legacy("INSERT INTO acks (id) VALUES (-2) RETURNING 1", "shop") == "1"
    assert salt_json("pg1,pg2,pg3", "-L", "grains.get", "pgcluster_migrating") == {"pg1": "", "pg2": "", "pg3": ""}
    rc, out = run("status")
    assert rc != 0 and "no migration of main is started" in out["error"]


def test_cutover_under_a_writer_loses_nothing(before):
    """Started again; a writer inserts through app1's PgBouncer all along the cutover: no failed
    transaction, every acknowledged id on the cluster, every table equal to the source's, the
    cluster promoted (the source's system, a new timeline), PgBouncer sends shop to the leader."""
    declare({k: v for k, v in PHYSICAL.items() if k != "copy_max_rate"})  # this copy at full speed
    rc, out = run("start", "confirm=True")
    assert rc == 0, out
    writer = AckWriter("app1", "host=127.0.0.1 port=6432 dbname=shop user=shop", "acks", password=SHOP_PASSWORD)
    time.sleep(3)
    res = lab("run", "migrate.cutover", "main", "confirm=True", "--out=json", check=False, timeout=900)
    time.sleep(3)
    report = writer.stop()
    out = json.loads(res.stdout)
    assert res.returncode == 0, out
    print(f"physical cutover: {out['timings']}, writer waited at most {report['longest_s']} s")
    assert out["cut_over"] is True and out["databases"]["shop"]["tables"] == 3
    assert report["failed"] == [] and len(report["acked"]) > 20 and not report["stuck"], report["failed"][:5]
    lead = leader()
    assert writer.missing_on(lead, "shop") == []
    assert report["longest_s"] <= out["timings"]["paused_s"] + 1, (report["longest_s"], out["timings"])
    assert members_system() == {on_legacy(SYSTEM)}
    assert set(shop_routes().values()) == {ADDRESS[lead]}
    assert via_pgbouncer("SELECT inet_server_addr()") == ADDRESS[lead]
    for table in TABLES:
        assert on_cluster(CHECKSUM.format(table)) == on_legacy(CHECKSUM.format(table), "shop")
    large = "SELECT convert_from(lo_get(oid), 'UTF8') FROM pg_largeobject_metadata"
    assert on_cluster(large) == on_legacy(large, "shop") == "the scanned invoice"
    refused = sh("legacy", 'su postgres -c "psql -X -d shop -c \\"INSERT INTO acks (id) VALUES (0)\\""', check=False)
    assert refused.returncode != 0 and "read-only transaction" in refused.stderr
    assert "pg_hba.conf rejects connection" in direct_write_refused("INSERT INTO acks (id) VALUES (0)")
    # Settled: the source holds nothing of the migration, the members no grain, Patroni's roles
    # are pillar's, pgBackRest follows the new system with a full backup of it.
    assert on_legacy("SELECT count(*) FROM pg_replication_slots") == "0"
    assert "pgcluster migrate" not in sh("legacy", HBA).stdout
    assert out["settled"]["roles"]["rewind_user"] == "created"
    info = salt_json("backup", "pgbackrest.info", "main")["backup"]
    assert info["backups"][-1]["label"] == out["settled"]["backup"], info
    wait_healthy(2, timeout=60)
    assert run("status")[0] != 0


def test_afterwards_the_cluster_is_a_normal_cluster(before):
    """shop moved to the cluster's databases and the migrate block dropped: a highstate applies,
    a second changes nothing, pgBackRest's check passes, a switchover moves PgBouncer along."""
    verifier = on_legacy("SELECT rolpassword FROM pg_authid WHERE rolname = 'shop'")
    local_pillar(
        {"clusters": {"main": {"roles": {"shop": {"verifier": verifier}}, "databases": {"shop": {"owner": "shop"}}}}}
    )
    ret = highstate()
    assert failed_states(ret) == {m: [] for m in ret}, failed_states(ret)
    again = highstate()
    assert changed_states(again) == {m: [] for m in again}, changed_states(again)
    assert salt_json("backup", "pgbackrest.check", "main")["backup"] is True
    old = leader()
    res = lab("run", "pgcluster.switchover", "main", "--out=json", check=False, timeout=300)
    assert res.returncode == 0, res.stdout
    new = leader()
    assert new != old
    assert via_pgbouncer("INSERT INTO acks (id) VALUES (-3) RETURNING inet_server_addr()") == ADDRESS[new]
