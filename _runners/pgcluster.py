"""Master-side operations of pgcluster: follow the leader, reconcile, planned switchover.

The cluster model is read from the master's cache of the minions' pillar (the same
``pgcluster`` pillar the states use). The leader is always read from Patroni itself
(GET /cluster on the members, then GET /primary must answer 200 on the leader, with the role
primary in its body: PostgreSQL out of recovery): an event
only says *when* to look, never *what* is true.

CLI examples::

    salt-run pgcluster.status main
    salt-run pgcluster.switchover main candidate=pg2
    salt-run pgcluster.reconcile
    salt-run pgcluster.restore main target=2026-11-26T01:40:00+00:00 confirm=True
"""

from __future__ import annotations

import datetime
import functools
import logging
import re
import time
from typing import Any

import requests
import salt.cache
import salt.client
import salt.utils.event
from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)
TAG = "pgcluster/pgbouncer"
# Longest a switchover may keep PgBouncers paused before the safety net resumes them anyway.
SWITCHOVER_LIMIT = 300
# (connect, read): a crashed member answers no SYN, and waiting on it would delay every repoint.
HTTP_TIMEOUT = (0.3, 2)


class PgclusterError(CommandExecutionError):
    """A runner cannot do what was asked; the message says why."""


# ---- model ------------------------------------------------------------------------------------
def _cached_pillar(minion: str) -> dict:
    data = salt.cache.factory(__opts__).fetch("pillar", minion)
    return (data.get("pgcluster") if isinstance(data, dict) else None) or {}


def _model(minion: str | None = None) -> dict:
    """The pgcluster pillar as MINION (default: any minion that has it) last received it."""
    if minion is not None:
        return _cached_pillar(minion)
    for mid in salt.cache.factory(__opts__).list("pillar"):
        model = _cached_pillar(mid)
        if model.get("clusters"):
            return model
    return {}


def _cluster(model: dict, name: str) -> dict:
    c = (model.get("clusters") or {}).get(name)
    if not c:
        known = ", ".join(sorted(model.get("clusters") or {})) or "none"
        raise PgclusterError(f"unknown cluster {name!r} (clusters: {known})")
    return c


def _api(model: dict, member: str) -> str:
    port = (model.get("patroni") or {}).get("restapi_port", 8008)
    return f"http://{model['hosts'][member]}:{port}"


# ---- Patroni ------------------------------------------------------------------------------------
PRIMARY_ROLES = ("primary", "master")  # Patroni 4.x, 3.x
# A restore's lookups may wait longer on a loaded machine: a wrong "no leader" there is costly.
PATIENT_HTTP_TIMEOUT = (3, 10)


def _accepts_writes(resp: requests.Response) -> bool:
    """GET /primary is 200 as soon as Patroni holds the leader lock, while PostgreSQL may still be
    promoting; the body's role (pg_is_in_recovery() on the node) must say primary too."""
    try:
        return resp.status_code == 200 and resp.json().get("role") in PRIMARY_ROLES
    except (ValueError, AttributeError):
        return False


def _leader_once(model: dict, c: dict, http_timeout: tuple = HTTP_TIMEOUT) -> str | None:
    """The member that Patroni reports as leader and whose PostgreSQL accepts writes, or None."""
    for member in c["members"]:
        try:
            cl = requests.get(_api(model, member) + "/cluster", timeout=http_timeout).json()
        except (requests.RequestException, ValueError):
            continue
        leaders = [m["name"] for m in cl.get("members", []) if m.get("role") == "leader"]
        if not leaders or leaders[0] not in c["members"]:
            return None
        try:
            ok = _accepts_writes(requests.get(_api(model, leaders[0]) + "/primary", timeout=http_timeout))
        except requests.RequestException:
            ok = False
        return leaders[0] if ok else None
    return None


def _wait_leader(model: dict, c: dict, timeout: float, not_member: str | None = None) -> str:
    """Poll until a leader (other than NOT_MEMBER) accepts writes; raises PgclusterError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        leader = _leader_once(model, c)
        if leader and leader != not_member:
            return leader
        if time.monotonic() >= deadline:
            raise PgclusterError(f"no leader accepting writes within {timeout:.0f} s")
        time.sleep(0.1)


def _timeline(model: dict, member: str | None) -> int | None:
    """MEMBER's timeline as its PostgreSQL reports it (GET /patroni), None when it does not answer.
    (GET /cluster reports the leader's timeline from the DCS, which trails a promotion by a loop.)"""
    if not member:
        return None
    try:
        return requests.get(_api(model, member) + "/patroni", timeout=PATIENT_HTTP_TIMEOUT).json().get("timeline")
    except (requests.RequestException, ValueError, AttributeError):
        return None


def _members_state(model: dict, c: dict) -> dict[str, dict]:
    """{member: {role, state, timeline}} from GET /cluster on the first member that answers
    (members whose Patroni does not run are absent)."""
    for member in c["members"]:
        try:
            cl = requests.get(_api(model, member) + "/cluster", timeout=PATIENT_HTTP_TIMEOUT).json()
        except (requests.RequestException, ValueError):
            continue
        return {m["name"]: {k: m.get(k) for k in ("role", "state", "timeline")} for m in cl.get("members", [])}
    return {}


# ---- PgBouncer ----------------------------------------------------------------------------------
def _on_pgbouncers(c: dict, fun: str, args: list, timeout: int = 8, kwarg: dict | None = None) -> dict:
    hosts = c.get("pgbouncer") or []
    if not hosts:
        return {}
    # A PgBouncer host that is down must not hold the others up: Salt's default 10 s job lookup
    # on silent minions would come on top of TIMEOUT.
    with salt.client.LocalClient(mopts=dict(__opts__, gather_job_timeout=2)) as local:
        return local.cmd(hosts, fun, args, tgt_type="list", timeout=timeout, full_return=True, kwarg=kwarg)


def _failures(ret: dict, hosts: list[str]) -> dict[str, str]:
    bad = {}
    for host in hosts:
        r = ret.get(host)
        if r is None:
            bad[host] = "no answer"
        elif r.get("retcode", 0) != 0:
            bad[host] = str(r.get("ret"))[:300]
    return bad


def _repoint(model: dict, name: str, leader: str, resume_paused: bool = False) -> dict:
    c = _cluster(model, name)
    address = model["hosts"][leader]
    t = time.monotonic()
    ret = _on_pgbouncers(c, "pgbouncer.repoint", [name, address], kwarg={"resume_paused": resume_paused})
    done = {h: r["ret"] for h, r in ret.items() if isinstance(r.get("ret"), dict)}
    return {
        "seconds": round(time.monotonic() - t, 3),
        "changed": sorted(h for h, r in done.items() if r.get("changed")),
        "resumed": sorted(h for h, r in done.items() if r.get("resumed")),
        "failed": _failures(ret, c.get("pgbouncer") or []),
    }


# A switchover in progress pauses PgBouncers on purpose: the safety net must not resume them then.
def _switchover_marker(name: str, started: float | None) -> None:
    cache = salt.cache.factory(__opts__)
    if started is None:
        cache.flush("pgcluster/switchover", name)
    else:
        cache.store("pgcluster/switchover", name, {"started": started})


def _switchover_running(name: str, timeout: float) -> bool:
    mark = salt.cache.factory(__opts__).fetch("pgcluster/switchover", name)
    return bool(mark) and time.time() - mark.get("started", 0) < timeout


def _fire(tag: str, data: dict, prefix: str = TAG) -> None:
    with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=False) as bus:
        bus.fire_event(dict(data), f"{prefix}/{tag}")  # a copy: fire_event adds its _stamp


def _clean_errors(func):
    """Report PgclusterError as a message and a non-zero exit code, not a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except PgclusterError as exc:
            __context__["retcode"] = 1
            return {"error": str(exc), "retcode": 1}  # salt-run exits with this retcode

    return wrapper


# ---- runner functions ---------------------------------------------------------------------------
def follow_leader(sender: Any = None, cluster: Any = None, event_tag: Any = None, timeout: float = 30) -> dict:
    """Handle a Patroni event from minion SENDER: find the real leader, repoint every PgBouncer.

    The event is ignored (logged, and a ``pgcluster/pgbouncer/rejected`` event fired) unless
    SENDER is a member of CLUSTER in the model. Fires ``pgcluster/pgbouncer/repointed`` with
    the timings. Returns what was done.
    """
    start = time.monotonic()
    model = _model(sender) if isinstance(sender, str) else {}
    c = (model.get("clusters") or {}).get(cluster) if isinstance(cluster, str) else None
    if not c or sender not in c.get("members", []):
        why = f"sender {sender!r} is not a member of cluster {cluster!r}"
        log.warning("pgcluster: ignored event %r: %s", event_tag, why)
        _fire("rejected", {"sender": str(sender)[:100], "cluster": str(cluster)[:100], "why": why})
        return {"result": False, "comment": why}
    try:
        leader = _wait_leader(model, c, timeout)
    except PgclusterError as exc:
        log.warning("pgcluster: %s: %s", cluster, exc)
        return {"result": False, "comment": str(exc)}
    found = time.monotonic()
    done = _repoint(model, cluster, leader)
    result = {
        "result": not done["failed"],
        "cluster": cluster,
        "leader": leader,
        "event": event_tag,
        "sender": sender,
        "seconds_to_leader": round(found - start, 3),
        "seconds_to_repoint": done["seconds"],
        "seconds_total": round(time.monotonic() - start, 3),
        "changed": done["changed"],
        "failed": done["failed"],
    }
    _fire("repointed", result)
    return result


def reconcile() -> dict:
    """Safety net (run by the master's schedule): every PgBouncer of every cluster routes to its
    current leader. Returns {cluster: what was done}."""
    model = _model()
    out = {}
    for name, c in (model.get("clusters") or {}).items():
        leader = _leader_once(model, c)
        if not leader:
            out[name] = {"result": False, "comment": "no leader accepting writes: nothing changed"}
            continue
        # A PgBouncer left paused (a switchover runner killed half-way) is resumed here.
        done = _repoint(model, name, leader, resume_paused=not _switchover_running(name, SWITCHOVER_LIMIT))
        if done["changed"] or done["resumed"]:
            log.warning("pgcluster: reconcile repointed %s to %s on %s, resumed %s", name, leader, done["changed"],
                        done["resumed"])  # fmt: skip
            _fire("reconciled", {"cluster": name, "leader": leader, **done})
        out[name] = {"result": not done["failed"], "leader": leader, **done}
    return out


@_clean_errors
def status(cluster: str) -> dict:
    """Members as Patroni sees them and where each PgBouncer routes CLUSTER."""
    model = _model()
    c = _cluster(model, cluster)
    leader = _leader_once(model, c)
    ret = _on_pgbouncers(c, "pgbouncer.targets", [cluster])
    return {
        "leader": leader,
        "pgbouncer": {h: (r or {}).get("ret") for h, r in ret.items()},
        "misrouted": sorted(
            h
            for h, r in ret.items()
            if isinstance(r.get("ret"), dict) and set(r["ret"].values()) != {model["hosts"].get(leader)}
        ),
    }


@_clean_errors
def switchover(cluster: str, candidate: str | None = None, timeout: float = 60) -> dict:
    """Planned switchover with no client error: PAUSE every PgBouncer, switch over, wait for the new
    leader, repoint, RESUME. On any failure every PgBouncer is RESUMEd and the error says what went
    wrong. Returns the steps with their timings, and how long clients were paused.
    """
    model = _model()
    c = _cluster(model, cluster)
    if candidate is not None and candidate not in c["members"]:
        raise PgclusterError(f"unknown candidate {candidate!r} (members of {cluster}: {', '.join(c['members'])})")
    old = _leader_once(model, c)
    if not old:
        raise PgclusterError(f"cluster {cluster} has no leader accepting writes: nothing done")
    if candidate == old:
        raise PgclusterError(f"{candidate} already leads cluster {cluster}: nothing done")
    steps: dict[str, Any] = {"from": old}
    t0 = time.monotonic()
    _switchover_marker(cluster, time.time())
    try:
        ret = _on_pgbouncers(c, "pgbouncer.pause", [cluster], timeout=int(timeout))
        bad = _failures(ret, c.get("pgbouncer") or [])
        if bad:
            raise PgclusterError(f"PAUSE failed on {bad}")
        steps["paused_after"] = round(time.monotonic() - t0, 3)
        auth = ((model.get("patroni") or {}).get("restapi_username", "patroni"), c["passwords"]["restapi"])
        body = {"leader": old, **({"candidate": candidate} if candidate else {})}
        try:
            resp = requests.post(_api(model, old) + "/switchover", json=body, auth=auth, timeout=timeout)
        except requests.RequestException as exc:
            raise PgclusterError(f"switchover request to {old} failed: {exc}") from None
        if resp.status_code != 200:
            raise PgclusterError(f"Patroni refused the switchover: HTTP {resp.status_code}: {resp.text.strip()}")
        steps["switched_after"] = round(time.monotonic() - t0, 3)
        new = _wait_leader(model, c, timeout, not_member=old)
        steps["to"] = new
        steps["leader_after"] = round(time.monotonic() - t0, 3)
        done = _repoint(model, cluster, new)
        if done["failed"]:
            raise PgclusterError(f"repoint failed on {done['failed']}")
        steps["repointed_after"] = round(time.monotonic() - t0, 3)
    except PgclusterError as exc:
        steps["error"] = str(exc)
    finally:
        ret = _on_pgbouncers(c, "pgbouncer.resume", [cluster])
        steps["resume_failed"] = _failures(ret, c.get("pgbouncer") or [])
        steps["paused_seconds"] = round(time.monotonic() - t0, 3)
        _switchover_marker(cluster, None)
    steps["result"] = "error" not in steps and not steps["resume_failed"]
    _fire("switchover", steps)
    if not steps["result"]:
        raise PgclusterError(f"switchover of {cluster} failed (every PgBouncer resumed): {steps}")
    return steps


# ---- point-in-time restore ------------------------------------------------------------------------
def _call(minion: str, fun: str, *args: Any, wait: float = 120, **kwarg: Any) -> Any:
    """FUN on MINION, waiting up to WAIT seconds; returns its return. Raises PgclusterError when
    the minion does not answer or the function fails (the message is the function's own)."""
    try:
        # A minion busy with a long job (a restore) still answers find_job within seconds.
        with salt.client.LocalClient(mopts=dict(__opts__, gather_job_timeout=15)) as local:
            ret = local.cmd(minion, fun, list(args), timeout=int(wait), full_return=True, kwarg=kwarg or None)
    except Exception as exc:  # SaltClientError, a timeout...: one message, not a traceback
        raise PgclusterError(f"{minion}: {fun}: {type(exc).__name__}: {exc}") from None
    r = ret.get(minion)
    if not isinstance(r, dict) or str(r.get("ret")).startswith("Minion did not return"):
        why = f": {r['ret']}" if isinstance(r, dict) else ""
        raise PgclusterError(f"{minion} does not answer ({fun}{why})")
    if r.get("retcode", 0) != 0 or r.get("ret") is False:
        why = " ".join(str(r.get("ret")).split()).removeprefix("ERROR: ")
        raise PgclusterError(
            f"{minion}: {why[:400]}" if why.startswith(fun.split(".")[0]) else f"{minion}: {fun}: {why[:400]}"
        )
    return r["ret"]


def _restore_target(target: Any) -> datetime.datetime | None:
    """None for ``latest``, else TARGET as an aware datetime in UTC. Raises PgclusterError."""
    if target == "latest":
        return None
    when = target
    if not isinstance(when, datetime.datetime):  # salt-run's YAML may already have parsed it
        try:
            when = datetime.datetime.fromisoformat(str(target))
        except ValueError:
            raise PgclusterError(
                f"restore target {target!r}: give 'latest' or a time such as 2026-11-26T01:40:00+00:00"
            ) from None
    if when.tzinfo is None:
        raise PgclusterError(f"restore target {target!r}: give a UTC offset (e.g. +00:00), not a local time")
    when = when.astimezone(datetime.UTC)
    if when > datetime.datetime.now(datetime.UTC):
        raise PgclusterError(f"restore target {when.isoformat()} is in the future")
    return when


def _find_leader(model: dict, c: dict, patience: float = 20) -> str | None:
    """The leader accepting writes, looked for with patient HTTP timeouts for up to PATIENCE
    seconds (a loaded member may answer slowly; taking it for "no leader" would stop it unarchived)."""
    deadline = time.monotonic() + patience
    while True:
        leader = _leader_once(model, c, http_timeout=PATIENT_HTTP_TIMEOUT)
        if leader or time.monotonic() >= deadline:
            return leader
        time.sleep(1)


def _preflight(model: dict, c: dict, scope: str, when: datetime.datetime | None, pending: dict) -> dict:
    """Everything a restore needs, checked before anything is touched. Returns what was found."""
    members, repo = list(c["members"]), c["backup"]
    for host in [repo, *members]:
        _call(host, "test.ping", wait=30)
    try:
        info = _call(repo, "pgbackrest.info", scope, wait=180)
    except PgclusterError as exc:
        # pgBackRest reads a wrongly decrypted info file as garbage: a format or crypto error.
        hint = " (is the repository passphrase right?)" if re.search(r"FormatError|CryptoError", str(exc)) else ""
        raise PgclusterError(f"the repository on {repo} cannot be read: {exc}{hint}") from None
    if not info.get("recoverable_from"):
        raise PgclusterError(f"the repository on {repo} holds no backup of {scope}")
    oldest = datetime.datetime.fromisoformat(info["recoverable_from"])
    if when is not None and when < oldest:
        raise PgclusterError(f"restore target {when.isoformat()} is before the end of the oldest backup "
                             f"({oldest.isoformat()}): there is nothing to restore it from")  # fmt: skip
    leader = _find_leader(model, c)
    # Without a leader, an unfinished restore's member is restored again (its data may be half-restored).
    primary = leader or pending.get("primary") or members[0]
    try:
        _call(primary, "pgbackrest.info", scope, io_timeout=10, wait=180)
    except PgclusterError as exc:
        raise PgclusterError(f"{primary} cannot reach the repository: {exc}") from None
    if leader:  # archiving works end to end: a WAL switch reaches the repository
        try:
            _call(repo, "pgbackrest.check", scope, wait=360)
        except PgclusterError as exc:
            raise PgclusterError(f"WAL archiving does not work, the newest changes would be lost: {exc}") from None
    return {"primary": primary, "leader_before": leader, "recoverable_from": info["recoverable_from"]}


def _wait_streaming(leader: str, count: int, timeout: float) -> list[str]:
    """Names of the replicas streaming from LEADER once COUNT of them do (patroni.wait_healthy there)."""
    c = _call(leader, "patroni.wait_healthy", count, timeout=timeout, wait=timeout + 60)
    return sorted(m["name"] for m in c["members"] if m["name"] != c["leader"] and m["state"] == "streaming")


# ---- an unfinished restore, kept on the master so that running the restore again finishes it ----------
RESTORE_BANK = "pgcluster/restore"
# With a leader of the restored data up, the steps that remain, in order.
AFTER_LEADER = ("full backup of the new timeline", "rebuild the replicas", "check archiving")
# A commit that does not wait for a synchronous standby: the marker must commit when the replicas
# are stopped too (strict synchronous mode), e.g. when an unfinished restore is run again.
MARKER_SQL = "BEGIN;\nSET LOCAL synchronous_commit TO local;\nSELECT pg_current_xact_id();\nCOMMIT;\n"


def _pending(cluster: str) -> dict:
    return salt.cache.factory(__opts__).fetch(RESTORE_BANK, cluster) or {}


def _record(cluster: str, rec: dict | None) -> None:
    cache = salt.cache.factory(__opts__)
    if rec is None:
        cache.flush(RESTORE_BANK, cluster)
    else:
        cache.store(RESTORE_BANK, cluster, rec)


def _cluster_now(model: dict, c: dict, leader: str | None) -> str:
    """One sentence on the cluster's state for an error message: who leads, who runs, can it commit."""
    state = _members_state(model, c)
    parts = []
    for m in c["members"]:
        s = state.get(m)
        parts.append(f"{m} {s['role']} {s['state']} on timeline {s['timeline']}" if s else f"{m} Patroni stopped")
    try:  # the durability in force is Patroni's dynamic configuration, not what pillar asks for
        dcs = requests.get(_api(model, leader) + "/config", timeout=PATIENT_HTTP_TIMEOUT).json() if leader else {}
    except (requests.RequestException, ValueError):
        dcs = {}
    streaming = [m for m, s in state.items() if m != leader and s.get("state") == "streaming"]
    if not leader:
        commits = "no leader accepts writes"
    elif dcs.get("synchronous_mode") and dcs.get("synchronous_mode_strict") and not streaming:
        commits = f"{leader} confirms no commit until a replica streams (strict synchronous mode)"
    else:
        commits = f"{leader} accepts writes"
    return f"{'; '.join(parts)}; {commits}"


@_clean_errors
def restore(cluster: str, target: Any = None, confirm: bool = False, timeout: float = 3600) -> dict:
    """Point-in-time restore of the whole of CLUSTER from its pgBackRest repository.

    TARGET is ``latest`` (all archived WAL, the default) or a time with a UTC offset. Refused
    without ``confirm=True``, and refused with nothing touched when a check fails: an unknown
    cluster or target, a target in the future or before the end of the oldest backup, a repository
    that cannot be read (wrong passphrase) or reached, a member or the backup host not answering,
    WAL archiving not working.

    Then, with a leader: a transaction is committed on it (recovery to a time stops at the first
    commit after it, so one must exist), the replicas are stopped (with synchronous_mode_strict
    no commit is confirmed from then on), the leader's WAL is switched and archived (``check``)
    and it is stopped. The cluster's DCS state is erased, the leader (or first member) restored
    and recovered to TARGET, started by Patroni as the new leader, a full backup of the new
    timeline taken (without expiring older ones), the other members emptied and rebuilt as
    replicas from it, every PgBouncer repointed, and ``check`` run. Each long step may take up
    to TIMEOUT seconds. Returns the steps with their timings.

    A restore that stops after its leader is up is recorded on the master: its error says what
    state the cluster is in, and running the restore again (same or no target) finishes it from
    the step that failed.

    CLI Example:

    .. code-block:: bash

        salt-run pgcluster.restore main target=2026-11-26T01:40:00+00:00 confirm=True
    """
    model = _model()
    c = _cluster(model, cluster)
    if not c.get("backup"):
        raise PgclusterError(f"cluster {cluster} has no backup host: nothing to restore from")
    when = _restore_target("latest" if target is None else target)
    wanted = when.isoformat() if when else "latest"
    if confirm is not True:
        raise PgclusterError(f"restore of cluster {cluster} to {wanted} replaces the data of every member "
                             f"({', '.join(c['members'])}): nothing done; run again with confirm=True")  # fmt: skip
    pending = _pending(cluster)
    if pending.get("leader"):
        leader = _find_leader(model, c)
        timeline = _timeline(model, leader)
        if (leader, timeline) == (pending["leader"], pending["timeline"]):
            if target is not None and pending["target"] != wanted:
                raise PgclusterError(
                    f"an unfinished restore of {cluster} to {pending['target']} is recorded: run "
                    f"'salt-run pgcluster.restore {cluster} confirm=True' to finish it first"
                )
            return _finish_restore(model, c, cluster, pending, time.monotonic(), timeout)
        log.warning("pgcluster: restore of %s: the unfinished restore recorded (leader %s, timeline %s) no longer "
                    "matches the cluster (leader %s, timeline %s): restoring anew", cluster, pending["leader"],
                    pending["timeline"], leader, timeline)  # fmt: skip
    return _start_restore(model, c, cluster, when, pending, timeout)


def _start_restore(model: dict, c: dict, cluster: str, when: datetime.datetime | None, pending: dict,
                   timeout: float) -> dict:  # fmt: skip
    """The restore up to a leader of the restored data, then ``_finish_restore``."""
    scope, repo = c.get("scope", cluster), c["backup"]
    t0 = time.monotonic()
    steps: dict[str, Any] = {"cluster": cluster, "target": when.isoformat() if when else "latest"}
    steps.update(_preflight(model, c, scope, when, pending))
    steps["preflight_s"] = round(time.monotonic() - t0, 1)
    primary, leader = steps["primary"], steps["leader_before"]
    replicas = [m for m in c["members"] if m != primary]
    pgbr_target = when.strftime("%Y-%m-%d %H:%M:%S.%f+00") if when else "latest"
    step = "commit a marker transaction on the leader"
    try:
        if leader:
            _call(leader, "patroni.psql", MARKER_SQL)
        _record(cluster, {"target": steps["target"], "primary": primary})
        step = "stop Patroni on the replicas"
        for m in replicas:  # first: none of them may take over, and (strict mode) no commit is confirmed
            _call(m, "patroni.stop", wait=180)
        if leader:
            step = "archive the leader's last WAL"
            _call(repo, "pgbackrest.check", scope, wait=360)
        step = f"stop Patroni on {primary}"
        _call(primary, "patroni.stop", wait=180)
        steps["stopped_after"] = round(time.monotonic() - t0, 1)
        step = "erase the cluster's DCS state"
        _call(primary, "patroni.remove_cluster", scope)
        step = f"restore {primary}"
        steps["restored"] = _call(primary, "pgbackrest.restore_primary", scope, target=pgbr_target,
                                  timeout=timeout, wait=timeout + 120)  # fmt: skip
        steps["restored_after"] = round(time.monotonic() - t0, 1)
        step = f"start {primary} as the leader"
        _call(primary, "service.start", "patroni")
        steps["leader"] = _wait_leader(model, c, 300)
    except PgclusterError as exc:
        _fire("failed", {**steps, "step": step, "error": str(exc)}, prefix="pgcluster/restore")
        raise PgclusterError(
            f"restore of {cluster} stopped at '{step}': {exc}. Cluster now: {_cluster_now(model, c, None)}. "
            f"The replicas keep their data. To finish: salt-run pgcluster.restore {cluster} confirm=True"
        ) from None
    rec = {"target": steps["target"], "primary": primary, "leader": steps["leader"],
           "timeline": _timeline(model, steps["leader"])}  # fmt: skip
    _record(cluster, rec)
    return _finish_restore(model, c, cluster, rec, t0, timeout, steps)


def _finish_restore(model: dict, c: dict, cluster: str, rec: dict, t0: float, timeout: float,
                    steps: dict | None = None) -> dict:  # fmt: skip
    """The steps after a leader of the restored data is up (AFTER_LEADER), each recorded as done,
    so that a restore run again after a failure starts at the step that failed."""
    scope, repo, leader = c.get("scope", cluster), c["backup"], rec["leader"]
    steps = steps if steps is not None else {"cluster": cluster, "target": rec["target"], "resumed": True}
    steps["leader"] = leader
    replicas = [m for m in c["members"] if m != leader]
    step = AFTER_LEADER[0]
    try:
        if not rec.get("backup"):
            new = _call(repo, "pgbackrest.backup", scope, type="full", expire_auto=False, timeout=timeout,
                        wait=timeout + 120)  # fmt: skip
            _record(cluster, dict(rec, backup=new["label"]))
            rec = _pending(cluster) or dict(rec, backup=new["label"])
        steps["backup"] = rec["backup"]
        steps["backup_after"] = round(time.monotonic() - t0, 1)
        step = AFTER_LEADER[1]
        state = _members_state(model, c)
        for m in replicas:
            s = state.get(m) or {}
            if s.get("state") == "streaming" and s.get("timeline") == rec["timeline"]:
                continue  # rebuilt by an earlier run of this restore
            _call(m, "patroni.stop", wait=180)
            _call(m, "patroni.clear_data_dir")
            _call(m, "service.start", "patroni")
        steps["streaming"] = _wait_streaming(leader, len(replicas), timeout)
        steps["replicas_after"] = round(time.monotonic() - t0, 1)
        step = AFTER_LEADER[2]
        _call(repo, "pgbackrest.check", scope, wait=360)
    except PgclusterError as exc:
        _fire("failed", {**steps, "step": step, "error": str(exc)}, prefix="pgcluster/restore")
        raise PgclusterError(
            f"restore of {cluster} stopped at '{step}': {exc}. Cluster now: {_cluster_now(model, c, leader)}. "
            f"To finish: salt-run pgcluster.restore {cluster} confirm=True (it resumes at '{step}')"
        ) from None
    _record(cluster, None)
    # The restore is done; a PgBouncer that cannot be repointed now is left to reconcile.
    steps["repoint"] = _repoint(model, cluster, leader)
    steps["seconds"] = round(time.monotonic() - t0, 1)
    _fire("done", steps, prefix="pgcluster/restore")
    return steps
