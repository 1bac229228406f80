"""Master-side operations of pgcluster: follow the leader, reconcile, status, planned
switchover, point-in-time restore.

The cluster model is the one the states use: the ``pgcluster`` pillar (as the master's cache of
the minions' pillar holds it) merged over the formula's ``defaults.yaml`` and validated by the
``pgcluster_model`` util. The leader is always read from Patroni itself by the formula's one
leader finder (the ``pgcluster_routing`` util: GET /cluster on every member, then GET /primary
must answer 200 on the leader *with the role primary in its body*, i.e. PostgreSQL out of
recovery): an event only says *when* to look, never *what* is true.

Every path that changes routing (follow the leader, reconcile, switchover, restore) holds the
cluster's routing lock (the ``pgcluster_lock`` util) while it looks up the leader and repoints,
so none interleaves with another; event lookups are coalesced (one runs, one waits per cluster).
Each route carries the timeline and database system it was computed for, and a PgBouncer refuses
a route older than the one it has (the fence, ``pgcluster_routing.install_route``).

CLI Example:

.. code-block:: bash

    salt-run pgcluster.status main
    salt-run pgcluster.switchover main candidate=pg2
    salt-run pgcluster.reconcile
    salt-run pgcluster.restore main target=2026-11-26T01:40:00+00:00 confirm=True
    salt-run pgcluster.rolling_restart main
    salt-run pgcluster.remove_member main pg3
"""

from __future__ import annotations

import contextvars
import functools
import logging
import shlex
import threading
import time
from typing import Any

import requests
import salt.cache
import salt.client
import salt.utils.event
from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)
TAG = "pgcluster/pgbouncer"
# An event's leader lookup waits this long for the cluster's routing lock (a switchover holds it
# for seconds, a restore for minutes: the restore routes at its end itself).
LOCK_WAIT = 60.0
# A crashed member answers no SYN: the routing path gives each member this long (all at once).
ROUTING_TIMEOUT = 1.0
# A restore's lookups may wait longer on a loaded machine: a wrong "no leader" there is costly.
PATIENT_TIMEOUT = 10.0
RESTORE_BANK = "pgcluster/restore"
# The safety net tries a PgBouncer host that did not answer again after this long (a host that
# comes back routes itself at PgBouncer's start; the safety net is for a minion that was away).
FAILED_RETRY = 30.0


class PgclusterError(CommandExecutionError):
    """A runner cannot do what was asked; the message says why."""


def _shared(fun: str, *args: Any, **kwargs: Any) -> Any:
    """FUN of the pgcluster_master util (the plumbing all runners share), its errors as ours."""
    try:
        return __utils__[f"pgcluster_master.{fun}"](*args, **kwargs)
    except CommandExecutionError as exc:
        raise PgclusterError(str(exc)) from None


# ---- model ------------------------------------------------------------------------------------
def _model(minion: str | None = None) -> dict:
    """The validated model as MINION (default: any minion that has it) last received its pillar,
    merged over the formula's defaults. Raises PgclusterError naming the pillar's problems."""
    return _shared("model", __opts__, __utils__["pgcluster_model.settings"], minion)


def _cluster(model: dict, name: Any) -> dict:
    return _shared("cluster", model, name)


def _apis(model: dict, c: dict) -> dict[str, str]:
    return {m: __utils__["pgcluster_model.api_url"](model, m) for m in c["members"]}


# ---- Patroni ------------------------------------------------------------------------------------
def _leader(model: dict, c: dict, timeout: float = ROUTING_TIMEOUT) -> dict | None:
    """{"name", "api", "timeline", "system"} of the leader whose PostgreSQL accepts writes, or None."""
    cafile = __utils__["pgcluster_model.pki_files"](model)["ca"]
    return __utils__["pgcluster_routing.find_leader"](_apis(model, c), timeout=timeout, cafile=cafile)


def _wait_leader(model: dict, c: dict, timeout: float, not_member: str | None = None) -> dict:
    """Poll until a leader (other than NOT_MEMBER) accepts writes; raises PgclusterError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        leader = _leader(model, c)
        if leader and leader["name"] != not_member:
            return leader
        if time.monotonic() >= deadline:
            raise PgclusterError(f"no leader accepting writes within {timeout:.0f} s")
        time.sleep(0.1)


def _switch(model: dict, c: dict, old: str, candidate: str | None, timeout: float) -> dict:
    """Patroni's switchover from OLD (the patroni execution module on OLD, with its own checks and
    credentials), the new leader polled meanwhile: Patroni's API answers only at a whole second
    after the leader changed, and the Salt job's return comes after that. Returns the new leader
    once it accepts writes; raises PgclusterError when Patroni refuses or TIMEOUT passes."""
    kwarg = {"candidate": candidate} if candidate else {}
    failed: list[Exception] = []

    def job() -> None:
        try:
            _call(old, "patroni.switchover", wait=timeout, **kwarg)
        except Exception as exc:  # handed to the poll below
            failed.append(exc)

    # Salt's loader dunders (__opts__, __utils__) live in context variables: the thread gets ours.
    # A daemon: its return is not waited for once the new leader is found, not even at exit.
    threading.Thread(target=contextvars.copy_context().run, args=(job,), daemon=True).start()
    deadline = time.monotonic() + timeout
    while True:
        leader = _leader(model, c)
        if leader and leader["name"] != old:
            return leader
        if failed:
            exc = failed[0]
            raise exc if isinstance(exc, PgclusterError) else PgclusterError(f"{type(exc).__name__}: {exc}")
        if time.monotonic() >= deadline:
            raise PgclusterError(f"no leader other than {old} accepting writes within {timeout:.0f} s")
        time.sleep(0.05)


def _get(model: dict, member: str, path: str) -> Any:
    """GET PATH of MEMBER's REST API (patient); its JSON, or None when it does not answer."""
    url = __utils__["pgcluster_model.api_url"](model, member) + path
    try:
        ca = __utils__["pgcluster_model.pki_files"](model)["ca"]
        return requests.get(url, timeout=PATIENT_TIMEOUT, verify=ca).json()
    except (requests.RequestException, ValueError):
        return None


# ---- Salt jobs ----------------------------------------------------------------------------------
def _on_pgbouncers(c: dict, fun: str, args: list, timeout: int | None = None, **kwargs: Any) -> dict:
    """``pgcluster_master.on_pgbouncers`` (its own timeout unless TIMEOUT is given)."""
    if timeout is not None:
        kwargs["timeout"] = timeout
    return __utils__["pgcluster_master.on_pgbouncers"](__opts__, c, fun, args, **kwargs)


def _failures(ret: dict, hosts: list[str]) -> dict[str, str]:
    return __utils__["pgcluster_master.failures"](ret, hosts)


def _spec(model: dict, c: dict) -> dict:
    return __utils__["pgcluster_model.routing"](model, c["name"])


def _route(model: dict, c: dict, leader: dict, resume_paused: bool = False) -> tuple[list, dict]:
    """The arguments of the ``pgbouncer.repoint`` that routes C to LEADER."""
    spec = _spec(model, c)
    replicas = __utils__["pgcluster_routing.replica_addresses"](spec, leader)
    kwarg = __utils__["pgcluster_master.repoint_kwarg"](spec, leader, replicas, resume_paused)
    return [c["name"], model["hosts"][leader["name"]]], kwarg


def _repoint(model: dict, c: dict, leader: dict, resume_paused: bool = False) -> dict:
    t = time.monotonic()
    args, kwarg = _route(model, c, leader, resume_paused)
    ret = _on_pgbouncers(c, "pgbouncer.repoint", args, kwarg=kwarg)
    return __utils__["pgcluster_master.repointed"](c, ret, t, leader["name"])


def _verify_routes(model: dict, c: dict, leader: dict, full_every: float) -> dict:
    """The safety net's repoint: only the PgBouncer hosts of C whose route to LEADER it has not
    verified (since the last change of leader, timeline, replicas or spec, or the last routing
    job anyone sent them), or not for FULL_EVERY seconds, get a ``pgbouncer.repoint`` that also
    RESUMEs what was left paused. What each host answered is recorded as verified; a host that
    did not answer is tried again after FAILED_RETRY seconds, not every round (each try holds the
    routing lock while Salt waits for it: the events' lookups would wait behind it)."""
    t, now = time.monotonic(), time.time()
    args, kwarg = _route(model, c, leader, resume_paused=True)
    route = __utils__["pgcluster_master.route_digest"](args, kwarg)
    known = __utils__["pgcluster_master.verified"](__opts__, c["name"])
    hosts = __utils__["pgcluster_master.due"](known, c["pgbouncer"], route, full_every, FAILED_RETRY)
    if not hosts:
        return {"seconds": 0.0, "changed": [], "resumed": [], "refused": {}, "failed": {}, "checked": []}
    part = dict(c, pgbouncer=hosts)
    done = __utils__["pgcluster_master.repointed"](part, _on_pgbouncers(part, "pgbouncer.repoint", args,
                                                                         kwarg=kwarg, verifies=True),
                                                   t, leader["name"])  # fmt: skip
    good = {h: {"route": route, "at": now} for h in hosts if h not in done["failed"] and h not in done["refused"]}
    bad = {h: {"failed": now} for h in done["failed"]}
    keep = {h: v for h, v in known.items() if h in c["pgbouncer"] and h not in hosts}
    __utils__["pgcluster_master.remember_verified"](__opts__, c["name"], {**keep, **good, **bad})
    return {**done, "checked": hosts}


def _call(minion: str, fun: str, *args: Any, wait: float = 120, **kwarg: Any) -> Any:
    """FUN on MINION, waiting up to WAIT seconds; returns its return. Raises PgclusterError when
    the minion does not answer or the function fails (the message is the function's own)."""
    return _shared("call", __opts__, minion, fun, *args, wait=wait, **kwarg)


# ---- the master's cache and event bus -------------------------------------------------------------
def _locks() -> str:
    return __utils__["pgcluster_master.locks_dir"](__opts__)


def _section(name: str, what: str):
    """Cluster NAME's routing lock for WHAT (a switchover, a restore), or PgclusterError naming
    the operation that holds it."""
    # A reconcile round or an event's lookup holds the lock for a second or so: wait for it.
    lock, holder = __utils__["pgcluster_lock.take"](_locks(), name, what, wait_for_short=LOCK_WAIT)
    if lock is None:
        raise PgclusterError(f"cluster {name}: {holder} holds its routing lock: nothing done; run again once it "
                             "has finished")  # fmt: skip
    return lock


def _operation(name: str, what: str):
    """Cluster NAME's lock for WHAT, one long operation at a time (a rolling restart, a restore),
    or PgclusterError naming the operation that holds it."""
    lock, holder = __utils__["pgcluster_lock.operation"](_locks(), name, what)
    if lock is None:
        raise PgclusterError(f"cluster {name}: {holder} is running: nothing done; run again once it has finished")
    return lock


def _fire(tag: str, data: dict, prefix: str = TAG) -> None:
    with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=False) as bus:
        bus.fire_event(dict(data), f"{prefix}/{tag}")  # a copy: fire_event adds its _stamp


def _clean_errors(func):
    """Report a refusal or failure as a message and a non-zero exit code, not a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except CommandExecutionError as exc:
            __context__["retcode"] = 1
            return {"error": str(exc), "retcode": 1}  # salt-run exits with this retcode

    return wrapper


# ---- runner functions ---------------------------------------------------------------------------
def follow_leader(sender: Any = None, cluster: Any = None, event_tag: Any = None, timeout: float = 30) -> dict:
    """Handle a Patroni event: look up CLUSTER's real leader now and repoint every PgBouncer.

    The event is a hint, nothing more: no field of it is trusted (a minion can put events with
    any ``id`` on the master's bus). SENDER and CLUSTER only filter: an event is ignored (logged,
    a ``pgcluster/pgbouncer/rejected`` event fired) unless SENDER is a member of CLUSTER in the
    model. The lookup runs under the cluster's routing lock and is coalesced: when a lookup of
    the cluster is already waiting for the lock, this one returns at once (a flood of events
    costs at most one lookup running and one waiting). Fires ``pgcluster/pgbouncer/repointed``
    with the timings. Returns what was done.

    CLI Example:

    .. code-block:: bash

        salt-run pgcluster.follow_leader sender=pg1 cluster=main
    """
    start = time.monotonic()

    def rejected() -> dict:
        why = f"sender {sender!r} is not a member of cluster {cluster!r}"
        log.warning("pgcluster: ignored event %r: %s", event_tag, why)
        _fire("rejected", {"sender": str(sender)[:100], "cluster": str(cluster)[:100], "why": why})
        return {"result": False, "comment": why}

    if not isinstance(sender, str) or not __utils__["pgcluster_lock.valid_name"](cluster):
        return rejected()
    # Coalesced before anything costly (the model): a flood of events returns here at once.
    lock, why = __utils__["pgcluster_lock.coalesced"](_locks(), cluster, f"follow_leader ({event_tag})", LOCK_WAIT)
    if lock is None:
        return {"result": True, "comment": why}
    with lock:
        try:
            model = _model(sender)
        except PgclusterError as exc:
            log.warning("pgcluster: ignored event %r: %s", event_tag, exc)
            return {"result": False, "comment": str(exc)}
        c = model["clusters"].get(cluster)
        if not c or sender not in c["members"]:
            return rejected()
        try:
            leader = _wait_leader(model, c, timeout)
        except PgclusterError as exc:
            log.warning("pgcluster: %s: %s", cluster, exc)
            return {"result": False, "comment": str(exc)}
        found = time.monotonic()
        done = _repoint(model, c, leader)
    result = {
        "result": not done["failed"],
        "cluster": cluster,
        "leader": leader["name"],
        "timeline": leader["timeline"],
        "event": event_tag,
        "sender": sender,
        "seconds_to_leader": round(found - start, 3),
        "seconds_to_repoint": done["seconds"],
        "seconds_total": round(time.monotonic() - start, 3),
        "changed": done["changed"],
        "refused": done["refused"],
        "failed": done["failed"],
    }
    _fire("repointed", result)
    return result


def reconcile(full_every: Any = 300) -> dict:
    """Safety net (run by the master's schedule every 10 s): every PgBouncer of every cluster
    routes to its current leader, and none is left paused. The leader is read from Patroni each
    round; a PgBouncer host gets a Salt job only when its route was not verified for this leader,
    timeline and replicas, when another routing job was sent to it since (a switchover, an event,
    a runner killed after its PAUSE), or when its last check is FULL_EVERY seconds old (0: every
    round checks every host). Returns {cluster: what was done; ``checked``: the hosts that got a
    job}.

    CLI Example:

    .. code-block:: bash

        salt-run pgcluster.reconcile
        salt-run pgcluster.reconcile full_every=0
    """
    if isinstance(full_every, bool) or not isinstance(full_every, (int, float)) or full_every < 0:
        __context__["retcode"] = 1
        return {"result": False, "comment": f"full_every={full_every!r}: a number of seconds >= 0 is needed"}
    try:
        model = _model()
    except PgclusterError as exc:
        log.warning("pgcluster: reconcile: %s", exc)
        return {"result": False, "comment": str(exc)}
    out = {}
    for name, c in model["clusters"].items():
        # A switchover, a restore or an event's lookup holds the lock: it routes; skip this round.
        lock, holder = __utils__["pgcluster_lock.take"](_locks(), name, "reconcile")
        if lock is None:
            out[name] = {"result": True, "comment": f"skipped: {holder} holds the routing lock"}
            continue
        with lock:
            leader = _leader(model, c)
            if not leader:
                out[name] = {"result": False, "comment": "no leader accepting writes: nothing changed"}
                continue
            # A PgBouncer left paused (a switchover runner killed half-way: its lock is gone) is resumed.
            done = _verify_routes(model, c, leader, full_every)
        if done["changed"] or done["resumed"]:
            log.warning("pgcluster: reconcile repointed %s to %s on %s, resumed %s", name, leader["name"],
                        done["changed"], done["resumed"])  # fmt: skip
            _fire("reconciled", {"cluster": name, "leader": leader["name"], **done})
        out[name] = {"result": not done["failed"], "leader": leader["name"], **done}
    return out


@_clean_errors
def status(cluster: str) -> dict:
    """The one screen an operator opens first about CLUSTER: its members as Patroni sees them
    (role, state, timeline, lag; and those Patroni still runs that the pillar no longer names),
    the leader, etcd's members (and those the pillar no longer names, or names but etcd does not
    have started), where each PgBouncer routes (and which do not route to the leader), and from
    Prometheus (the monitoring component) the alerts firing, the age of the last backup of each
    type, each database's size and its growth over the last day.

    CLI Example:

    .. code-block:: bash

        salt-run pgcluster.status main
    """
    model = _model()
    c = _cluster(model, cluster)
    leader = _leader(model, c)
    ret = _on_pgbouncers(c, "pgbouncer.targets", [cluster], kwarg={"spec": _spec(model, c)})
    address = model["hosts"][leader["name"]] if leader else None
    members = _members(model, c)
    return {
        "leader": leader["name"] if leader else None,
        "timeline": leader["timeline"] if leader else None,
        "members": members,
        # Taken out of pillar but still running Patroni: salt-run pgcluster.remove_member stops it.
        "not_in_model": sorted(m["name"] for m in members if m["name"] not in c["members"]),
        "writes": _commits(model, c, leader["name"] if leader else None),
        "etcd": _etcd(model, c),
        "pgbouncer": {h: (r or {}).get("ret") for h, r in ret.items()},
        "misrouted": sorted(
            h for h, r in ret.items() if isinstance(r.get("ret"), dict) and set(r["ret"].values()) != {address}
        ),
        "watch": _watch(model, c),
    }


def _etcd(model: dict, c: dict) -> dict:
    """etcd's members by host (started or only added); those pillar no longer names (salt-run
    pgcluster.remove_member takes them out) and those it names that are no started member."""
    try:
        found = _Master(model).etcd_members(c)
    except CommandExecutionError as exc:
        return {"error": str(exc)}
    started = {m["host"] or m["name"] or m["id"]: m["started"] for m in found}
    return {
        "members": started,
        "not_in_model": sorted(h for h in started if h not in c["etcd"]),
        "not_started": sorted(h for h in c["etcd"] if not started.get(h)),
    }


def _commits(model: dict, c: dict, leader: str | None) -> str:
    """Whether the cluster confirms commits now (e.g. blocked for lack of a synchronous standby)."""
    commits = __utils__["pgcluster_restore.commits"]
    return getattr(commits, "func", commits)(_Master(model), c, leader)


def _members(model: dict, c: dict) -> list[dict]:
    """Each member as Patroni's /cluster lists it (asked of the first member that answers)."""
    for member in c["members"]:
        found = _get(model, member, "/cluster")
        if isinstance(found, dict) and found.get("members"):
            return [{k: m.get(k) for k in ("name", "role", "state", "timeline", "lag")} for m in found["members"]]
    return []


def _watch(model: dict, c: dict) -> dict:
    """What Prometheus knows of cluster C now: alerts firing, backup ages, database sizes and
    growth over a day; {"error": why} when it cannot say."""
    sel = f'cluster="{c["name"]}"'
    url, ca = __utils__["pgcluster_model.prometheus_url"](model), __utils__["pgcluster_model.pki_files"](model)["ca"]

    def query(q: str) -> list[dict]:
        return __utils__["pgcluster_master.prometheus"](url, ca, "/api/v1/query", {"query": q}, timeout=10)["result"]

    try:
        alerts = query(f'ALERTS{{alertstate="firing",{sel}}}')
        sizes = query(f"max by (datname) (pgcluster_database_size_bytes{{{sel}}})")
        grown = query(f"max by (datname) (delta(pgcluster_database_size_bytes{{{sel}}}[1d]))")
        stanza = (c.get("pgbackrest") or {}).get("stanza", "")
        backups = query(
            f'time() - max by (type) (pgcluster_pgbackrest_last_backup_timestamp_seconds{{stanza="{stanza}"}})'
        )
    except CommandExecutionError as exc:
        return {"error": str(exc)}
    return {
        "alerts_firing": sorted(f"{a['metric']['alertname']} {a['metric'].get('host', '')}".strip() for a in alerts),
        "last_backup_age_hours": {b["metric"]["type"]: round(float(b["value"][1]) / 3600, 1) for b in backups},
        "database_bytes": {s["metric"]["datname"]: int(float(s["value"][1])) for s in sizes},
        "database_growth_last_day_bytes": {g["metric"]["datname"]: int(float(g["value"][1])) for g in grown},
    }


@_clean_errors
def switchover(cluster: str, candidate: str | None = None, timeout: float = 60) -> dict:
    """Planned switchover with no client error: a CHECKPOINT on the leader (so that its shutdown
    checkpoint is short), then PAUSE every PgBouncer, switch over (the patroni execution module on
    the leader, with its own checks and credentials) while polling for the new leader, and as
    soon as it accepts writes repoint and RESUME every PgBouncer in one job. On any failure every
    PgBouncer is RESUMEd and the error says what went wrong. Returns the steps with their timings
    (from the PAUSE), and how long clients were paused.

    CLI Example:

    .. code-block:: bash

        salt-run pgcluster.switchover main candidate=pg2
    """
    model = _model()
    c = _cluster(model, cluster)
    if candidate is not None and candidate not in c["members"]:
        raise PgclusterError(f"unknown candidate {candidate!r} (members of {cluster}: {', '.join(c['members'])})")
    old = _leader(model, c)
    if not old:
        raise PgclusterError(f"cluster {cluster} has no leader accepting writes: nothing done")
    if candidate == old["name"]:
        raise PgclusterError(f"{candidate} already leads cluster {cluster}: nothing done")
    steps: dict[str, Any] = {"from": old["name"]}
    spec = _spec(model, c)
    lock = _section(cluster, f"switchover from {old['name']}")
    t0, resumed = None, False
    try:
        t = time.monotonic()
        _call(old["name"], "pgsql.query", "CHECKPOINT", port=c["port"], wait=timeout)
        steps["checkpoint_seconds"] = round(time.monotonic() - t, 3)
        t0 = time.monotonic()
        ret = _on_pgbouncers(c, "pgbouncer.pause", [cluster], timeout=int(timeout), kwarg={"spec": spec})
        bad = _failures(ret, c["pgbouncer"])
        if bad:
            raise PgclusterError(f"PAUSE failed on {bad}")
        steps["paused_after"] = round(time.monotonic() - t0, 3)
        new = _switch(model, c, old["name"], candidate, timeout)
        steps["to"] = new["name"]
        steps["timeline"] = new["timeline"]
        steps["leader_after"] = round(time.monotonic() - t0, 3)
        done = _repoint(model, c, new, resume_paused=True)
        if done["failed"]:
            raise PgclusterError(f"repoint failed on {done['failed']}")
        resumed = True
        steps["repointed_after"] = round(time.monotonic() - t0, 3)
    except PgclusterError as exc:
        steps["error"] = str(exc)
    finally:
        steps["resume_failed"] = {}
        if t0 is not None and not resumed:
            ret = _on_pgbouncers(c, "pgbouncer.resume", [cluster], kwarg={"spec": spec})
            steps["resume_failed"] = _failures(ret, c["pgbouncer"])
        steps["paused_seconds"] = round(time.monotonic() - t0, 3) if t0 is not None else 0.0
        lock.release()
    steps["result"] = "error" not in steps and not steps["resume_failed"]
    _fire("switchover", steps)
    if not steps["result"]:
        raise PgclusterError(f"switchover of {cluster} failed (every PgBouncer resumed): {steps}")
    return steps


# ---- restore and rolling restart: the procedures are utils (pgcluster_restore, pgcluster_rolling);
# this is their plumbing ------------------------------------------------------------------------------
class _Master:
    """What the restore and rolling restart procedures do to the cluster, through Salt and
    Patroni's REST API."""

    def __init__(self, model: dict):
        self.model = model

    call = staticmethod(_call)

    @staticmethod
    def ping(minions: list[str], wait: float = 10) -> None:
        """test.ping on MINIONS at once; PgclusterError naming the first that does not answer."""
        _shared("ping", __opts__, minions, wait=wait)

    def find_leader(self, c: dict, patience: float = 20) -> str | None:
        """The leader, looked for with patient timeouts for up to PATIENCE seconds (a loaded member
        may answer slowly; taking it for "no leader" would stop it unarchived)."""
        deadline = time.monotonic() + patience
        while True:
            leader = _leader(self.model, c, timeout=PATIENT_TIMEOUT)
            if leader or time.monotonic() >= deadline:
                return leader["name"] if leader else None
            time.sleep(1)

    def wait_leader(self, c: dict, timeout: float) -> str:
        return _wait_leader(self.model, c, timeout)["name"]

    def timeline(self, member: str | None) -> int | None:
        """MEMBER's timeline as its PostgreSQL reports it (GET /cluster reports the leader's from
        the DCS, which trails a promotion by a loop)."""
        return (_get(self.model, member, "/patroni") or {}).get("timeline") if member else None

    def members_state(self, c: dict) -> dict[str, dict]:
        """{member: {role, state, timeline, lag, pending_restart}} from the first member that
        answers GET /cluster."""
        for m in c["members"]:
            view = _get(self.model, m, "/cluster")
            if isinstance(view, dict):
                keys = ("role", "state", "timeline", "lag", "pending_restart")
                return {x["name"]: {k: x.get(k) for k in keys} for x in view.get("members", [])}
        return {}

    def dynamic_config(self, c: dict, leader: str) -> dict:
        return _get(self.model, leader, "/config") or {}

    def wait_streaming(self, leader: str, count: int, timeout: float) -> list[str]:
        found = _call(leader, "patroni.wait_healthy", count, timeout=timeout, wait=timeout + 60)
        return sorted(m["name"] for m in found["members"] if m["name"] != found["leader"] and m["state"] == "streaming")

    def apply_configuration(self, c: dict, leader: str) -> dict:
        """The cluster's dynamic configuration as pillar wants it (the one highstate keeps: the
        profile and the shared parameters) PATCHed in through LEADER."""
        wanted = __utils__["pgcluster_model.dynamic_config"](self.model, c["name"])
        # Just started on an empty DCS, Patroni writes its own /config meanwhile (a conflict).
        deadline = time.monotonic() + 60
        while True:
            try:
                return _call(leader, "patroni.config_patch", wanted)
            except CommandExecutionError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(2)

    def wait_healthy(self, c: dict, leader: str, member: str, timeout: float) -> dict:
        """Every other member streaming to LEADER (MEMBER as LEADER's PostgreSQL sees it), and as
        many synchronous as the profile wants."""
        count, sync = len(c["members"]) - 1, c.get("sync_standbys", 0)
        return _call(leader, "patroni.wait_healthy", count, sync_standbys=sync, member=member, timeout=timeout,
                     wait=timeout + 60)  # fmt: skip

    def restart(self, member: str, timeout: float) -> str:
        return _call(member, "patroni.restart", timeout=timeout, wait=timeout + 30)

    def restart_patroni(self, member: str, timeout: float) -> None:
        """Restart Patroni itself on MEMBER (its PostgreSQL with it), e.g. to run a new version."""
        if _call(member, "service.restart", "patroni", wait=timeout) is not True:
            raise PgclusterError(f"service.restart patroni on {member} failed")

    def patroni_wanted(self) -> str | None:
        """The Patroni version pillar wants (None when Debian's package provides it)."""
        p = self.model["patroni"]
        return str(p["version"]) if p.get("install_from", "pip") == "pip" else None

    def patroni_running(self, c: dict) -> dict[str, str | None]:
        """{member: the Patroni version it runs (GET /patroni), None when it does not answer}."""
        return {m: ((_get(self.model, m, "/patroni") or {}).get("patroni") or {}).get("version") for m in c["members"]}

    def patroni_installed(self, c: dict) -> dict[str, str | None]:
        """{member: the Patroni version installed in its virtualenv}."""
        venv = self.model["patroni"]["venv"]
        found = _shared("call_each", __opts__, c["members"], "pip.list", "patroni", bin_env=venv, wait=60)
        return {m: (v or {}).get("patroni") for m, v in found.items()}

    def postgres_running(self, c: dict) -> dict[str, int | None]:
        """{member: the server_version_num its PostgreSQL runs (GET /patroni), None when it does not answer}."""
        return {m: (_get(self.model, m, "/patroni") or {}).get("server_version") for m in c["members"]}

    def postgres_installed(self, c: dict) -> dict[str, int]:
        """{member: the server_version_num of the PostgreSQL binaries installed (``postgres -V``)}.
        Raises PgclusterError naming a member where it says no version, with what it said."""
        postgres = shlex.quote(f"{self.model['postgresql']['bin_dir']}/postgres")
        found = _shared("call_each", __opts__, c["members"], "cmd.run_all", f"{postgres} -V", python_shell=True,
                        ignore_retcode=True, wait=30)  # fmt: skip
        versions = {}
        for m, r in found.items():
            versions[m] = __utils__["pgcluster_rolling.version_num"](r.get("stdout"))
            if versions[m] is None:
                said = " ".join(f"{r.get('stderr', '')} {r.get('stdout', '')}".split())[:300] or "nothing"
                raise PgclusterError(f"{m}: {postgres} -V (exit {r.get('retcode')}): {said}")
        return versions

    def stop_patroni(self, member: str) -> None:
        """Stop Patroni on MEMBER (its PostgreSQL stops with it) and keep it from starting at boot."""
        for fun in ("service.stop", "service.disable"):
            if _call(member, fun, "patroni", wait=120) is not True:
                raise PgclusterError(f"{fun} patroni on {member} failed")

    def _on_etcd(self, c: dict, fun: str, *args: Any) -> Any:
        """FUN on the first of the model's etcd hosts of C that answers."""
        why = []
        for host in c["etcd"]:
            try:
                return _call(host, fun, *args, wait=30)
            except CommandExecutionError as exc:
                why.append(str(exc))
        raise PgclusterError(f"no etcd host of cluster {c['name']} could: {'; '.join(why)}")

    def etcd_members(self, c: dict) -> list[dict]:
        """etcd's members, each with ``host``: the model's host at its peer URL's address."""
        by_address = {a: h for h, a in self.model["hosts"].items()}
        found = self._on_etcd(c, "pgcluster.etcd_members")
        for m in found:
            urls = [u.split("//", 1)[-1].rsplit(":", 1)[0] for u in m["peer_urls"]]
            m["host"] = next((by_address[a] for a in urls if a in by_address), None)
        return found

    def etcd_remove(self, c: dict, member_id: str) -> list[dict]:
        return self._on_etcd(c, "pgcluster.etcd_member_remove", member_id)

    def etcd_retire(self, host: str, cluster: str) -> dict:
        """Stop and disable etcd on HOST, its data directory for CLUSTER moved aside."""
        e = self.model["etcd"]
        return _call(host, "pgcluster.etcd_retire", f"{e['data_root']}/{cluster}", e["service"], wait=120)

    def switchover(self, c: dict, candidate: str | None, timeout: float) -> dict:
        return switchover.__wrapped__(c["name"], candidate=candidate, timeout=timeout)

    def pending(self, name: str) -> dict:
        return _shared("cached", __opts__, RESTORE_BANK, name)

    def record(self, name: str, rec: dict | None) -> None:
        cache = salt.cache.factory(__opts__)
        if rec is None:
            cache.flush(RESTORE_BANK, name)
        else:
            cache.store(RESTORE_BANK, name, rec)

    def fire(self, tag: str, data: dict) -> None:
        _fire(tag, data, prefix="pgcluster/restore")

    def repoint(self, c: dict, leader: str) -> dict:
        found = _leader(self.model, c, timeout=PATIENT_TIMEOUT) or {"name": leader, "timeline": None, "system": None}
        return _repoint(self.model, c, found)

    @staticmethod
    def log(message: str) -> None:
        log.warning("pgcluster: %s", message)


@_clean_errors
def restore(cluster: str, target: Any = None, confirm: bool = False, timeout: float = 3600, source: Any = None) -> dict:
    """Point-in-time restore of the whole of CLUSTER from its pgBackRest repository.

    TARGET is ``latest`` (all archived WAL, the default) or a time with a UTC offset. Refused
    without ``confirm=True``, and refused with nothing touched when a check fails: an unknown
    cluster or target, a target in the future or before the end of the oldest backup, a repository
    that cannot be read (wrong passphrase) or reached, a member or the backup host not answering,
    WAL archiving not working.

    Then, with a leader: a transaction is committed on it (recovery to a time stops at the first
    commit after it, so one must exist), the replicas are stopped (with synchronous_mode_strict
    no commit is confirmed from then on), the leader's WAL is switched and archived (``check``)
    and it is stopped. The cluster's DCS state is erased, the leader (or SOURCE) restored
    and recovered to TARGET, started by Patroni as the new leader, a full backup of the new
    timeline taken (without expiring older ones), the other members emptied and rebuilt as
    replicas from it, every PgBouncer repointed, and ``check`` run. Each long step may take up
    to TIMEOUT seconds. Returns the steps with their timings.

    A restore that stops after its leader is up is recorded on the master: its error says what
    state the cluster is in, and running the restore again (same or no target) finishes it from
    the step that failed.

    Without a leader accepting writes, the restore is refused unless SOURCE names the member to
    restore from (the newest changes may be on one member only; the others are emptied).

    CLI Example:

    .. code-block:: bash

        salt-run pgcluster.restore main target=2026-11-26T01:40:00+00:00 confirm=True
        salt-run pgcluster.restore main source=pg3 confirm=True
    """
    model = _model()
    c = _cluster(model, cluster)
    if not c.get("backup"):
        raise PgclusterError(f"cluster {cluster} has no backup host: nothing to restore from")
    when = __utils__["pgcluster_restore.target"]("latest" if target is None else target)
    if confirm is not True:
        raise PgclusterError(f"restore of cluster {cluster} to {when.isoformat() if when else 'latest'} replaces "
                             f"the data of every member ({', '.join(c['members'])}): nothing done; run again with "
                             "confirm=True")  # fmt: skip
    # The procedure calls back into _Master, whose helpers need the runner's loaders (__utils__):
    # run the util's own function in the runner's loader context, not in the utils loader's.
    run = __utils__["pgcluster_restore.run"]
    what = f"restore to {when.isoformat() if when else 'latest'}"
    with _operation(cluster, what), _section(cluster, what):
        return getattr(run, "func", run)(_Master(model), c, target, timeout, source)


@_clean_errors
def rolling_restart(cluster: str, every: bool = False, timeout: float = 300) -> dict:
    """Restart the members of CLUSTER that have a restart pending (a parameter that needs one),
    run other PostgreSQL binaries than the ones installed (a new minor version,
    ``pgcluster:postgresql:package_version``) or another Patroni version than pillar's (both
    installed by highstate first), with no client error: the replicas first, one at a time, each
    waited for until the leader's PostgreSQL sees it stream again (and until the profile's
    synchronous standbys are back); then a switchover with no client error
    (``pgcluster.switchover``) moves the leader away, which restarts the former leader as a
    replica. EVERY restarts every member, pending or not.
    Refused with nothing done when a member is not up, a member cannot say which PostgreSQL (or
    Patroni) it has installed, or a restore or another rolling restart runs. Each step
    waits up to TIMEOUT seconds. Returns the steps with their timings and the clients' pause.

    CLI Example:

    .. code-block:: bash

        salt-run pgcluster.rolling_restart main
        salt-run pgcluster.rolling_restart main every=True
    """
    model = _model()
    c = _cluster(model, cluster)
    if not isinstance(every, bool):
        raise PgclusterError(f"every={every!r}: give True or False")
    run = __utils__["pgcluster_rolling.run"]
    with _operation(cluster, "rolling restart"):
        steps = getattr(run, "func", run)(_Master(model), c, every, timeout)
    _fire("rolling_restart", steps)
    return steps


@_clean_errors
def remove_member(cluster: str, member: str, timeout: float = 120) -> dict:
    """Take MEMBER out of CLUSTER, clients noticing nothing: first take it out of the cluster's
    ``members`` (a database server) or ``etcd`` (an etcd host) in pillar, then run this.

    Out of Patroni's cluster: refused with nothing done while it is the leader (switch over
    first), without a leader, or when the remaining replicas could not keep the profile's
    synchronous standbys (those not streaming are looked at again for up to 30 s first). Then
    Patroni is stopped and disabled on it (its PostgreSQL with it; its data directory stays), its
    member key expires from the DCS, and the remaining members are waited for (up to TIMEOUT
    seconds) until they are healthy.

    Out of etcd: refused with nothing done until every etcd host pillar names is a started etcd
    member (replace a host by adding the new one first: highstate). Then etcd is stopped and
    disabled on it, it is removed from etcd's membership, and its etcd data directory is moved
    aside.

    A highstate of the cluster's hosts then closes firewalls and pg_hba to it. Adding a member
    or an etcd host needs no runner: name it in pillar and run highstate. Returns the steps with
    their timings.

    CLI Example:

    .. code-block:: bash

        salt-run pgcluster.remove_member main pg3
    """
    model = _model()
    c = _cluster(model, cluster)
    if not isinstance(member, str) or member not in model["hosts"]:
        raise PgclusterError(f"member={member!r}: not a host of the model ({', '.join(sorted(model['hosts']))})")
    remove = __utils__["pgcluster_members.remove"]
    with _operation(cluster, f"removal of {member}"):
        steps = getattr(remove, "func", remove)(_Master(model), c, member, timeout)
    _fire("removed", steps, prefix="pgcluster/member")
    return steps
