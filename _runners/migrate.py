"""``salt-run migrate.<step> <cluster>``: move an existing PostgreSQL server into a cluster, as
declared in the cluster's ``migrate`` pillar block (source minion, port, mode, databases).

``check`` is the preflight: it changes nothing and reports, one line per problem, everything that
stands in the way (judged by the ``pgcluster_migrate`` util from what the source says of itself,
``pgsql.survey``, and what every member offers, ``pgsql.room``). In logical mode, ``start`` lets
the members into the source and subscribes the leader to it (``pgmigrate`` execution module at
both ends), ``status`` shows the copy and the lag, ``abort`` takes everything back. What a
started migration created is recorded on the master (``<cachedir>/pgcluster/migrate/<cluster>.json``).

CLI Example:

.. code-block:: bash

    salt-run migrate.check main
    salt-run migrate.start main
    salt-run migrate.status main
    salt-run migrate.cutover main confirm=True
    salt-run migrate.abort main
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

from salt.exceptions import CommandExecutionError

__virtualname__ = "migrate"
UTILS = (
    "pgcluster_cutover.cutover",
    "pgcluster_lock.take",
    "pgcluster_master.model",
    "pgcluster_migrate.problems",
    "pgcluster_model.settings",
    "pgcluster_physical.start",
    "pgcluster_routing.find_leader",
)
# How long a minion may take to survey its server (sizes of every database and table).
SURVEY_WAIT = 120
# How long the leader may take to create the roles, databases, schemas and subscriptions.
SUBSCRIBE_WAIT = 900
# The databases the pg_hba in force admits clients to over TLS with a password.
HBA_DATABASES = ("SELECT DISTINCT unnest(database) FROM pg_hba_file_rules WHERE type = 'hostssl' "
                 "AND auth_method = 'scram-sha-256'")  # fmt: skip


def __virtual__():
    missing = [u for u in UTILS if u not in __utils__]
    if missing:
        return (False, f"migrate: utils missing: {', '.join(missing)} (run saltutil.sync_utils)")
    return __virtualname__


class MigrateError(CommandExecutionError):
    """The migration step cannot run; the message says why."""


def _clean_errors(func):
    """A refusal as one message and a non-zero exit code, not a traceback. (Each runner module has
    its own: a function called through ``__utils__`` runs in the utils loader's context, where the
    runner's own dunders do not resolve, so the wrapper cannot live in a util.)"""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except CommandExecutionError as exc:
            __context__["retcode"] = 1
            return {"error": str(exc), "retcode": 1}

    return wrapper


def _shared(fun: str, *args: Any, **kwargs: Any) -> Any:
    """FUN of the pgcluster_master util (the plumbing all runners share), its errors as ours."""
    try:
        return __utils__[f"pgcluster_master.{fun}"](*args, **kwargs)
    except CommandExecutionError as exc:
        raise MigrateError(str(exc)) from None


def _plan(cluster: Any) -> tuple[dict, dict, dict]:
    """The model, CLUSTER in it and its migrate block with defaults; MigrateError when there is
    no such cluster or it declares no migration."""
    model = _shared("model", __opts__, __utils__["pgcluster_model.settings"])
    c = _shared("cluster", model, cluster)
    m = c.get("migrate")
    if not m:
        raise MigrateError(f"cluster {cluster} declares no migration (pgcluster:clusters:{cluster}:migrate: "
                           "source, port, mode, databases; see pillar.example)")  # fmt: skip
    return model, c, {"port": 5432, "databases": [], **m}


def _reaches(minion: str, address: str, port: int) -> str | None:
    """None when MINION opens a TCP connection to ADDRESS:PORT, else why not."""
    try:
        ret = _shared("call", __opts__, minion, "network.connect", address, port=port, timeout=5, wait=30)
    except MigrateError as exc:  # a failed connect is a failed job (retcode 1) too
        return "no TCP connection" if "Unable to connect" in str(exc) else str(exc)
    return None if ret.get("result") else "no TCP connection"


def _target(model: dict, c: dict, problems: list[str]) -> dict:
    """What CLUSTER's members offer (``pgsql.room`` on each, user tables on the leader), in the
    form ``pgcluster_migrate.problems`` wants; a member that does not answer is a problem."""
    rooms: dict[str, dict] = {}
    for member in c["members"]:
        try:
            rooms[member] = _shared("call", __opts__, member, "pgsql.room", port=c["port"], wait=60)
        except MigrateError as exc:
            problems.append(f"member {member} does not answer: {exc}")
    if not rooms:
        raise MigrateError(f"no member of {c['name']} answers: nothing to judge the migration against")
    leader = _step("pgcluster_cutover.find_leader", _Ops(c["name"]), model, c)
    user_tables: dict[str, int] = {}
    found: dict = {}
    if leader is None:
        problems.append(f"{c['name']} has no leader that accepts writes: whether it holds data is unknown")
    else:
        found = _shared("call", __opts__, leader["name"], "pgsql.survey", port=c["port"], wait=SURVEY_WAIT)
        user_tables = {d: facts["tables"] for d, facts in found["databases"].items()}
    first = next(iter(rooms.values()))
    return {
        "role_digests": _step("pgcluster_cutover.declared_digests", _Ops(c["name"]), model, c),
        "major": first["major"],
        "extensions": sorted(set.intersection(*(set(r["extensions"]) for r in rooms.values()))),
        "locales": sorted(set.intersection(*(set(r["locales"]) for r in rooms.values()))),
        "free": {m: r["free"] for m, r in rooms.items()},
        "user_tables": user_tables,
        "standby_settings": found.get("standby_settings", {}),
        "shared_preload_libraries": found.get("shared_preload_libraries", []),
        "leader": leader["name"] if leader else None,
    }


def _unadmitted(c: dict, leader: str, dbs: list) -> list[str]:
    """A problem per database the leader's pg_hba does not yet admit PgBouncer to (the pillar
    declares it once migrate lists it; a highstate of the members applies it)."""
    rows = _shared("call", __opts__, leader, "pgsql.query", HBA_DATABASES, port=c["port"], wait=60)
    admitted = {r[0] for r in rows}
    return [f"{leader}'s pg_hba does not admit the PgBouncer hosts to database {db} yet: run a highstate on "
            f"{c['name']}'s members (and its PgBouncer hosts) with the migrate block declared" for db in dbs
            if db not in admitted]  # fmt: skip


def _check(cluster: Any) -> dict:
    model, c, m = _plan(cluster)
    source, port = m["source"], m["port"]
    c = dict(c, name=cluster)
    try:
        survey = _shared("call", __opts__, source, "pgsql.survey", port=port, wait=SURVEY_WAIT)
    except MigrateError as exc:
        raise MigrateError(f"source {source}, port {port}: {exc}") from None
    problems: list[str] = []
    target = _target(model, c, problems)
    problems += __utils__["pgcluster_migrate.problems"](cluster, m, survey, target)
    # Every member (replication, subscriptions) and every PgBouncer host (routing to the source
    # until the cutover) must reach the source's PostgreSQL over the network.
    address = model["hosts"][source]
    for host in dict.fromkeys(c["members"] + c.get("pgbouncer", [])):
        why = _reaches(host, address, port)
        if why:
            problems.append(f"{host} cannot reach {source}'s PostgreSQL at {address}:{port} ({why}): set "
                            "listen_addresses there (a restart) and open the port to the cluster's hosts")  # fmt: skip
    dbs = m["databases"] or sorted(survey["databases"])
    if m["mode"] == "logical" and target["leader"]:
        problems += _unadmitted(c, target["leader"], dbs)
        try:
            _step("pgcluster_cutover.roles_in_place", _Ops(cluster), model, c, target["leader"])
        except MigrateError as exc:
            problems.append(str(exc).removesuffix(" (nothing was done)"))
    ret = {
        "cluster": cluster,
        "source": f"{source}:{port}",
        "mode": m["mode"],
        "version": survey["version"],
        "major": survey["major"],
        "system": survey["system"],
        "databases": {d: survey["databases"][d] for d in dbs if d in survey["databases"]},
        "size_bytes": survey["size"],
        "target": {"major": target["major"], "leader": target["leader"], "free_bytes": target["free"]},
        "problems": problems,
        "ready": not problems,
    }
    if problems:  # salt-run exits with the retcode the return holds
        ret["retcode"] = 1
    return ret


def _row_hash(found: dict, mode: str) -> str:
    """How the cutover hashes rows (``pgmigrate.ROW_HASHES``), from PostgreSQL 14 on at both ends
    (else as text): by record in physical MODE (the cluster is a copy of the source's catalog:
    same version, same type OIDs, which an enum's or a reg* type's hash is made of); "portable"
    in logical mode (by record but the tables with such a column, as text: the cluster's enums
    have OIDs of their own). FOUND: ``_check``."""
    if min(found["major"], found["target"]["major"] or 0) < 14:
        return "text"
    return "record" if mode == "physical" else "portable"


def _cutover(cluster: Any, confirm: Any) -> dict:
    model, c, rec, leader = _started(cluster, f": nothing to cut over (migrate.start {cluster})")
    return _step("pgcluster_cutover.cutover", _Ops(cluster), model, c, rec, leader, confirm)


@_clean_errors
def check(cluster: str) -> dict:
    """The preflight of migrating CLUSTER's ``migrate`` source into it: changes nothing, reports
    the source (version, system identifier, each database moved with its size, encoding, locale,
    extensions, tables without a key, unlogged tables, large objects), the members' room, and
    ``problems``: one line per thing that stands in the way (source unreachable as a minion, over
    PostgreSQL or from a member or PgBouncer host; major version; ``wal_level``; replication slots
    and senders; extensions or locales the members lack; a cluster already holding data; free
    disk on each member against the source's size). Exits non-zero when there is a problem.

    CLI Example:

    .. code-block:: bash

        salt-run migrate.check main
        salt-run migrate.check main --out=json
    """
    return _check(cluster)


# ---- what a started migration created, on the master's disk -------------------------------------
def _record_path(cluster: str) -> str:
    return os.path.join(__opts__["cachedir"], "pgcluster", "migrate", f"{cluster}.json")


def _record(cluster: str) -> dict | None:
    try:
        with open(_record_path(cluster), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def _save(cluster: str, record: dict | None) -> None:
    path = _record_path(cluster)
    if record is None:
        if os.path.exists(path):
            os.unlink(path)
        return
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
    os.replace(path + ".tmp", path)


class _Ops:
    """What the steps of the physical mode (``pgcluster_physical``) and of the cutover
    (``pgcluster_cutover``) do through Salt, for CLUSTER."""

    def __init__(self, cluster: str):
        self.cluster = cluster

    @staticmethod
    def call(minion: str, fun: str, *args: Any, wait: float = 120, **kwarg: Any) -> Any:
        return _shared("call", __opts__, minion, fun, *args, wait=wait, **kwarg)

    def save(self, record: dict | None) -> None:
        _save(self.cluster, record)

    @staticmethod
    def each(minions: list, fun: str, *args: Any, wait: float = 120, **kwarg: Any) -> dict:
        if not minions:
            return {}
        return _shared("call_each", __opts__, list(minions), fun, *args, wait=wait, **kwarg)

    @staticmethod
    def model(name: str) -> Any:
        return __utils__[f"pgcluster_model.{name}"]

    @staticmethod
    def util(name: str) -> Any:
        return __utils__[name]

    @staticmethod
    def shared(fun: str, *args: Any, **kwargs: Any) -> Any:
        return _shared(fun, *args, **kwargs)

    @property
    def opts(self) -> dict:
        return __opts__


def _step(name: str, *args: Any) -> Any:
    """Util function NAME (``pgcluster_physical``, ``pgcluster_cutover``: steps that take ``ops``),
    its errors as ours. Called bare (not through the loader's wrapper, which would run it in the
    utils' context): ``ops`` uses the runner's dunders."""
    func = __utils__[name]
    try:
        return getattr(func, "func", func)(*args)
    except CommandExecutionError as exc:
        raise MigrateError(str(exc)) from None


def _physical(fun: str, *args: Any) -> Any:
    """FUN of the pgcluster_physical util (``_step``)."""
    return _step(f"pgcluster_physical.{fun}", *args)


def _start_physical(cluster: str, model: dict, c: dict, m: dict, found: dict, timings: dict) -> dict:
    """Open the source to the members and rebuild the cluster as its standby cluster."""
    c = dict(c, name=cluster)
    source, dbs, leader = m["source"], list(found["databases"]), found["target"]["leader"]
    args, kwarg = _physical("source_open_args", _Ops(cluster), model, c, m, dbs)
    t = time.monotonic()
    opened = _shared("call", __opts__, source, "pgmigrate.physical_open", *args, wait=120, **kwarg)
    timings["source_open_s"] = round(time.monotonic() - t, 2)
    record = {"cluster": cluster, "source": source, "port": m["port"], "mode": "physical", "databases": dbs,
              "leader": leader, "slot": opened["slot"], "aside": {}, "started": time.time(),
              "row_hash": _row_hash(found, "physical")}  # fmt: skip
    _save(cluster, record)
    try:
        timings.update(_physical("start", _Ops(cluster), model, c, record, leader))
    except MigrateError as exc:
        raise MigrateError(f"{exc}. The migration stopped there: migrate.abort {cluster} puts the cluster back as "
                           "it was (its data directories are kept beside)") from None  # fmt: skip
    standby = _physical("standby_leader", _Ops(cluster), c)
    return {"started": True, "mode": "physical", "source": f"{source}:{m['port']}", "standby_leader": standby,
            "databases": dbs, "timings": timings,
            "next": f"migrate.status {cluster}; migrate.cutover {cluster} confirm=True"}  # fmt: skip


def _start(cluster: Any, confirm: Any = False) -> dict:
    model, c, m = _plan(cluster)
    if m["mode"] == "physical" and confirm is not True:
        raise MigrateError(f"a physical migration replaces the data of every member of {cluster} with a copy of "
                           f"{m['source']}: run it with confirm=True")  # fmt: skip
    held = _record(cluster)
    if held:
        raise MigrateError(f"a migration of {cluster} from {held['source']} was started at "
                           f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(held['started']))} UTC: "
                           f"see migrate.status {cluster}, or migrate.abort {cluster}")  # fmt: skip
    t0 = time.monotonic()
    found = _check(cluster)
    if found["problems"]:
        return {"error": f"migrate.check {cluster} found problems: nothing was started",
                "problems": found["problems"], "retcode": 1}  # fmt: skip
    source, dbs, leader = m["source"], list(found["databases"]), found["target"]["leader"]
    timings = {"check_s": round(time.monotonic() - t0, 2)}
    if m["mode"] == "physical":
        return _start_physical(cluster, model, c, m, found, timings)
    t = time.monotonic()
    pki = __utils__["pgcluster_model.pki_files"](model)
    members = {x: model["hosts"][x] for x in c["members"]}
    routers = {x: model["hosts"][x] for x in c["pgbouncer"]}
    opened = _shared("call", __opts__, source, "pgmigrate.source_open", members, dbs, pki["ca"], pki["cert"],
                     pki["key"], port=m["port"], routers=routers, wait=120)  # fmt: skip
    timings["source_open_s"] = round(time.monotonic() - t, 2)
    spec = {"address": model["hosts"][source], "port": m["port"], "certificate": opened["server_certificate"],
            "ca": pki["ca"], "cert": pki["cert"], "key": pki["key"]}  # fmt: skip
    t = time.monotonic()
    try:
        made = _shared("call", __opts__, leader, "pgmigrate.subscribe", spec, dbs, port=c["port"], wait=SUBSCRIBE_WAIT)
    except MigrateError:
        _shared("call", __opts__, source, "pgmigrate.source_close", dbs, pki["ca"], port=m["port"], wait=120)
        raise
    timings["subscribe_s"] = round(time.monotonic() - t, 2)
    record = {"cluster": cluster, "source": source, "port": m["port"], "mode": "logical", "databases": dbs,
              "leader": leader, "created": made, "started": time.time(),
              "row_hash": _row_hash(found, "logical")}  # fmt: skip
    _save(cluster, record)
    return {"started": True, "source": f"{source}:{m['port']}", "leader": leader, "databases": dbs,
            "created": made, "timings": timings}  # fmt: skip


def _leader(model: dict, c: dict) -> dict:
    """CLUSTER's leader now (``find_leader``: name, timeline, system); MigrateError when none."""
    leader = _step("pgcluster_cutover.find_leader", _Ops(c["name"]), model, c)
    if not leader:
        raise MigrateError(f"{c['name']} has no leader that accepts writes")
    return leader


def _started(cluster: Any, hint: str) -> tuple[dict, dict, dict, dict]:
    """The model, CLUSTER, the record of its started migration and its leader now; MigrateError
    (ending on HINT) when no migration is started. The record, not the pillar, says what to undo:
    the migrate block may already be gone."""
    model = _shared("model", __opts__, __utils__["pgcluster_model.settings"])
    c = dict(_shared("cluster", model, cluster), name=cluster)
    rec = _record(cluster)
    if not rec:
        raise MigrateError(f"no migration of {cluster} is started{hint}")
    if rec["mode"] == "physical":  # a standby cluster (or one being promoted): maybe no leader
        return model, c, rec, {}
    return model, c, rec, _leader(model, c)


def _status(cluster: Any) -> dict:
    model, c, rec, leader = _started(cluster, f" (migrate.start {cluster})")
    if rec.get("verified"):
        return {"cluster": cluster, "cut_over": True, "databases": rec["verified"],
                "next": f"migrate.cutover {cluster} confirm=True finishes the clean-up"}  # fmt: skip
    if rec["mode"] == "physical":
        return _status_physical(model, c, rec)
    dbs = rec["databases"]
    there = _shared("call", __opts__, leader["name"], "pgmigrate.progress", dbs, port=c["port"], wait=60)
    here = _shared("call", __opts__, rec["source"], "pgmigrate.source_progress", dbs, port=rec["port"], wait=60)
    now, out = time.time(), {}
    for db in dbs:
        p, sizes = there[db], here["databases"][db]["tables"]
        slot = here["databases"][db]["slot"] or {}
        total = sum(sizes.values()) or 1
        done = sum(sizes.get(t, 0) for t, state in p["tables"].items() if state in ("synchronized", "ready"))
        copied = done / total
        elapsed = now - rec["started"]
        lag_bytes = slot.get("lag_bytes")
        caught_up = lag_bytes == 0
        out[db] = {
            "tables": p["tables"],
            "copied_fraction": round(copied, 3),
            "lag_bytes": lag_bytes,
            "lag_seconds": 0.0 if caught_up else (round(now - p["applied_at"], 1) if p["applied_at"] else None),
            "eta_seconds": 0.0 if copied >= 1 else (round(elapsed * (1 - copied) / copied, 0) if copied else None),
            "streaming": bool(slot.get("active")),
        }
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(rec["started"]))
    return {"cluster": cluster, "source": f"{rec['source']}:{rec['port']}", "mode": rec["mode"],
            "leader": leader["name"], "started": started, "databases": out}  # fmt: skip


def _copies(addresses: dict[str, str], sent: dict[str, list]) -> dict:
    """{member: its copy in progress (from whom, phase, bytes, fraction, ETA)} of the copies each
    server sends (SENT: {sender: pgsql.basebackups}); ADDRESSES: {member: address}."""
    member_at = {a: m for m, a in addresses.items()}
    out = {}
    for sender, copies in sent.items():
        for x in copies:
            if x["client"] not in member_at:
                continue
            fraction = min(x["sent_bytes"] / x["total_bytes"], 1.0) if x["total_bytes"] else 0.0
            out[member_at[x["client"]]] = {
                "from": sender, "phase": x["phase"], "copied_bytes": x["sent_bytes"], "total_bytes": x["total_bytes"],
                "copied_fraction": round(fraction, 3),
                "eta_seconds": round(x["elapsed_s"] * (1 - fraction) / fraction) if fraction else None,
            }  # fmt: skip
    return out


def _status_physical(model: dict, c: dict, rec: dict) -> dict:
    """A physical migration: the source's WAL position and slot, the standby leader's replay and
    the lag behind the source in bytes and seconds, each member's role and state, and the copies
    in progress (the standby leader's from the source, the replicas' from it) with an ETA."""
    ops = _Ops(c["name"])
    here = _shared("call", __opts__, rec["source"], "pgmigrate.physical_progress", rec["slot"], port=rec["port"],
                   wait=60)  # fmt: skip
    members = {m: {k: n.get(k) for k in ("role", "state")} for m in c["members"] for n in [_physical("node", ops, m)]}
    standby = next((m for m, n in members.items() if n["role"] == "standby_leader"), None)
    sent = {rec["source"]: here.get("copies") or []}
    out = {"cluster": c["name"], "source": f"{rec['source']}:{rec['port']}", "mode": "physical",
           "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(rec["started"])),
           "standby_leader": standby, "members": members, "databases": rec["databases"],
           "streaming": bool((here["slot"] or {}).get("active"))}  # fmt: skip
    if standby:
        try:  # Patroni may name it while its PostgreSQL is down (restarting, copying again)
            sent[standby] = _shared("call", __opts__, standby, "pgsql.basebackups", port=c["port"], wait=60)
            lsn, ago = _physical("replayed", ops, standby, c["port"])
        except MigrateError as exc:
            out["problem"] = f"the standby leader does not answer as a server: {exc}"
        else:
            lsn_of = __utils__["pgcluster_cutover.lsn"]
            lag = max(0, lsn_of(here["lsn"]) - lsn_of(lsn))
            # Caught up, the lag is none however long ago the source's last commit was.
            seconds = 0.0 if lag == 0 else (round(ago, 1) if ago is not None else None)
            out.update(source_lsn=here["lsn"], replayed_lsn=lsn, lag_bytes=lag, lag_seconds=seconds)
    out["copying"] = _copies({m: model["hosts"][m] for m in c["members"]}, sent)
    return out


def _abort(cluster: Any) -> dict:
    model, c, rec, leader = _started(cluster, ": nothing to abort")
    if rec.get("verified"):
        raise MigrateError(f"the cutover of {cluster} verified the copy: the cluster holds the data now, nothing "
                           f"to abort (migrate.cutover {cluster} confirm=True finishes the clean-up)")  # fmt: skip
    if rec["mode"] == "physical":
        back = _physical("abort", _Ops(cluster), model, c, rec)
        # The cluster first (a source out of reach must not keep it a standby cluster); a cutover
        # that stopped before its point of no return may have left the source frozen.
        _shared("call", __opts__, rec["source"], "pgmigrate.thaw", port=rec["port"], databases=rec["databases"],
            wait=60)  # fmt: skip
        closed = _shared("call", __opts__, rec["source"], "pgmigrate.physical_close",
                         model["patroni"]["replication_user"], rec["slot"], port=rec["port"], wait=120)  # fmt: skip
        _save(cluster, None)
        return {"aborted": True, "source": f"{rec['source']}:{rec['port']}", **back, **closed}
    made, dbs = rec["created"], rec["databases"]
    dropped = _shared("call", __opts__, leader["name"], "pgmigrate.unsubscribe", dbs, made["databases"], made["roles"],
                      port=c["port"], wait=300)  # fmt: skip
    ca_file = __utils__["pgcluster_model.pki_files"](model)["ca"]
    _shared("call", __opts__, rec["source"], "pgmigrate.thaw", port=rec["port"], databases=rec["databases"],
            wait=60)  # fmt: skip
    closed = _shared("call", __opts__, rec["source"], "pgmigrate.source_close", dbs, ca_file, port=rec["port"],
                     wait=120)  # fmt: skip
    _save(cluster, None)
    return {"aborted": True, "source": f"{rec['source']}:{rec['port']}", **dropped, **closed}


@_clean_errors
def start(cluster: str, confirm: bool = False) -> dict:
    """Start migrating CLUSTER's ``migrate`` source into it while the source keeps serving
    (logical mode): runs ``check`` and refuses on any problem; lets the members into the source
    (a role without password, certificate authentication from their addresses, a publication
    per database); on the leader creates the source's roles (without passwords yet), each
    database and its schema, and a subscription per database that copies every table and then
    streams changes. Physical mode (needs CONFIRM=True: every member's data is replaced): opens
    the source to the members (replication role, pg_hba block, slot) and rebuilds the cluster as
    a Patroni standby cluster of it (each data directory kept beside for ``abort``); returns when
    every member streams. Refuses a second start. Returns what it did and each step's time.

    CLI Example:

    .. code-block:: bash

        salt-run migrate.start main
        salt-run migrate.start main confirm=True    # physical mode
    """
    return _start(cluster, confirm)


@_clean_errors
def status(cluster: str) -> dict:
    """The started migration of CLUSTER: per database each table's state (copying, ready...), the
    share of the source's table bytes copied, the lag in bytes (WAL the source has not yet
    sent or had confirmed) and seconds, an ETA for the copy, and whether it streams. Physical
    mode: the standby leader, each member's role and state, the source's WAL position, the one
    the standby leader replayed, the lag in bytes and seconds, whether the slot streams, and while
    members copy (during ``start``, from another shell) each copy's bytes, share done and ETA.

    CLI Example:

    .. code-block:: bash

        salt-run migrate.status main
    """
    return _status(cluster)


@_clean_errors
def abort(cluster: str) -> dict:
    """Undo what ``start`` did: the subscriptions, the databases and roles it created on the
    cluster, and on the source the publications, slots, pg_hba/pg_ident blocks, ssl_ca_file and
    the migration role; a source a stopped cutover left frozen takes clients and writes again.
    Physical mode: the cluster back as it was (each member's data directory
    from before the start, the former leader first, the profile's replicas streaming), and on the
    source the slot, the pg_hba block, the role and lent TLS removed. The source keeps serving
    throughout.

    CLI Example:

    .. code-block:: bash

        salt-run migrate.abort main
    """
    return _abort(cluster)


@_clean_errors
def cutover(cluster: str, confirm: bool = False) -> dict:
    """Move the applications' database from the source to CLUSTER (logical mode), once the copy is
    ready: the source made read-only (new transactions) and its sessions of the migrated
    databases ended; a wait until the cluster has confirmed the source's last WAL; sequences set
    from the source; **verification** of every table (row count and checksum), every sequence
    (at least the source's) and the columns of every table; then the subscriptions and the
    source's grants removed. When verification fails the source takes writes again and the
    migration goes on; the answer says what differs. Physical mode: the source frozen (every
    client session ended), its last WAL replayed on the standby leader, every table verified
    there, the standby cluster promoted, PgBouncer repointed and resumed; then Patroni's roles,
    its configuration without the standby bootstrap, ``stanza-upgrade``, a full backup. Needs
    CONFIRM=True. Returns each step's time and how long the source was read-only.

    CLI Example:

    .. code-block:: bash

        salt-run migrate.cutover main confirm=True
    """
    return _cutover(cluster, confirm)
