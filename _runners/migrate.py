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

import concurrent.futures
import contextvars
import functools
import hashlib
import json
import os
import time
from typing import Any

from salt.exceptions import CommandExecutionError

__virtualname__ = "migrate"
UTILS = (
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
# How long the cluster may take to confirm the frozen source's last WAL; to checksum every table.
CATCH_UP_WAIT = 60
VERIFY_WAIT = 1800
# The databases the pg_hba in force admits clients to over TLS with a password.
HBA_DATABASES = ("SELECT DISTINCT unnest(database) FROM pg_hba_file_rules WHERE type = 'hostssl' "
                 "AND auth_method = 'scram-sha-256'")  # fmt: skip
# The cutover waits this long for a reconcile round or an event's lookup to release the routing lock.
LOCK_WAIT = 60.0


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
    apis = {m: __utils__["pgcluster_model.api_url"](model, m) for m in c["members"]}
    cafile = __utils__["pgcluster_model.pki_files"](model)["ca"]
    leader = __utils__["pgcluster_routing.find_leader"](apis, timeout=5, cafile=cafile)
    user_tables: dict[str, int] = {}
    found: dict = {}
    if leader is None:
        problems.append(f"{c['name']} has no leader that accepts writes: whether it holds data is unknown")
    else:
        found = _shared("call", __opts__, leader["name"], "pgsql.survey", port=c["port"], wait=SURVEY_WAIT)
        user_tables = {d: facts["tables"] for d, facts in found["databases"].items()}
    first = next(iter(rooms.values()))
    return {
        "role_digests": _declared_digests(model, c),
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
            _roles_in_place(model, c, target["leader"])
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


def _lsn(text: str | None) -> int:
    """A WAL position (X/Y) as a number; -1 for none."""
    if not text:
        return -1
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) + int(lo, 16)


def _differences(source: dict, cluster: dict) -> list[str]:
    """What differs between the source's and the cluster's ``pgmigrate.fingerprint``, one line each."""
    out = []
    for db, want in sorted(source.items()):
        got = cluster.get(db) or {"tables": {}, "views": {}, "sequences": {}, "schema": None}
        if want["schema"] != got["schema"]:
            out.append(f"database {db}: the columns of its tables differ")
        for kind, what in (("tables", "table"), ("views", "materialized view")):
            where = f"database {db}: {what}"
            for table, w in sorted(want.get(kind, {}).items()):
                g = got.get(kind, {}).get(table)
                if g is None:
                    out.append(f"{where} {table} is missing on the cluster")
                elif g["rows"] != w["rows"]:
                    out.append(f"{where} {table} has {g['rows']} rows on the cluster, {w['rows']} on the source")
                elif g["checksum"] != w["checksum"]:
                    out.append(f"{where} {table} has the same {w['rows']} rows on both sides but other content")
        for seq, value in sorted(want["sequences"].items()):
            if got["sequences"].get(seq, -1) < value:
                out.append(f"database {db}: sequence {seq} is at {got['sequences'].get(seq)} on the cluster, "
                           f"{value} on the source")  # fmt: skip
    return out


def _catch_up(source: str, port: int, dbs: list, lsn: str) -> None:
    """Wait until every database's subscription has confirmed the source's WAL up to LSN."""
    deadline = time.monotonic() + CATCH_UP_WAIT
    while time.monotonic() < deadline:
        here = _shared("call", __opts__, source, "pgmigrate.source_progress", dbs, port=port, wait=30)
        slots = [here["databases"][db]["slot"] or {} for db in dbs]
        if all(_lsn(s.get("confirmed_flush_lsn")) >= _lsn(lsn) for s in slots):
            return
        time.sleep(0.2)
    raise MigrateError(f"the cluster did not confirm {source}'s WAL up to {lsn} within {CATCH_UP_WAIT} s")


def _routing_lock(cluster: str):
    """CLUSTER's routing lock (the switchover's, the reconcile's): no other route change while the
    cutover moves the databases; MigrateError naming the holder when it is busy."""
    lock, holder = __utils__["pgcluster_lock.take"](_shared("locks_dir", __opts__), cluster, "migrate.cutover",
                                                    wait_for_short=LOCK_WAIT)  # fmt: skip
    if lock is None:
        raise MigrateError(f"{holder} holds the routing lock of {cluster}: nothing done; run again once it is done")
    return lock


def _on_pgbouncers(c: dict, fun: str, dbs: list, **kwarg: Any) -> dict:
    """FUN for the migrated databases DBS on every PgBouncer of C; MigrateError naming the hosts
    where it failed."""
    ret = _shared("on_pgbouncers", __opts__, c, fun, [c["name"]], timeout=30, kwarg=kwarg)
    failed = _shared("failures", ret, c["pgbouncer"])
    if failed:
        raise MigrateError(f"{fun} of {', '.join(dbs)} failed on " + "; ".join(f"{h}: {w}" for h, w in failed.items()))
    return ret


def _verify(c: dict, rec: dict, leader: str) -> dict:
    """Wait for the frozen source's last WAL on the cluster, set the sequences, compare both ends;
    the timings. MigrateError naming every difference."""
    source, port, dbs = rec["source"], rec["port"], rec["databases"]
    timings = {}
    frozen = rec["frozen"]
    t = time.monotonic()
    _catch_up(source, port, dbs, frozen["lsn"])
    timings["catch_up_s"] = round(time.monotonic() - t, 2)
    t = time.monotonic()
    # Both ends checksum their tables at once (the cluster's materialized views are refreshed
    # first, below); then the sequences, set from the source's, are read back with the columns.
    want, got = _fingerprints(c, rec, leader, views=False)
    # What logical replication does not carry: sequences, materialized views' data.
    _shared("call", __opts__, leader, "pgmigrate.set_sequences",
            {db: f["sequences"] for db, f in want.items()}, port=c["port"], wait=60)  # fmt: skip
    _shared("call", __opts__, leader, "pgmigrate.refresh_views", {db: list(f["views"]) for db, f in want.items()},
            port=c["port"], wait=VERIFY_WAIT)  # fmt: skip
    after = _shared("call", __opts__, leader, "pgmigrate.fingerprint", dbs, port=c["port"], tables=False,
                    row_hash=rec.get("row_hash", "text"), wait=VERIFY_WAIT)  # fmt: skip
    got = {db: dict(got[db], **{k: after[db][k] for k in ("views", "sequences", "schema")}) for db in got}
    timings["verify_s"] = round(time.monotonic() - t, 2)
    differences = _differences(want, got)
    if differences:
        raise MigrateError("verification failed: " + "; ".join(differences))
    timings["verified"] = {db: {"tables": len(f["tables"]), "rows": sum(x["rows"] for x in f["tables"].values()),
                                "sequences": len(f["sequences"])} for db, f in want.items()}  # fmt: skip
    return timings


def _declared_digests(model: dict, c: dict) -> dict[str, str]:
    """{role: SHA-256 of its verifier} as pillar declares the roles of C (as a PgBouncer host
    sees them: other hosts' pillar holds no verifier, secrets by need)."""
    viewer = (c.get("pgbouncer") or c["members"])[0]
    seen = _shared("model", __opts__, __utils__["pgcluster_model.settings"], viewer)
    verifiers = __utils__["pgcluster_model.role_verifiers"](seen, c["name"])
    return {r: hashlib.sha256(v.encode()).hexdigest() for r, v in verifiers.items()}


def _roles_in_place(model: dict, c: dict, leader: str) -> None:
    """MigrateError unless every role pillar declares logs in on the leader with that verifier:
    after the cutover PgBouncer logs in there with it."""
    have = _shared("call", __opts__, leader, "pgsql.role_digests", port=c["port"], wait=60)
    wrong = sorted(r for r, d in _declared_digests(model, c).items() if have.get(r) != d)
    if wrong:
        raise MigrateError(f"role {', '.join(wrong)} on {leader} has not the verifier pillar declares: PgBouncer could "
                           f"not log in after the cutover; run a highstate on {c['name']}'s members first (nothing "
                           "was done)")  # fmt: skip


def _row_hash(found: dict, mode: str) -> str:
    """How the cutover hashes rows (``pgmigrate.ROW_HASHES``): by record in physical MODE (the
    cluster is a copy of the source's catalog: same version, same type OIDs, which an enum's or a
    reg* type's hash is made of) from PostgreSQL 14 on, else as text (logical mode: the cluster's
    enums have OIDs of their own). FOUND: ``_check``."""
    return "record" if mode == "physical" and min(found["major"], found["target"]["major"] or 0) >= 14 else "text"


def _fingerprints(c: dict, rec: dict, member: str, views: bool, replayed: dict | None = None) -> tuple[dict, dict]:
    """``pgmigrate.fingerprint`` of the migrated databases on the source and on MEMBER, at once
    (each thread in a copy of this context: Salt's dunders live in context variables). REPLAYED:
    MEMBER's own arguments to wait there first for the source's last WAL (a standby leader)."""
    source, port, dbs = rec["source"], rec["port"], rec["databases"]
    row_hash = rec.get("row_hash", "text")  # a migration started by an earlier version: text
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        ends = [pool.submit(contextvars.copy_context().run, _shared, "call", __opts__, host,
                            "pgmigrate.fingerprint", dbs, port=p, views=v, row_hash=row_hash, wait=VERIFY_WAIT, **kw)
                for host, p, v, kw in ((source, port, True, {}), (member, c["port"], views, replayed or {}))
                ]  # fmt: skip
        want, got = (end.result() for end in ends)
    return want, got


def _pause(c: dict, dbs: list, spec: dict) -> None:
    """PAUSE DBS on every PgBouncer of C: clients wait there from now on (their running
    transactions end first) until RESUME. When a host fails, every host RESUMEs and MigrateError."""
    try:
        _on_pgbouncers(c, "pgbouncer.pause", dbs, spec=spec, databases=dbs)
    except MigrateError:
        _on_pgbouncers(c, "pgbouncer.resume", dbs, spec=spec)
        raise


def _give_back(c: dict, source: str, port: int, dbs: list, spec: dict, exc: Exception) -> None:
    """After a failure before the point of no return: the source takes writes again and every
    PgBouncer RESUMEs (whatever the thaw did); MigrateError saying so, or what failed too."""
    also = ""
    try:
        _shared("call", __opts__, source, "pgmigrate.thaw", port=port, databases=dbs, wait=60)
    except MigrateError as thaw:
        also = f"; and the source could not be made writable again ({thaw}): run pgmigrate.thaw on {source}"
    finally:
        _on_pgbouncers(c, "pgbouncer.resume", dbs, spec=spec)
    if also:
        raise MigrateError(f"{exc}{also}")
    raise MigrateError(
        f"{exc}. {source} takes writes again, PgBouncer still sends {', '.join(dbs)} there; "
        "the migration goes on (migrate.status, migrate.abort)"
    )


def _not_streaming(c: dict, standby: str) -> list[str]:
    """The members of C, other than the STANDBY leader, that do not stream from it."""
    ops = _Ops(c["name"])
    return [m for m in c["members"] if m != standby and not _physical("replicating", ops, m)]


def _promoted(model: dict, c: dict, rec: dict) -> dict:
    """A cutover run again after the point of no return, with no leader: the standby leader
    promoted (again: the PATCH is idempotent); MigrateError when there is none."""
    standby = _physical("standby_leader", _Ops(c["name"]), c)
    if not standby:
        raise MigrateError(f"{c['name']} has no leader and no standby leader: the copy was verified and "
                           f"{rec['source']} is read-only; see patronictl list on the members")  # fmt: skip
    return _physical("promote", _Ops(c["name"]), model, c, standby, lambda: _find_leader(model, c))


def _cutover_physical(model: dict, c: dict, rec: dict) -> dict:
    """Pause, freeze the source, wait for its last WAL on the standby leader, verify, promote the
    standby cluster; then ``_finish``. When anything before the promotion fails the source takes
    writes again and the migration goes on."""
    cluster, source, port, dbs = c["name"], rec["source"], rec["port"], rec["databases"]
    standby = _physical("standby_leader", _Ops(cluster), c)
    if not standby:
        raise MigrateError(f"no member of {cluster} streams from {source} as its standby leader: nothing done "
                           f"(migrate.status {cluster})")  # fmt: skip
    lagging = _not_streaming(c, standby)
    if lagging:
        raise MigrateError(f"{', '.join(lagging)} do not stream from the standby leader {standby}: nothing done "
                           f"(promoted, {cluster} would not keep its profile's promise; migrate.status)")  # fmt: skip
    spec = __utils__["pgcluster_model.routing"](model, cluster)
    with _routing_lock(cluster):
        timings, t0 = {}, time.monotonic()
        _pause(c, dbs, spec)
        timings["pause_s"] = round(time.monotonic() - t0, 2)
        t = time.monotonic()
        try:
            # The whole instance moves: every client session of every database ends.
            frozen = _shared("call", __opts__, source, "pgmigrate.freeze", dbs, port=port, every_database=True,
                             wait=60)  # fmt: skip
            timings["freeze_s"] = round(time.monotonic() - t, 2)
            t1 = time.monotonic()
            # The standby leader waits for the source's last WAL in the same job (no polling from
            # here): catching up and verifying are timed together.
            replayed = {"replayed": frozen["lsn"], "replay_wait": CATCH_UP_WAIT}
            want, got = _fingerprints(c, rec, standby, views=True, replayed=replayed)
            differences = _differences(want, got)
            if differences:
                raise MigrateError("verification failed: " + "; ".join(differences))
            timings["catch_up_and_verify_s"] = round(time.monotonic() - t1, 2)
        except MigrateError as exc:
            _give_back(c, source, port, dbs, spec, exc)
        verified = {db: {"tables": len(f["tables"]), "rows": sum(x["rows"] for x in f["tables"].values()),
                         "sequences": len(f["sequences"])} for db, f in want.items()}  # fmt: skip
        # The point of no return: once Patroni is told, the cluster takes writes; a cutover run
        # again only finishes (routes, resumes, settles, cleans up); abort refuses.
        rec = dict(rec, verified=verified, leader=standby)
        _save(cluster, rec)
        t1 = time.monotonic()
        try:
            leader = _physical("promote", _Ops(cluster), model, c, standby, lambda: _find_leader(model, c))
        except MigrateError as exc:
            _on_pgbouncers(c, "pgbouncer.resume", dbs, spec=spec)
            raise MigrateError(f"{exc}. {source} stays read-only; migrate.cutover {cluster} confirm=True finishes "
                               "once the cluster has a leader") from None  # fmt: skip
        timings["promote_s"] = round(time.monotonic() - t1, 2)
        timings["source_read_only_s"] = round(time.monotonic() - t, 2)
        return _finish(model, c, rec, leader, timings, t0)


def _cutover(cluster: Any, confirm: Any) -> dict:
    model, c, rec, leader = _started(cluster, f": nothing to cut over (migrate.start {cluster})")
    source, port, dbs = rec["source"], rec["port"], rec["databases"]
    if rec["mode"] == "physical" and not rec.get("verified"):
        if confirm is not True:
            raise MigrateError(f"the cutover pauses {', '.join(dbs)} on every PgBouncer, makes {source} read-only, "
                               f"ends its sessions and promotes {cluster}: run it with confirm=True")  # fmt: skip
        return _cutover_physical(model, c, rec)
    if rec["mode"] == "physical":  # verified: the promotion was asked for; it may not have happened
        leader = _find_leader(model, c) or _promoted(model, c, rec)
    if rec.get("verified"):  # an earlier cutover verified the copy and stopped before the end
        with _routing_lock(cluster):
            return _finish(model, c, rec, leader, {}, time.monotonic())
    if confirm is not True:
        raise MigrateError(f"the cutover pauses {', '.join(dbs)} on every PgBouncer, makes {source} read-only and "
                           f"ends its sessions of them: run it with confirm=True")  # fmt: skip
    there = _shared("call", __opts__, leader["name"], "pgmigrate.progress", dbs, port=c["port"], wait=60)
    copying = [f"{db}: {t} ({state})" for db in dbs for t, state in there[db]["tables"].items() if state != "ready"]
    if copying:
        raise MigrateError(f"the copy is not done ({', '.join(copying)}): see migrate.status {cluster}")
    _roles_in_place(model, c, leader["name"])
    spec = __utils__["pgcluster_model.routing"](model, cluster)
    with _routing_lock(cluster):
        timings, t0 = {}, time.monotonic()
        _pause(c, dbs, spec)
        timings["pause_s"] = round(time.monotonic() - t0, 2)
        t = time.monotonic()
        try:
            frozen = _shared("call", __opts__, source, "pgmigrate.freeze", dbs, port=port, wait=60)
            timings["freeze_s"] = round(time.monotonic() - t, 2)
            timings.update(_verify(c, dict(rec, frozen=frozen), leader["name"]))
        except MigrateError as exc:
            _give_back(c, source, port, dbs, spec, exc)
        # The point of no return: from here the cluster holds the data; abort refuses, a new cutover
        # only finishes (routes the databases to the leader, resumes, cleans up).
        rec = dict(rec, verified=timings.pop("verified"))
        _save(cluster, rec)
        timings["source_read_only_s"] = round(time.monotonic() - t, 2)
        return _finish(model, c, rec, leader, timings, t0)


def _finish(model: dict, c: dict, rec: dict, leader: dict, timings: dict, t0: float) -> dict:
    """After a verified cutover: every PgBouncer routes the databases to the leader and resumes
    them; the subscriptions and the source's grants removed, the record too."""
    source, port, dbs = rec["source"], rec["port"], rec["databases"]
    spec = __utils__["pgcluster_model.routing"](model, c["name"])
    t = time.monotonic()
    replicas = __utils__["pgcluster_routing.replica_addresses"](spec, leader)
    # Each PgBouncer RESUMEs as soon as it routes to the leader (one job); where the repoint failed,
    # a RESUME of its own.
    # After a physical cutover the cluster runs the source's data: its timeline may be older than
    # the one the routes were fenced with (the same source migrated in before), so this route
    # carries no timeline (as a restore's: it always passes); the next reconcile fences again.
    fenced = dict(leader, timeline=None, system=None) if rec["mode"] == "physical" else leader
    kwarg = _shared("repoint_kwarg", spec, fenced, replicas, resume_paused=True, cut_over=dbs)
    ret = _shared("on_pgbouncers", __opts__, c, "pgbouncer.repoint", [c["name"], model["hosts"][leader["name"]]],
                  kwarg=kwarg)  # fmt: skip
    done = _shared("repointed", c, ret, t, leader["name"])
    not_resumed = {}
    if done["failed"]:
        resumed = _shared("on_pgbouncers", __opts__, c, "pgbouncer.resume", [c["name"]], timeout=30,
                          kwarg={"spec": spec})  # fmt: skip
        not_resumed = _shared("failures", resumed, c["pgbouncer"])
    timings["paused_s"] = round(time.monotonic() - t0, 2)
    if done["failed"] or done["refused"] or not_resumed:
        raise MigrateError(f"the copy is verified, but PgBouncer hosts did not all follow: repoint failed on "
                           f"{done['failed'] or done['refused'] or 'none'}, resume failed on {not_resumed or 'none'}; "
                           f"migrate.cutover {c['name']} confirm=True tries again")  # fmt: skip
    t = time.monotonic()
    settled = {}
    if rec["mode"] == "physical":
        try:
            settled = _physical("settle", _Ops(c["name"]), model, c, leader["name"], rec)
            _shared("call", __opts__, source, "pgmigrate.physical_close", model["patroni"]["replication_user"],
                    rec["slot"], port=port, wait=120)  # fmt: skip
        except MigrateError as exc:
            raise MigrateError(f"{exc}. The cluster takes writes and PgBouncer sends {', '.join(dbs)} to it; "
                               f"migrate.cutover {c['name']} confirm=True finishes the rest") from None  # fmt: skip
    else:
        _shared("call", __opts__, leader["name"], "pgmigrate.unsubscribe", dbs, port=c["port"], wait=300)
        ca_file = __utils__["pgcluster_model.pki_files"](model)["ca"]
        _shared("call", __opts__, source, "pgmigrate.source_close", dbs, ca_file, port=port, wait=120)
    timings["clean_up_s"] = round(time.monotonic() - t, 2)
    _save(c["name"], None)
    return {
        "cut_over": True,
        "source": f"{source}:{port} (read-only now)",
        "leader": leader["name"],
        "databases": rec["verified"],
        "verified": "row counts, row checksums, sequences and columns equal",
        "routed": f"every PgBouncer sends {', '.join(dbs)} to the leader",
        "roles_created": rec.get("created", {}).get("roles", []),
        **({"settled": settled} if settled else {}),
        "timings": timings,
        "next": f"move {', '.join(dbs)} from pgcluster:clusters:{c['name']}:migrate:databases to "
        f"pgcluster:clusters:{c['name']}:databases and remove the migrate block",
    }


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
    """What the physical mode's steps (``pgcluster_physical``) do through Salt, for CLUSTER."""

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


def _physical(fun: str, *args: Any) -> Any:
    """FUN of the pgcluster_physical util, its errors as ours. Called bare (not through the
    loader's wrapper, which would run it in the utils' context): ``ops`` uses the runner's dunders."""
    func = __utils__[f"pgcluster_physical.{fun}"]
    try:
        return getattr(func, "func", func)(*args)
    except CommandExecutionError as exc:
        raise MigrateError(str(exc)) from None


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


def _find_leader(model: dict, c: dict) -> dict | None:
    """CLUSTER's leader now (``find_leader``: name, timeline, system), None when none takes writes."""
    apis = {x: __utils__["pgcluster_model.api_url"](model, x) for x in c["members"]}
    cafile = __utils__["pgcluster_model.pki_files"](model)["ca"]
    return __utils__["pgcluster_routing.find_leader"](apis, timeout=5, cafile=cafile)


def _leader(model: dict, c: dict) -> dict:
    """CLUSTER's leader now (``find_leader``: name, timeline, system); MigrateError when none."""
    leader = _find_leader(model, c)
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
            lag = max(0, _lsn(here["lsn"]) - _lsn(lsn))
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
