"""Rolling restart of a cluster's members (``salt-run pgcluster.rolling_restart``): the procedure,
step by step.

A parameter that needs a restart (``shared_buffers``, ``wal_buffers``...) leaves members with
``pending_restart``. A new PostgreSQL minor version (``pgcluster:postgresql:package_version``)
is installed by highstate while the running servers keep the old binaries (Patroni flags no
restart for that): the members whose running server is not the one installed are restarted.
A new Patroni version in pillar is installed by highstate too (running members keep the old one
until their Patroni restarts); the members that still run another version have their Patroni
restarted here, in the same order. ``every=True`` restarts every member. The replicas are
restarted first, one at a time, each waited for until it streams again (and, with a
synchronous profile, until enough replicas are synchronous again, so the promise holds between
steps); then the leader hands over by a switchover with no client error (PAUSE, switchover,
repoint, RESUME), which restarts its PostgreSQL as a replica; it is restarted once more only if
that did not clear its pending restart. Clients through PgBouncer see a pause of the switchover's
length and no error.

Everything it does to the cluster goes through ``master``, the runner's plumbing (Salt jobs on
minions, Patroni's REST API), so that the order of the steps can be read here and tested without
Salt. Standard library only.
"""

from __future__ import annotations

import re
import time
from typing import Any

from salt.exceptions import CommandExecutionError

__virtualname__ = "pgcluster_rolling"
# Patroni computes pending_restart in its loop: after a restart the flag may stay up for a loop.
SETTLE = 30.0
SYNC_ROLES = ("sync_standby", "quorum_standby")
# A replica keeps the primary's value of these when it is higher (it could not replay otherwise):
# lowering one needs the primary restarted first, which this procedure does not do.
PRIMARY_FIRST = ("max_connections", "max_worker_processes", "max_wal_senders", "max_prepared_transactions",
                 "max_locks_per_transaction")  # fmt: skip


def __virtual__():
    return __virtualname__


class RollingError(CommandExecutionError):
    """The rolling restart cannot go on; the message says why and what was done already."""


def fit(c: dict, state: dict[str, dict], leader: str | None) -> None:
    """Raises RollingError when cluster C (its members in STATE, from Patroni) is not fit for a
    rolling restart: no leader, or a member not up (restarting another one then could leave no
    failover candidate, or no synchronous standby). Checked before anything asks the members."""
    if not leader:
        raise RollingError(f"cluster {c['name']} has no leader accepting writes: nothing done")
    # The leader runs; a replica is up only while it streams (plain "running": not replicating).
    down = [f"{m} {state[m]['state']}" if m in state else f"{m} not in Patroni's cluster" for m in c["members"]
            if state.get(m, {}).get("state") != ("running" if m == leader else "streaming")]  # fmt: skip
    if down:
        raise RollingError(f"cluster {c['name']}: {', '.join(down)}: a rolling restart needs every member up: "
                           "nothing done")  # fmt: skip


def plan(c: dict, state: dict[str, dict], leader: str | None, every: bool) -> tuple[list[str], bool]:
    """(the replicas to restart, in order; whether the leader must hand over) for cluster C whose
    members are in STATE ({member: {role, state, pending_restart, patroni_due, postgres_due}});
    RollingError when it is not ``fit``."""
    fit(c, state, leader)
    due = [m for m in c["members"]
           if every or any(state[m].get(k) for k in ("pending_restart", "patroni_due", "postgres_due"))]  # fmt: skip
    return [m for m in due if m != leader], leader in due


def candidate(state: dict[str, dict], leader: str) -> str | None:
    """The replica to hand over to: a synchronous one if any (it holds every confirmed commit),
    the least lagging first; None lets Patroni choose."""
    replicas = [(s.get("role") not in SYNC_ROLES, s["lag"] if isinstance(s.get("lag"), int) else float("inf"), m)
                for m, s in state.items() if m != leader and s.get("state") == "streaming"]  # fmt: skip
    return min(replicas)[2] if replicas else None


def versions(c: dict, running: dict[str, str | None], installed: dict[str, str | None], wanted: str | None) -> set:
    """The members of C whose Patroni must be restarted to run WANTED (the pillar's version; None:
    not managed by version). Raises RollingError, nothing done, when a member has another version
    installed (highstate installs it) or its running version is unknown."""
    if not wanted:
        return set()
    other = [f"{m} has {installed.get(m) or 'no Patroni'} installed" for m in c["members"]
             if installed.get(m) != wanted]  # fmt: skip
    if other:
        raise RollingError(f"cluster {c['name']}: {', '.join(other)} while pillar wants Patroni {wanted}: run "
                           "highstate on the members first (it installs it, running members keep theirs): "
                           "nothing done")  # fmt: skip
    return {m for m in c["members"] if running.get(m) != wanted}


def version_num(text: Any) -> int | None:
    """PostgreSQL's server_version_num (150020) from ``postgres -V``'s output
    ("postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"); None when it says no version."""
    found = re.search(r"\(PostgreSQL\) (\d+)\.(\d+)", str(text or ""))
    return int(found[1]) * 10000 + int(found[2]) if found else None


def version_name(num: int | None) -> str:
    """15.20 for 150020."""
    return f"{num // 10000}.{num % 10000}" if isinstance(num, int) else "unknown"


def postgres_versions(c: dict, running: dict[str, int | None], installed: dict[str, int | None]) -> set:
    """The members of C whose PostgreSQL runs other binaries than the ones installed on it
    (RUNNING, INSTALLED: {member: server_version_num}), e.g. after a new minor was installed.
    Members may have different minors installed (nothing pinned them): each is compared with its
    own. Raises RollingError, nothing done, when a member's installed version is unknown."""
    unknown = [m for m in c["members"] if not installed.get(m)]
    if unknown:
        raise RollingError(f"cluster {c['name']}: cannot tell which PostgreSQL is installed on {', '.join(unknown)}: "
                           "nothing done")  # fmt: skip
    return {m for m in c["members"] if running.get(m) != installed[m]}


def _asked(c: dict, what: str, ask, *args) -> Any:
    """ASK(*ARGS), a lookup of WHAT on the members of C; its failure as RollingError (nothing done)."""
    try:
        return ask(*args)
    except CommandExecutionError as exc:
        raise RollingError(f"cluster {c['name']}: cannot read {what}: {exc}: nothing done") from None


def run(master: Any, c: dict, every: bool = False, timeout: float = 300) -> dict:
    """Restart the members of cluster C (from the model, defaults filled in) that have a restart
    pending, run other PostgreSQL binaries than installed, or run another Patroni version than
    the pillar's (EVERY: all of them), clients
    noticing a switchover's pause at most. A member due for a new Patroni has its Patroni
    restarted (its PostgreSQL with it), the others only their PostgreSQL. Each step waits up to
    TIMEOUT seconds. Returns the steps with their timings; raises RollingError."""
    t0 = time.monotonic()
    leader = master.find_leader(c)
    state = master.members_state(c)
    fit(c, state, leader)  # a member down: refused at once, not after waiting for it to answer
    wanted = master.patroni_wanted()
    found = _asked(c, "the Patroni installed", master.patroni_installed, c) if wanted else {}
    daemon = versions(c, master.patroni_running(c), found, wanted)
    for m in daemon & set(state):
        state[m]["patroni_due"] = True
    installed = _asked(c, "the PostgreSQL installed", master.postgres_installed, c)
    binaries = postgres_versions(c, master.postgres_running(c), installed)
    for m in binaries & set(state):
        state[m]["postgres_due"] = True
    replicas, leader_due = plan(c, state, leader, every)
    steps: dict[str, Any] = {"leader_before": leader, "restarted": []}
    if daemon:
        steps["patroni_version"] = {"to": wanted, "members": sorted(daemon)}
    if binaries:
        to = ", ".join(version_name(v) for v in sorted({installed[m] for m in binaries}))
        steps["postgresql_version"] = {"to": to, "members": sorted(binaries)}
    if not replicas and not leader_due:
        steps.update(result=True, comment=f"no member of {c['name']} has a restart pending: nothing done")
        return steps

    def restart(member: str) -> Any:
        return master.restart_patroni(member, timeout) if member in daemon else master.restart(member, timeout)

    def step(what: str, func, *args) -> Any:
        try:
            return func(*args)
        except CommandExecutionError as exc:
            done = ", ".join(r["member"] for r in steps["restarted"]) or "none"
            raise RollingError(f"rolling restart of {c['name']} stopped at '{what}': {exc} (restarted so far: "
                               f"{done}); run it again once the cause is fixed") from None  # fmt: skip

    for member in replicas:
        t = time.monotonic()
        step(f"restart {member}", restart, member)
        step(f"wait for {member} to stream", master.wait_healthy, c, leader, member, timeout)
        steps["restarted"].append({"member": member, "seconds": round(time.monotonic() - t, 3)})
    if leader_due:
        t = time.monotonic()
        switched = step(f"switchover from {leader}", master.switchover, c, candidate(master.members_state(c), leader),
                        timeout)  # fmt: skip
        new = switched["to"]
        steps["switchover"] = {k: switched.get(k) for k in ("from", "to", "paused_seconds")}
        step(f"wait for {leader} to stream", master.wait_healthy, c, new, leader, timeout)
        if (leader in daemon or master.members_state(c).get(leader, {}).get("pending_restart")
                or master.postgres_running(c).get(leader) != installed[leader]):  # fmt: skip
            # The demotion restarted its PostgreSQL (not its Patroni, and with the installed
            # binaries); a restart is still due only if that did not apply it.
            step(f"restart {leader}", restart, leader)
            step(f"wait for {leader} to stream", master.wait_healthy, c, new, leader, timeout)
        steps["restarted"].append({"member": leader, "seconds": round(time.monotonic() - t, 3)})
        steps["leader_after"] = new
    # A replica whose flag came back once Patroni looked again (e.g. the former leader, after its
    # demotion) is restarted once more: a replica's restart costs clients nothing.
    current = steps.get("leader_after", leader)
    again = [m for m in settled(master, c) if m != current]
    for member in again:
        step(f"restart {member} again", master.restart, member, timeout)
        step(f"wait for {member} to stream", master.wait_healthy, c, current, member, timeout)
    if again:
        steps["restarted_again"] = again
    steps["pending_after"] = settled(master, c)
    steps["seconds"] = round(time.monotonic() - t0, 3)
    if daemon:
        stale = {m: v for m, v in master.patroni_running(c).items() if m in c["members"] and v != wanted}
        if stale:
            raise RollingError(f"rolling restart of {c['name']}: Patroni restarted, but {stale} still run another "
                               f"version than {wanted}: {steps}")  # fmt: skip
    if binaries:
        old = {m: version_name(v) for m, v in master.postgres_running(c).items() if v != installed.get(m)}
        if old:
            raise RollingError(f"rolling restart of {c['name']}: restarted, but {old} still run another PostgreSQL "
                               f"than the one installed ({steps['postgresql_version']['to']}): {steps}")  # fmt: skip
    steps["result"] = not steps["pending_after"]
    if steps["pending_after"]:
        raise RollingError(f"rolling restart of {c['name']}: {', '.join(steps['pending_after'])} still have a "
                           "restart pending after being restarted (lowering one of "
                           f"{', '.join(PRIMARY_FIRST)} needs the primary restarted first, which the rolling "
                           f"restart does not do yet): {steps}")  # fmt: skip
    return steps


def settled(master: Any, c: dict) -> list[str]:
    """The members of C still flagged pending_restart once Patroni has looked again (up to SETTLE s)."""
    deadline = time.monotonic() + SETTLE
    while True:
        pending = sorted(m for m, s in master.members_state(c).items() if s.get("pending_restart"))
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(1)
