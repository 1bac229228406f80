"""The physical mode of ``salt-run migrate.*``: the cluster becomes a Patroni standby cluster of
the source (its members rebuilt from it: the standby leader by pg_basebackup from the source, the
others from the standby leader) and is promoted at the cutover.

The runner hands each function ``ops``: ``ops.call(minion, fun, *args, wait=, **kwarg)`` (one
job, its return, CommandExecutionError when it fails), ``ops.save(record)`` (the record of the
started migration on the master, which ``abort`` and a resumed cutover read) and
``ops.model(name)`` (a function of the pgcluster_model util), ``ops.each(minions, fun, *args,
wait=, **kwarg)`` (one job on several minions: {minion: return}). The members learn
that they follow the source from their ``pgcluster_migrating`` grain ({cluster: source}), which
``pgcluster_model.derive`` turns into the standby bootstrap of Patroni's config.yml; their data
directories before the migration stay beside (``ASIDE``) until the cutover, so that ``abort``
puts the cluster back as it was, same system, same pgBackRest stanza.
"""

from __future__ import annotations

import time
from typing import Any

from salt.exceptions import CommandExecutionError

__virtualname__ = "pgcluster_physical"
GRAIN = "pgcluster_migrating"
ASIDE = ".pgcluster-before-migrate"
# How long the standby leader may take to copy the source; a replica to copy the standby leader.
CLONE_WAIT = 3600
# How long Patroni may take to become the standby leader, a replica to stream, a leader to take writes.
ROLE_WAIT = 120


def __virtual__():
    return __virtualname__


class PhysicalError(CommandExecutionError):
    """A step of the physical migration failed; the message says which and what to do."""


def source_open_args(ops: Any, model: dict, c: dict, m: dict, databases: list) -> tuple[list, dict]:
    """The arguments of ``pgmigrate.physical_open`` on the source for cluster C (migrate block M)."""
    pki = ops.model("pki_files")(model)
    members = {x: model["hosts"][x] for x in c["members"]}
    routers = {x: model["hosts"][x] for x in c.get("pgbouncer", [])}
    slot = ops.model("physical_source")(model, c)["slot"]
    args = [c["name"], members, model["patroni"]["replication_user"], slot, pki["cert"], pki["key"]]
    return args, {"port": m["port"], "routers": routers, "databases": databases}


# The states that render Patroni's config.yml (and install the clone method it may name), applied
# alone: the rest of pgcluster.patroni.config (packages, PKI) is the highstate's.
CONFIG_SLS = "pgcluster.patroni.config"
CONFIG_STATES = ("patroni-clone-source-installed", "patroni-config-managed")


def _configured(ops: Any, minions: list) -> None:
    """``CONFIG_STATES`` of ``CONFIG_SLS`` applied on MINIONS at once (``state.sls_id``, with
    their requisites); PhysicalError naming the first state that failed."""
    for state in CONFIG_STATES:
        for minion, ret in ops.each(minions, "state.sls_id", state, CONFIG_SLS, wait=300).items():
            if not isinstance(ret, dict):
                raise PhysicalError(f"{minion}: state.sls_id {state} {CONFIG_SLS}: {ret}")
            failed = [f"{v.get('__id__', k)}: {v.get('comment')}" for k, v in ret.items()
                      if isinstance(v, dict) and v.get("result") is False]  # fmt: skip
            if failed:
                raise PhysicalError(f"{minion}: {CONFIG_SLS} failed: {failed[0]}")


def _having(ops: Any, minions: list, path: str) -> list:
    """The MINIONS where directory PATH is (one job; ``file.directory_exists`` answers False,
    which the master's call takes for a failure)."""
    found = ops.each(minions, "file.find", path, maxdepth=0, type="d", wait=30)
    return [m for m in minions if found.get(m)]


def _remove(ops: Any, minions: list, path: str) -> None:
    """Directory PATH removed on MINIONS where it is."""
    ops.each(_having(ops, minions, path), "file.remove", path, wait=300)


def _configure(ops: Any, model: dict, c: dict, leader: str) -> None:
    """The dynamic configuration pillar wants (the profile's promise) PATCHed in through LEADER;
    just started on an empty DCS, Patroni writes its own meanwhile (a conflict: tried again)."""
    wanted = ops.model("dynamic_config")(model, c["name"])

    def patched():
        try:
            return ops.call(leader, "patroni.config_patch", wanted, wait=60) or True
        except CommandExecutionError:
            return False

    _wait(f"the dynamic configuration of {c['name']} applied through {leader}", patched, 60)


def _healthy(ops: Any, c: dict, leader: str) -> None:
    """Until every other member of C streams from LEADER, as many synchronous as the profile wants."""
    count, sync = len(c["members"]) - 1, c.get("sync_standbys", 0)
    ops.call(leader, "patroni.wait_healthy", count, sync_standbys=sync, timeout=ROLE_WAIT, wait=ROLE_WAIT + 60)


def node(ops: Any, member: str) -> dict:
    """GET /patroni of MEMBER ({} when it does not answer)."""
    try:
        return ops.call(member, "patroni.node", wait=30) or {}
    except CommandExecutionError:
        return {}


def _wait(what: str, probe, timeout: float, interval: float = 1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise PhysicalError(f"{what} not within {timeout:.0f} s")
        time.sleep(interval)


def _runs_as(ops: Any, member: str, role: str) -> bool:
    """Whether MEMBER's PostgreSQL runs in ROLE (one GET /patroni)."""
    n = node(ops, member)
    return n.get("role") == role and n.get("state") in ("running", "streaming")


def replicating(ops: Any, member: str) -> bool:
    """Whether MEMBER runs as a replica (of the standby leader, or of the leader)."""
    return _runs_as(ops, member, "replica")


def standby_leader(ops: Any, c: dict) -> str | None:
    """The member that leads CLUSTER as a standby cluster of the source, None when none does."""
    for m in c["members"]:
        if node(ops, m).get("role") == "standby_leader":
            return m
    return None


def start(ops: Any, model: dict, c: dict, rec: dict, leader: str) -> dict:
    """Rebuild cluster C as a standby cluster of the source recorded in REC (the source is open
    already): Patroni stopped everywhere, the DCS emptied, each data directory moved aside, the
    grain set, config.yml rendered anew, the former LEADER started first (it clones the source),
    then the others (they clone it). Records each step done in REC. Returns the timings."""
    name, scope, source = c["name"], c["scope"], rec["source"]
    data = ops.model("data_dir")(model, name)
    spool = f"{model['pgbackrest']['spool_path']}/archive/{scope}"
    others = [x for x in c["members"] if x != leader]
    timings: dict[str, float] = {}
    t = time.monotonic()
    ops.each(others, "patroni.stop", wait=180)  # the replicas first: none of them takes over
    ops.call(leader, "patroni.stop", wait=180)
    ops.call(leader, "patroni.remove_cluster", scope)
    fresh = [x for x in c["members"] if x not in rec["aside"]]  # a start run again moves nothing twice
    ops.each(_having(ops, fresh, data), "file.rename", data, data + ASIDE, wait=60)
    rec["aside"].update({x: data + ASIDE for x in c["members"]})
    ops.save(rec)
    # archive-push's status files of the old system: a name the new system reuses (a timeline's
    # history file) would count as pushed already.
    _remove(ops, c["members"], spool)
    ops.each(c["members"], "grains.setval", GRAIN, {name: source}, wait=30)
    _configured(ops, c["members"])
    timings["stopped_s"] = round(time.monotonic() - t, 1)
    t = time.monotonic()
    ops.call(leader, "service.start", "patroni")
    _wait(f"{leader} streaming from {source} as the standby leader", lambda: _runs_as(ops, leader, "standby_leader"),
          CLONE_WAIT)  # fmt: skip
    timings["standby_leader_s"] = round(time.monotonic() - t, 1)
    t = time.monotonic()
    ops.each(others, "service.start", "patroni", wait=60)
    for x in others:
        _wait(f"{x} streaming from the standby leader {leader}", lambda x=x: replicating(ops, x), CLONE_WAIT)
    timings["replicas_s"] = round(time.monotonic() - t, 1)
    return timings


def replayed(ops: Any, member: str, port: int) -> tuple[str, float | None]:
    """MEMBER's last replayed WAL position, and how many seconds ago the commit it replayed last
    was made on the source (None: none replayed yet)."""
    rows = ops.call(member, "pgsql.query", "SELECT pg_last_wal_replay_lsn(), "
                    "extract(epoch FROM now() - pg_last_xact_replay_timestamp())", port=port, wait=30)  # fmt: skip
    return rows[0][0], float(rows[0][1]) if len(rows[0]) > 1 and rows[0][1] else None


def promote(ops: Any, model: dict, c: dict, member: str, find_leader) -> dict:
    """End the standby cluster (PATCH /config standby_cluster null through MEMBER, its standby
    leader) and wait until it takes writes; returns ``find_leader``'s answer."""
    ops.call(member, "patroni.config_patch", {"standby_cluster": None}, wait=60)

    def promoted():
        found = find_leader() or {}
        return found if found.get("name") == member else None

    return _wait(f"{member} taking writes after the promotion", promoted, ROLE_WAIT, interval=0.1)


def settle(ops: Any, model: dict, c: dict, leader: str, rec: dict) -> dict:
    """After the promotion: Patroni's roles as pillar declares them (the catalog is the source's),
    the grain gone and config.yml rendered and reloaded on every member (no standby bootstrap,
    pgBackRest again), the dynamic configuration as pillar wants it, the pgBackRest stanza moved
    to the new system and a full backup of it, the data directories kept aside removed. Each step
    idempotent (a cutover run again repeats them; the backup, once taken, is recorded in REC and
    not taken again). Returns what each did."""
    name, scope, repo = c["name"], c["scope"], c["backup"]
    done: dict[str, Any] = {}
    done["roles"] = ops.call(leader, "pgmigrate.patroni_roles", name, port=c["port"], wait=60)
    ops.each(c["members"], "grains.delkey", GRAIN, force=True, wait=30)
    _configured(ops, c["members"])
    ops.each(c["members"], "patroni.reload", wait=60)
    _configure(ops, model, c, leader)

    def upgraded():
        try:
            return ops.call(repo, "pgbackrest.stanza_upgrade", scope, wait=360)
        except CommandExecutionError as exc:
            if "[050]" in str(exc):  # another pgBackRest command holds the stanza's lock: again
                return None
            raise

    said = _wait("pgbackrest stanza-upgrade (another pgBackRest command held the stanza's lock)", upgraded, 300,
                 interval=2)  # fmt: skip
    lines = [line.split("INFO: ", 1)[-1] for line in said.splitlines()]
    done["stanza"] = next((x for x in lines if "up to date" in x), None) or next(
        (x for x in lines if "stanza-upgrade for" in x), said[-200:])  # fmt: skip
    ops.call(repo, "pgbackrest.check", scope, wait=360)
    if not rec.get("backup"):
        rec["backup"] = ops.call(repo, "pgbackrest.backup", scope, kind="full", wait=7300)["label"]
        ops.save(rec)
    done["backup"] = rec["backup"]
    data = ops.model("data_dir")(model, name)
    _healthy(ops, c, leader)
    _remove(ops, c["members"], data + ASIDE)
    return done


def abort(ops: Any, model: dict, c: dict, rec: dict) -> dict:
    """Put cluster C back as it was before ``start``: Patroni stopped, the DCS emptied, each
    member's data directory from before the migration back in place, the grain gone, config.yml
    rendered anew, the former leader started first (it takes the lead of its own data), then the
    others; the dynamic configuration as pillar wants it."""
    name, scope = c["name"], c["scope"]
    data = ops.model("data_dir")(model, name)
    leader = rec["leader"]
    others = [x for x in c["members"] if x != leader]
    ops.each(others, "patroni.stop", wait=180)
    ops.call(leader, "patroni.stop", wait=180)
    ops.call(leader, "patroni.remove_cluster", scope)
    back = _having(ops, [x for x in c["members"] if x in rec["aside"]], data + ASIDE)
    _remove(ops, back, data)
    ops.each(back, "file.rename", data + ASIDE, data, wait=60)
    ops.each(c["members"], "grains.delkey", GRAIN, force=True, wait=30)
    _configured(ops, c["members"])
    ops.call(leader, "service.start", "patroni")
    _wait(f"{leader} leading its own data again", lambda: node(ops, leader).get("role") == "primary", ROLE_WAIT)
    ops.each(others, "service.start", "patroni", wait=60)
    _configure(ops, model, c, leader)
    _healthy(ops, c, leader)
    return {"restored": sorted(rec["aside"]), "leader": leader}
