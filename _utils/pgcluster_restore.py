"""Point-in-time restore of a whole cluster from its pgBackRest repository (``salt-run
pgcluster.restore``): the procedure, step by step.

Everything it does to the cluster goes through ``master``, the runner's plumbing (Salt jobs on
minions, Patroni's REST API, the master's cache and event bus), so that the order of the steps
can be read here and tested without Salt. Standard library only.

A restore that stops after its leader is up is recorded on the master (``master.record``): its
error says what state the cluster is in, and running the restore again (same or no target)
finishes it from the step that failed instead of restoring anew.
"""

from __future__ import annotations

import datetime
import re
import time
from typing import Any

from salt.exceptions import CommandExecutionError

__virtualname__ = "pgcluster_restore"
# With a leader of the restored data up, the steps that remain, in order.
AFTER_LEADER = ("apply the cluster's configuration", "full backup of the new timeline", "rebuild the replicas",
                "check archiving")  # fmt: skip
# A commit that does not wait for a synchronous standby: the marker must commit when the replicas
# are stopped too (strict synchronous mode), e.g. when an unfinished restore is run again.
MARKER_SQL = "BEGIN;\nSET LOCAL synchronous_commit TO local;\nSELECT pg_current_xact_id();\nCOMMIT;\n"


def __virtual__():
    return __virtualname__


class RestoreError(CommandExecutionError):
    """The restore cannot go on; the message says why (and what state the cluster is in)."""


def target(value: Any) -> datetime.datetime | None:
    """None for ``latest``, else VALUE as an aware datetime in UTC. Raises RestoreError."""
    if value == "latest":
        return None
    when = value
    if not isinstance(when, datetime.datetime):  # salt-run's YAML may already have parsed it
        try:
            when = datetime.datetime.fromisoformat(str(value))
        except ValueError:
            raise RestoreError(
                f"restore target {value!r}: give 'latest' or a time such as 2026-11-26T01:40:00+00:00"
            ) from None
    if when.tzinfo is None:
        raise RestoreError(f"restore target {value!r}: give a UTC offset (e.g. +00:00), not a local time")
    when = when.astimezone(datetime.UTC)
    if when > datetime.datetime.now(datetime.UTC):
        raise RestoreError(f"restore target {when.isoformat()} is in the future")
    return when


def preflight(master: Any, c: dict, when: datetime.datetime | None, pending: dict, source: Any = None) -> dict:
    """Everything a restore needs, checked before anything is touched. Returns what was found.

    The member restored is the leader; without a leader, the member an unfinished restore was
    restoring, else SOURCE, which the operator must then name: the newest WAL may live on one
    member only (not yet archived), and the others are emptied."""
    members, repo, scope = list(c["members"]), c["backup"], c["scope"]
    master.ping([repo, *members], wait=10)
    try:
        info = master.call(repo, "pgbackrest.info", scope, wait=180)
    except CommandExecutionError as exc:
        # pgBackRest reads a wrongly decrypted info file as garbage: a format or crypto error.
        hint = " (is the repository passphrase right?)" if re.search(r"FormatError|CryptoError", str(exc)) else ""
        raise RestoreError(f"the repository on {repo} cannot be read: {exc}{hint}") from None
    if not info.get("recoverable_from"):
        raise RestoreError(f"the repository on {repo} holds no backup of {scope}")
    oldest = datetime.datetime.fromisoformat(info["recoverable_from"])
    if when is not None and when < oldest:
        raise RestoreError(f"restore target {when.isoformat()} is before the end of the oldest backup "
                           f"({oldest.isoformat()}): there is nothing to restore it from")  # fmt: skip
    if source is not None and source not in members:
        raise RestoreError(f"source={source!r} is not a member of {c['name']} ({', '.join(members)})")
    leader = master.find_leader(c)
    if leader and source not in (None, leader):
        raise RestoreError(f"{leader} leads {c['name']}: the leader is the one restored (source={source} is for a "
                           "cluster without a leader)")  # fmt: skip
    # Without a leader, an unfinished restore's member is restored again (its data may be half-restored).
    primary = leader or pending.get("primary") or source
    if primary is None:
        raise RestoreError(f"{c['name']} has no leader accepting writes ({cluster_now(master, c, None)}): the newest "
                           "changes may be on one member only and the others would be emptied; name the member "
                           f"to restore from: salt-run pgcluster.restore {c['name']} source=<member> "
                           "confirm=True")  # fmt: skip
    try:
        master.call(primary, "pgbackrest.info", scope, io_timeout=10, wait=180)
    except CommandExecutionError as exc:
        raise RestoreError(f"{primary} cannot reach the repository: {exc}") from None
    if leader:  # archiving works end to end: a WAL switch reaches the repository
        try:
            master.call(repo, "pgbackrest.check", scope, wait=360)
        except CommandExecutionError as exc:
            raise RestoreError(f"WAL archiving does not work, the newest changes would be lost: {exc}") from None
    return {"primary": primary, "leader_before": leader, "recoverable_from": info["recoverable_from"]}


def cluster_now(master: Any, c: dict, leader: str | None) -> str:
    """One sentence on the cluster's state for an error message: who leads, who runs, can it commit."""
    state = master.members_state(c)
    parts = []
    for m in c["members"]:
        s = state.get(m)
        parts.append(f"{m} {s['role']} {s['state']} on timeline {s['timeline']}" if s else f"{m} Patroni stopped")
    return f"{'; '.join(parts)}; {commits(master, c, leader, state)}"


def commits(master: Any, c: dict, leader: str | None, state: dict | None = None) -> str:
    """Whether cluster C confirms commits now, in a few words: no leader, writes blocked for lack
    of a streaming replica (strict synchronous mode, the durable profile), or accepted."""
    state = master.members_state(c) if state is None else state
    dcs = master.dynamic_config(c, leader) if leader else {}  # the durability in force, not pillar's wish
    streaming = [m for m, s in state.items() if m != leader and s.get("state") == "streaming"]
    if not leader:
        return "no leader accepts writes"
    if not dcs:
        return f"unknown: {leader} leads but its dynamic configuration (GET /config) cannot be read"
    if dcs.get("synchronous_mode") and dcs.get("synchronous_mode_strict") and not streaming:
        return f"writes blocked: {leader} confirms no commit until a replica streams (strict synchronous mode)"
    return f"{leader} accepts writes"


def stopped(master: Any, c: dict, steps: dict, step: str, exc: Exception, leader: str | None, how: str) -> RestoreError:
    """The error of a restore stopped at STEP: why, the cluster's state now, and the one command
    that finishes the job (HOW it goes on). Fires ``pgcluster/restore/failed``."""
    master.fire("failed", {**steps, "step": step, "error": str(exc)})
    return RestoreError(
        f"restore of {c['name']} stopped at '{step}': {exc}. Cluster now: {cluster_now(master, c, leader)}. "
        f"{how} To finish: salt-run pgcluster.restore {c['name']} confirm=True"
    )


def run(master: Any, c: dict, value: Any, timeout: float, source: Any = None) -> dict:
    """Restore cluster C (from the model, defaults filled in) to VALUE (None: latest), from SOURCE
    when the cluster has no leader (see ``preflight``). The caller has checked the confirmation.
    Returns the steps with their timings; raises RestoreError."""
    name = c["name"]
    when = target("latest" if value is None else value)
    wanted = when.isoformat() if when else "latest"
    pending = master.pending(name)
    if pending.get("leader"):
        leader = master.find_leader(c)
        timeline = master.timeline(leader)
        if (leader, timeline) == (pending["leader"], pending["timeline"]):
            if value is not None and pending["target"] != wanted:
                raise RestoreError(
                    f"an unfinished restore of {name} to {pending['target']} is recorded: run "
                    f"'salt-run pgcluster.restore {name} confirm=True' to finish it first"
                )
            return finish(master, c, pending, time.monotonic(), timeout, {"target": pending["target"], "resumed": True})
        master.log(f"restore of {name}: the unfinished restore recorded (leader {pending['leader']}, timeline "
                   f"{pending['timeline']}) no longer matches the cluster (leader {leader}, timeline {timeline}): "
                   "restoring anew")  # fmt: skip
    return start(master, c, when, pending, timeout, source)


def start(
    master: Any, c: dict, when: datetime.datetime | None, pending: dict, timeout: float, source: Any = None
) -> dict:
    """The restore up to a leader of the restored data, then ``finish``."""
    name, scope, repo = c["name"], c["scope"], c["backup"]
    t0 = time.monotonic()
    steps: dict[str, Any] = {"cluster": name, "target": when.isoformat() if when else "latest"}
    steps.update(preflight(master, c, when, pending, source))
    steps["preflight_s"] = round(time.monotonic() - t0, 1)
    primary, leader = steps["primary"], steps["leader_before"]
    replicas = [m for m in c["members"] if m != primary]
    pgbr_target = when.strftime("%Y-%m-%d %H:%M:%S.%f+00") if when else "latest"
    step = "commit a marker transaction on the leader"
    try:
        if leader:
            master.call(leader, "patroni.psql", MARKER_SQL)
        master.record(name, {"target": steps["target"], "primary": primary})
        step = "stop Patroni on the replicas"
        for m in replicas:  # first: none of them may take over, and (strict mode) no commit is confirmed
            master.call(m, "patroni.stop", wait=180)
        if leader:
            step = "archive the leader's last WAL"
            master.call(repo, "pgbackrest.check", scope, wait=360)
        step = f"stop Patroni on {primary}"
        master.call(primary, "patroni.stop", wait=180)
        steps["stopped_after"] = round(time.monotonic() - t0, 1)
        step = "erase the cluster's DCS state"
        master.call(primary, "patroni.remove_cluster", scope)
        step = f"restore {primary}"
        steps["restored"] = master.call(primary, "pgbackrest.restore_primary", scope, target=pgbr_target,
                                        timeout=timeout, wait=timeout + 120)  # fmt: skip
        steps["restored_after"] = round(time.monotonic() - t0, 1)
        step = f"start {primary} as the leader"
        master.call(primary, "service.start", "patroni")
        steps["leader"] = master.wait_leader(c, 300)
    except CommandExecutionError as exc:
        raise stopped(master, c, steps, step, exc, None, "The replicas keep their data.") from None
    rec = {"target": steps["target"], "primary": primary, "leader": steps["leader"],
           "timeline": master.timeline(steps["leader"])}  # fmt: skip
    master.record(name, rec)
    return finish(master, c, rec, t0, timeout, steps)


def finish(master: Any, c: dict, rec: dict, t0: float, timeout: float, steps: dict) -> dict:
    """The steps after a leader of the restored data is up (AFTER_LEADER), each recorded as done,
    so that a restore run again after a failure starts at the step that failed."""
    name, scope, repo, leader = c["name"], c["scope"], c["backup"], rec["leader"]
    steps.update(cluster=name, leader=leader)
    replicas = [m for m in c["members"] if m != leader]
    step = AFTER_LEADER[0]
    try:
        # Created anew (empty DCS), the cluster took the dynamic configuration of the restored data
        # directory (patroni.dynamic.json from backup time) or the bootstrap one (not strict): the
        # pillar's (the profile's promise: no commit confirmed until a replica streams) from now.
        master.apply_configuration(c, leader)
        step = AFTER_LEADER[1]
        if not rec.get("backup"):
            new = master.call(repo, "pgbackrest.backup", scope, kind="full", expire_auto=False, timeout=timeout,
                              wait=timeout + 120)  # fmt: skip
            rec = dict(rec, backup=new["label"])
            master.record(name, rec)
        steps["backup"] = rec["backup"]
        steps["backup_after"] = round(time.monotonic() - t0, 1)
        step = AFTER_LEADER[2]
        state = master.members_state(c)
        for m in replicas:
            s = state.get(m) or {}
            if s.get("state") == "streaming" and s.get("timeline") == rec["timeline"]:
                continue  # rebuilt by an earlier run of this restore
            master.call(m, "patroni.stop", wait=180)
            master.call(m, "patroni.clear_data_dir")
            master.call(m, "service.start", "patroni")
        steps["streaming"] = master.wait_streaming(leader, len(replicas), timeout)
        steps["replicas_after"] = round(time.monotonic() - t0, 1)
        step = AFTER_LEADER[3]
        master.call(repo, "pgbackrest.check", scope, wait=360)
    except CommandExecutionError as exc:
        raise stopped(master, c, steps, step, exc, leader, f"It resumes at '{step}'.") from None
    master.record(name, None)
    # The restore is done; a PgBouncer that cannot be repointed now is left to reconcile.
    steps["repoint"] = master.repoint(c, leader)
    steps["seconds"] = round(time.monotonic() - t0, 1)
    master.fire("done", steps)
    return steps
