"""The cutover of ``salt-run migrate.cutover``, both modes: PAUSE the migrated databases on every
PgBouncer, freeze the source, wait until the cluster has its last WAL, verify both ends (row
counts and checksums, sequences, columns), promote the standby cluster (physical mode), repoint
and RESUME; before the point of no return any failure gives the source back. Also what the
runner's preflight shares with it: whether the roles pillar declares log in on the leader.

Like ``pgcluster_physical``, each function takes ``ops`` from the runner: ``ops.call(minion, fun,
*args, wait=, **kwarg)`` (one job, its return, CommandExecutionError when it fails),
``ops.save(record)`` (the record of the migration on the master; None removes it),
``ops.model(name)`` (a function of pgcluster_model), ``ops.util(name)`` (any util function),
``ops.shared(fun, *args, **kwarg)`` (a function of pgcluster_master, the routing plumbing all
runners share) and ``ops.opts`` (the master's options). Called bare by the runner: the Salt jobs
run with the runner's own context.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import hashlib
import threading
import time
from typing import Any

from salt.exceptions import CommandExecutionError

__virtualname__ = "pgcluster_cutover"
# How long the cluster may take to confirm the frozen source's last WAL; to checksum every table.
CATCH_UP_WAIT = 60
VERIFY_WAIT = 1800
# The cutover waits this long for a reconcile round or an event's lookup to release the routing lock.
LOCK_WAIT = 60.0


def __virtual__():
    return __virtualname__


class CutoverError(CommandExecutionError):
    """A step of the cutover cannot run or failed; the message says why and what to do."""


def _physical(ops: Any, fun: str, *args: Any) -> Any:
    """FUN of the pgcluster_physical util (called bare, as the runner calls this one)."""
    func = ops.util(f"pgcluster_physical.{fun}")
    return getattr(func, "func", func)(ops, *args)


def find_leader(ops: Any, model: dict, c: dict) -> dict | None:
    """Cluster C's leader now (``pgcluster_routing.find_leader``: name, timeline, system), None
    when none takes writes."""
    apis = {x: ops.model("api_url")(model, x) for x in c["members"]}
    cafile = ops.model("pki_files")(model)["ca"]
    return ops.util("pgcluster_routing.find_leader")(apis, timeout=5, cafile=cafile)


def lsn(text: str | None) -> int:
    """A WAL position (X/Y) as a number; -1 for none."""
    if not text:
        return -1
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) + int(lo, 16)


def differences(source: dict, cluster: dict) -> list[str]:
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
                elif (g.get("hash"), g.get("functions")) != (w.get("hash"), w.get("functions")):
                    out.append(f"{where} {table} has the same {w['rows']} rows on both sides, hashed {w.get('hash')} "
                               f"on the source but {g.get('hash')} on the cluster, or by other functions (its column "
                               "types' hash functions differ: an extension's version?)")  # fmt: skip
                elif g["checksum"] != w["checksum"]:
                    out.append(f"{where} {table} has the same {w['rows']} rows on both sides but other content")
        for seq, value in sorted(want["sequences"].items()):
            if got["sequences"].get(seq, -1) < value:
                out.append(f"database {db}: sequence {seq} is at {got['sequences'].get(seq)} on the cluster, "
                           f"{value} on the source")  # fmt: skip
    return out


def _routing_lock(ops: Any, cluster: str):
    """CLUSTER's routing lock (the switchover's, the reconcile's): no other route change while the
    cutover moves the databases; CutoverError naming the holder when it is busy."""
    lock, holder = ops.util("pgcluster_lock.take")(ops.shared("locks_dir", ops.opts), cluster, "migrate.cutover",
                                                    wait_for_short=LOCK_WAIT)  # fmt: skip
    if lock is None:
        raise CutoverError(f"{holder} holds the routing lock of {cluster}: nothing done; run again once it is done")
    return lock


def _on_pgbouncers(ops: Any, c: dict, fun: str, dbs: list, **kwarg: Any) -> dict:
    """FUN for the migrated databases DBS on every PgBouncer of C; CutoverError naming the hosts
    where it failed."""
    ret = ops.shared("on_pgbouncers", ops.opts, c, fun, [c["name"]], timeout=30, kwarg=kwarg)
    failed = ops.shared("failures", ret, c["pgbouncer"])
    if failed:
        raise CutoverError(f"{fun} of {', '.join(dbs)} failed on " + "; ".join(f"{h}: {w}" for h, w in failed.items()))
    return ret


def _verify(ops: Any, c: dict, rec: dict, leader: str) -> dict:
    """Compare both ends once the cluster has the frozen source's last WAL: the source's
    fingerprint and, at once, the leader's after it set the sequences and refreshed the
    materialized views (what logical replication does not carry) as the frozen source has them;
    the timings. CutoverError naming every difference."""
    frozen = rec["frozen"]
    t = time.monotonic()
    want, got = _fingerprints(ops, c, rec, leader, "pgmigrate.finish_copy", frozen["sequences"], frozen["views"])
    timings = {"verify_s": round(time.monotonic() - t, 2)}
    found = differences(want, got)
    if found:
        raise CutoverError("verification failed: " + "; ".join(found))
    timings["verified"] = {db: {"tables": len(f["tables"]), "rows": sum(x["rows"] for x in f["tables"].values()),
                                "sequences": len(f["sequences"])} for db, f in want.items()}  # fmt: skip
    return timings


def declared_digests(ops: Any, model: dict, c: dict) -> dict[str, str]:
    """{role: SHA-256 of its verifier} as pillar declares the roles of C (as a PgBouncer host
    sees them: other hosts' pillar holds no verifier, secrets by need)."""
    viewer = (c.get("pgbouncer") or c["members"])[0]
    seen = ops.shared("model", ops.opts, ops.model("settings"), viewer)
    verifiers = ops.model("role_verifiers")(seen, c["name"])
    return {r: hashlib.sha256(v.encode()).hexdigest() for r, v in verifiers.items()}


def roles_in_place(ops: Any, model: dict, c: dict, leader: str) -> None:
    """CutoverError unless every role pillar declares logs in on the LEADER with that verifier:
    after the cutover PgBouncer logs in there with it."""
    have = ops.call(leader, "pgsql.role_digests", port=c["port"], wait=60)
    wrong = sorted(r for r, d in declared_digests(ops, model, c).items() if have.get(r) != d)
    if wrong:
        raise CutoverError(f"role {', '.join(wrong)} on {leader} has not the verifier pillar declares: PgBouncer could "
                           f"not log in after the cutover; run a highstate on {c['name']}'s members first (nothing "
                           "was done)")  # fmt: skip


def _in_background(fun: Any, *args: Any, **kwarg: Any) -> concurrent.futures.Future:
    """FUN(*ARGS, **KWARG) in a daemon thread running in a copy of this context (Salt's dunders
    live in context variables); its future. A daemon: when the other end failed, the cutover gives
    the source back at once, and the runner does not wait at its exit for this one to end."""
    done: concurrent.futures.Future = concurrent.futures.Future()
    context = contextvars.copy_context()

    def run():
        try:
            done.set_result(context.run(fun, *args, **kwarg))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
            done.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return done


def _fingerprints(ops: Any, c: dict, rec: dict, member: str, fun: str, *args: Any, **kwarg: Any) -> tuple[dict, dict]:
    """``pgmigrate.fingerprint`` of the migrated databases on the source and, at once, FUN (the
    same, or a function that returns it) with ARGS and KWARG on MEMBER. The first end to fail
    raises at once (the other's job is left to end on its own)."""
    source, port, dbs = rec["source"], rec["port"], rec["databases"]
    row_hash = rec.get("row_hash", "text")  # a migration started by an earlier version: text
    want = _in_background(ops.call, source, "pgmigrate.fingerprint", dbs, port=port, row_hash=row_hash,
                          wait=VERIFY_WAIT)  # fmt: skip
    got = _in_background(ops.call, member, fun, dbs, *args, port=c["port"], row_hash=row_hash, wait=VERIFY_WAIT,
                         **kwarg)  # fmt: skip
    concurrent.futures.wait((want, got), return_when=concurrent.futures.FIRST_EXCEPTION)
    for end in (want, got):
        if end.done() and end.exception():
            raise end.exception()
    return want.result(), got.result()


def _pause(ops: Any, c: dict, dbs: list, spec: dict) -> None:
    """PAUSE DBS on every PgBouncer of C: clients wait there from now on (their running
    transactions end first) until RESUME. When a host fails, every host RESUMEs and CutoverError."""
    try:
        _on_pgbouncers(ops, c, "pgbouncer.pause", dbs, spec=spec, databases=dbs)
    except CommandExecutionError:
        _on_pgbouncers(ops, c, "pgbouncer.resume", dbs, spec=spec)
        raise


def _give_back(ops: Any, c: dict, source: str, port: int, dbs: list, spec: dict, exc: Exception) -> None:
    """After a failure before the point of no return: the source takes writes again and every
    PgBouncer RESUMEs (whatever the thaw did), CutoverError saying so, or what failed too."""
    also, still = "", []
    try:
        still = (ops.call(source, "pgmigrate.thaw", port=port, databases=dbs, wait=60) or {}).get("frozen") or []
    except CommandExecutionError as thaw:
        also = f"; and the source could not be made writable again ({thaw}): run pgmigrate.thaw on {source}"
    finally:
        _on_pgbouncers(ops, c, "pgbouncer.resume", dbs, spec=spec)
    if also:
        raise CutoverError(f"{exc}{also}")
    # An earlier migration's databases still frozen there keep the server read-only by default.
    writes = (f"lets clients of {', '.join(dbs)} in again but stays read-only by default: {', '.join(still)} of an "
              "earlier migration stay frozen (pgmigrate.thaw)") if still else "takes writes again"  # fmt: skip
    raise CutoverError(
        f"{exc}. {source} {writes}, PgBouncer still sends {', '.join(dbs)} there; "
        "the migration goes on (migrate.status, migrate.abort)"
    )


def _not_streaming(ops: Any, c: dict, standby: str) -> list[str]:
    """The members of C, other than the STANDBY leader, that do not stream from it."""
    return [m for m in c["members"] if m != standby and not _physical(ops, "replicating", m)]


def _promoted(ops: Any, model: dict, c: dict, rec: dict) -> dict:
    """A cutover run again after the point of no return, with no leader: the standby leader
    promoted (again: the PATCH is idempotent); CutoverError when there is none."""
    standby = _physical(ops, "standby_leader", c)
    if not standby:
        raise CutoverError(f"{c['name']} has no leader and no standby leader: the copy was verified and "
                           f"{rec['source']} is read-only; see patronictl list on the members")  # fmt: skip
    return _physical(ops, "promote", model, c, standby, lambda: find_leader(ops, model, c))


def _cutover_physical(ops: Any, model: dict, c: dict, rec: dict) -> dict:
    """Pause, freeze the source, wait for its last WAL on the standby leader, verify, promote the
    standby cluster; then ``_finish``. When anything before the promotion fails the source takes
    writes again and the migration goes on."""
    # The whole instance moves: a database declared in migrate:databases since start (PgBouncer
    # sends it to the source already) is paused, verified and repointed with the others.
    declared = (c.get("migrate") or {}).get("databases") or []
    rec = dict(rec, databases=sorted({*rec["databases"], *declared}))
    cluster, source, port, dbs = c["name"], rec["source"], rec["port"], rec["databases"]
    standby = _physical(ops, "standby_leader", c)
    if not standby:
        raise CutoverError(f"no member of {cluster} streams from {source} as its standby leader: nothing done "
                           f"(migrate.status {cluster})")  # fmt: skip
    lagging = _not_streaming(ops, c, standby)
    if lagging:
        raise CutoverError(f"{', '.join(lagging)} do not stream from the standby leader {standby}: nothing done "
                           f"(promoted, {cluster} would not keep its profile's promise; migrate.status)")  # fmt: skip
    spec = ops.model("routing")(model, cluster)
    with _routing_lock(ops, cluster):
        timings, t0 = {}, time.monotonic()
        _pause(ops, c, dbs, spec)
        timings["pause_s"] = round(time.monotonic() - t0, 2)
        t = time.monotonic()
        try:
            # The whole instance moves: every client session of every database ends.
            frozen = ops.call(source, "pgmigrate.freeze", dbs, port=port, every_database=True,
                             wait=60)  # fmt: skip
            timings["freeze_s"] = round(time.monotonic() - t, 2)
            t1 = time.monotonic()
            # The source checksums at once; the standby leader, in the same job, first waits for
            # the source's last WAL (no polling from here). A standby that does not get there
            # fails within CATCH_UP_WAIT and the source is given back then, its checksum left to end.
            want, got = _fingerprints(ops, c, rec, standby, "pgmigrate.fingerprint", replayed=frozen["lsn"],
                                      replay_wait=CATCH_UP_WAIT)  # fmt: skip
            found = differences(want, got)
            if found:
                raise CutoverError("verification failed: " + "; ".join(found))
            timings["catch_up_and_verify_s"] = round(time.monotonic() - t1, 2)
        except CommandExecutionError as exc:
            _give_back(ops, c, source, port, dbs, spec, exc)
        verified = {db: {"tables": len(f["tables"]), "rows": sum(x["rows"] for x in f["tables"].values()),
                         "sequences": len(f["sequences"])} for db, f in want.items()}  # fmt: skip
        # The point of no return: once Patroni is told, the cluster takes writes; a cutover run
        # again only finishes (routes, resumes, settles, cleans up); abort refuses.
        rec = dict(rec, verified=verified, leader=standby)
        ops.save(rec)
        t1 = time.monotonic()
        try:
            leader = _physical(ops, "promote", model, c, standby, lambda: find_leader(ops, model, c))
        except CommandExecutionError as exc:
            _on_pgbouncers(ops, c, "pgbouncer.resume", dbs, spec=spec)
            raise CutoverError(f"{exc}. {source} stays read-only; migrate.cutover {cluster} confirm=True finishes "
                               "once the cluster has a leader") from None  # fmt: skip
        timings["promote_s"] = round(time.monotonic() - t1, 2)
        timings["source_read_only_s"] = round(time.monotonic() - t, 2)
        return _finish(ops, model, c, rec, leader, timings, t0)


def cutover(ops: Any, model: dict, c: dict, rec: dict, leader: dict, confirm: Any) -> dict:
    """The cutover of the migration REC into cluster C (its LEADER now; none in physical mode),
    or its end when an earlier one stopped after the point of no return. ``migrate.cutover``."""
    cluster = c["name"]
    source, port, dbs = rec["source"], rec["port"], rec["databases"]
    if rec["mode"] == "physical" and not rec.get("verified"):
        if confirm is not True:
            raise CutoverError(f"the cutover pauses {', '.join(dbs)} on every PgBouncer, makes {source} read-only, "
                               f"ends its sessions and promotes {cluster}: run it with confirm=True")  # fmt: skip
        return _cutover_physical(ops, model, c, rec)
    if rec["mode"] == "physical":  # verified: the promotion was asked for; it may not have happened
        leader = find_leader(ops, model, c) or _promoted(ops, model, c, rec)
    if rec.get("verified"):  # an earlier cutover verified the copy and stopped before the end
        with _routing_lock(ops, cluster):
            return _finish(ops, model, c, rec, leader, {}, time.monotonic())
    if confirm is not True:
        raise CutoverError(f"the cutover pauses {', '.join(dbs)} on every PgBouncer, makes {source} read-only and "
                           f"ends its sessions of them: run it with confirm=True")  # fmt: skip
    there = ops.call(leader["name"], "pgmigrate.progress", dbs, port=c["port"], wait=60)
    copying = [f"{db}: {t} ({state})" for db in dbs for t, state in there[db]["tables"].items() if state != "ready"]
    if copying:
        raise CutoverError(f"the copy is not done ({', '.join(copying)}): see migrate.status {cluster}")
    roles_in_place(ops, model, c, leader["name"])
    spec = ops.model("routing")(model, cluster)
    # Before the pause: the copied rows' hint bits set (and statistics), else the verification
    # inside the pause would write every page of the copy to WAL once more.
    t = time.monotonic()
    ops.call(
        leader["name"], "pgmigrate.vacuum_analyze", dbs, port=c["port"], timeout=VERIFY_WAIT, wait=VERIFY_WAIT + 60
    )
    prepared = {"vacuum_analyze_s": round(time.monotonic() - t, 2)}
    with _routing_lock(ops, cluster):
        timings, t0 = prepared, time.monotonic()
        _pause(ops, c, dbs, spec)
        timings["pause_s"] = round(time.monotonic() - t0, 2)
        t = time.monotonic()
        try:
            # One job: frozen, and the cluster has confirmed the source's last WAL.
            frozen = ops.call(source, "pgmigrate.freeze", dbs, port=port, confirm_wait=CATCH_UP_WAIT,
                             wait=CATCH_UP_WAIT + 60)  # fmt: skip
            timings["freeze_s"] = round(time.monotonic() - t, 2)
            timings["catch_up_s"] = frozen.get("confirm_s")
            timings.update(_verify(ops, c, dict(rec, frozen=frozen), leader["name"]))
        except CommandExecutionError as exc:
            _give_back(ops, c, source, port, dbs, spec, exc)
        # The point of no return: from here the cluster holds the data; abort refuses, a new cutover
        # only finishes (routes the databases to the leader, resumes, cleans up).
        rec = dict(rec, verified=timings.pop("verified"))
        ops.save(rec)
        timings["source_read_only_s"] = round(time.monotonic() - t, 2)
        return _finish(ops, model, c, rec, leader, timings, t0)


def _finish(ops: Any, model: dict, c: dict, rec: dict, leader: dict, timings: dict, t0: float) -> dict:
    """After a verified cutover: every PgBouncer routes the databases to the leader and resumes
    them; the subscriptions and the source's grants removed, the record too."""
    source, port, dbs = rec["source"], rec["port"], rec["databases"]
    spec = ops.model("routing")(model, c["name"])
    t = time.monotonic()
    replicas = ops.util("pgcluster_routing.replica_addresses")(spec, leader)
    # Each PgBouncer RESUMEs as soon as it routes to the leader (one job); where the repoint failed,
    # a RESUME of its own.
    # After a physical cutover the cluster runs the source's data: its timeline may be older than
    # the one the routes were fenced with (the same source migrated in before), so this route
    # carries no timeline (as a restore's: it always passes); the next reconcile fences again.
    fenced = dict(leader, timeline=None, system=None) if rec["mode"] == "physical" else leader
    kwarg = ops.shared("repoint_kwarg", spec, fenced, replicas, resume_paused=True, cut_over=dbs)
    ret = ops.shared("on_pgbouncers", ops.opts, c, "pgbouncer.repoint", [c["name"], model["hosts"][leader["name"]]],
                  kwarg=kwarg)  # fmt: skip
    done = ops.shared("repointed", c, ret, t, leader["name"])
    not_resumed = {}
    if done["failed"]:
        resumed = ops.shared("on_pgbouncers", ops.opts, c, "pgbouncer.resume", [c["name"]], timeout=30,
                          kwarg={"spec": spec})  # fmt: skip
        not_resumed = ops.shared("failures", resumed, c["pgbouncer"])
    timings["paused_s"] = round(time.monotonic() - t0, 2)
    if done["failed"] or done["refused"] or not_resumed:
        raise CutoverError(f"the copy is verified, but PgBouncer hosts did not all follow: repoint failed on "
                           f"{done['failed'] or done['refused'] or 'none'}, resume failed on {not_resumed or 'none'}; "
                           f"migrate.cutover {c['name']} confirm=True tries again")  # fmt: skip
    t = time.monotonic()
    settled = {}
    if rec["mode"] == "physical":
        try:
            settled = _physical(ops, "settle", model, c, leader["name"], rec)
            ops.call(source, "pgmigrate.physical_close", model["patroni"]["replication_user"],
                    rec["slot"], port=port, wait=120)  # fmt: skip
        except CommandExecutionError as exc:
            raise CutoverError(f"{exc}. The cluster takes writes and PgBouncer sends {', '.join(dbs)} to it; "
                               f"migrate.cutover {c['name']} confirm=True finishes the rest") from None  # fmt: skip
    else:
        ops.call(leader["name"], "pgmigrate.unsubscribe", dbs, port=c["port"], wait=300)
        ca_file = ops.model("pki_files")(model)["ca"]
        ops.call(source, "pgmigrate.source_close", dbs, ca_file, port=port, wait=120)
    timings["clean_up_s"] = round(time.monotonic() - t, 2)
    ops.save(None)
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
