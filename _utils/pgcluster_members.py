"""Taking a member out of a cluster (``salt-run pgcluster.remove_member``): the procedure.

Adding a member needs no procedure: name the host in ``clusters:<name>:members`` and run
highstate on the cluster's hosts. The new host installs PostgreSQL and Patroni, whose replica is
created from the pgBackRest repository (``create_replica_methods``: pgbackrest, then
basebackup) and then streams from the leader; the other members' firewalls and pg_hba, the
PgBouncer hosts and the backup host learn it in the same highstate.

Removing one cannot be left to highstate: a host missing from the model may just as well be a
typo in pillar, and a highstate must not stop a database server on a typo. So the operator takes
the host out of the model first, then names it to the runner, which checks that the cluster
keeps its promise without it (it is not the leader; enough replicas stream for the profile's
synchronous standbys), stops and disables Patroni on it (its PostgreSQL stops with it), waits
until its member key has expired from the DCS (Patroni keeps a stopped member's key until its
ttl runs out) and until the remaining members are healthy, and leaves its data directory in
place. A highstate of the cluster's hosts then closes the firewalls and pg_hba to it.

The same runner takes a host out of the cluster's etcd once the model's ``etcd`` no longer names
it (adding one is again highstate: the ``pgcluster.etcd_joined`` state). Refused until every
host ``etcd`` names is a started member (a replacement joins first); then etcd is stopped and
disabled on the host, removed from the membership, and its data directory moved aside.

Everything it does to the cluster goes through ``master``, the runner's plumbing (Salt jobs on
minions, Patroni's REST API), so that the order of the steps can be read here and tested without
Salt. Standard library only.
"""

from __future__ import annotations

import time
from typing import Any

from salt.exceptions import CommandExecutionError

__virtualname__ = "pgcluster_members"
LEADER_ROLES = ("leader", "primary", "standby_leader", "master")
# After Patroni stops, its member key lives until the ttl runs out; a loop or two on top.
EXPIRY_MARGIN = 15.0
# A replica that reconnects (its walreceiver restarting, a reload) is "running" or "in archive
# recovery" for a few seconds before it streams again: looked at again this long before refusing.
STREAMING_WAIT = 30.0


def __virtual__():
    return __virtualname__


class MembersError(CommandExecutionError):
    """The member cannot be removed; the message says why and what was done already."""


def refusal(c: dict, member: str, state: dict[str, dict], leader: str | None) -> str | None:
    """Why MEMBER, no longer in the model's members, cannot be taken out of cluster C now (None:
    it can). STATE: {member: {role, state}} as Patroni lists them; LEADER: the member that accepts
    writes, if any."""
    return _leader_refusal(c, member, state, leader) or _too_few_replicas(c, member, state, str(leader))


def _leader_refusal(c: dict, member: str, state: dict[str, dict], leader: str | None) -> str | None:
    """Why MEMBER cannot leave cluster C whoever streams: it is the leader, or there is none."""
    name = c["name"]
    if member == leader or state[member].get("role") in LEADER_ROLES:
        return f"{member} is the leader of cluster {name}: switch over first (salt-run pgcluster.switchover {name})"
    if not leader:
        return f"cluster {name} has no leader accepting writes"
    return None


def _too_few_replicas(c: dict, member: str, state: dict[str, dict], leader: str) -> str | None:
    """Why cluster C, without MEMBER, would not keep its profile's synchronous standbys (None: it
    would): fewer replicas than it wants stream from LEADER. Names each replica that does not
    stream with its state."""
    others = {m: s.get("state") for m, s in state.items() if m not in (member, leader)}
    streaming = sorted(m for m, s in others.items() if s == "streaming")
    want = c.get("sync_standbys", 0)
    if len(streaming) >= want:
        return None
    not_streaming = "".join(f"; {m}: {s}" for m, s in sorted(others.items()) if s != "streaming")
    return (f"without {member}, cluster {c['name']} has {len(streaming)} streaming replica(s) "
            f"({', '.join(streaming) or 'none'}{not_streaming}) while its profile {c.get('profile')} wants {want} "
            "synchronous: commits would block")  # fmt: skip


def remove(master: Any, c: dict, member: str, timeout: float = 120) -> dict:
    """Take MEMBER out of cluster C (from the model, defaults filled in): out of Patroni's cluster
    when the model's members no longer name it, out of etcd when the model's etcd hosts no longer
    do. Refused with nothing done when it cannot be. Returns the steps with their timings; raises
    MembersError."""
    t0 = time.monotonic()
    name = c["name"]
    in_members, in_etcd = member in c["members"], member in c["etcd"]
    if in_members and in_etcd:
        raise MembersError(f"{member} is still in clusters:{name}:members in pillar: take it out there (and refresh "
                           "the pillar) first, then run this again: nothing done")  # fmt: skip
    found = [] if in_etcd else master.etcd_members(c)
    etcd = [m for m in found if member in (m["name"], m["host"])]
    if in_members and not etcd:
        raise MembersError(f"{member} is still in clusters:{name}:members in pillar: take it out there (and refresh "
                           "the pillar) first, then run this again: nothing done")  # fmt: skip
    if etcd:
        etcd_refusal(c, member, found)
    steps: dict[str, Any] = {"member": member}
    if not in_members:
        steps.update(_leave_patroni(master, c, member, timeout, t0))
    if steps.get("patroni") == "not a member" and not etcd:
        why = f"{member} is neither in Patroni's cluster {name} nor in its etcd: nothing to do"
        return {"result": True, "member": member, "comment": why}
    if etcd:
        steps["etcd"] = _leave_etcd(master, c, member, etcd[0])
    steps.update(result=True, seconds=round(time.monotonic() - t0, 3))
    if not in_members and steps.get("patroni") != "not a member":
        steps["data_directory"] = f"kept on {member}: delete it by hand when it is no longer wanted"
    steps["next"] = f"highstate the hosts of cluster {name}: their firewalls (and pg_hba) still admit {member}"
    return steps


def etcd_refusal(c: dict, member: str, found: list[dict]) -> None:
    """Raise when MEMBER cannot leave cluster C's etcd now (FOUND: etcd's members): every host the
    model names as etcd host must be a started member first (the replacement joins before the old
    one leaves: the cluster never runs on fewer hosts than the model asks for)."""
    started = {m["name"] for m in found if m["started"]}
    missing = [h for h in c["etcd"] if h not in started]
    if missing:
        raise MembersError(f"{', '.join(missing)} of clusters:{c['name']}:etcd {'is' if len(missing) == 1 else 'are'} "
                           f"not a started etcd member yet: run highstate on {'it' if len(missing) == 1 else 'them'} "
                           f"first, then take {member} out of etcd: nothing done")  # fmt: skip


def _leave_etcd(master: Any, c: dict, member: str, entry: dict) -> str:
    """MEMBER's etcd stopped (so that it does not start again as a removed member), its
    membership removed, its data directory moved aside."""
    try:
        retired = master.etcd_retire(member, c["name"])
    except CommandExecutionError as exc:
        retired = None
        why = str(exc)
    try:
        master.etcd_remove(c, entry["id"])
    except CommandExecutionError as exc:
        raise MembersError(f"{member}: its etcd is {'stopped' if retired else 'not stopped'}, but its removal from "
                           f"etcd failed ({exc}): run this again") from None  # fmt: skip
    if retired is None:
        return (f"removed from etcd (id {entry['id']}); its etcd was not stopped ({why}): stop and disable it there, "
                "and move its data directory aside, before the host comes back")  # fmt: skip
    return f"removed from etcd (id {entry['id']}); etcd {retired['etcd']} on {member}" + (
        f", its data directory {retired['data_directory']}" if "data_directory" in retired else ""
    )


def _leave_patroni(master: Any, c: dict, member: str, timeout: float, t0: float) -> dict:
    """MEMBER out of Patroni's cluster: refused with nothing done when it cannot be; then Patroni
    stopped and disabled on it, its member key expired, the remaining members healthy (each wait
    up to TIMEOUT seconds)."""
    name = c["name"]
    state = master.members_state(c)
    if not state:
        raise MembersError(f"no member of cluster {name} answers: nothing done")
    if member not in state:
        return {"patroni": "not a member"}
    leader = master.find_leader(c)
    why = refusal(c, member, state, leader)
    deadline = time.monotonic() + STREAMING_WAIT
    # Short of streaming replicas only: one reconnecting streams again within seconds.
    while why and not _leader_refusal(c, member, state, leader) and time.monotonic() < deadline:
        time.sleep(1)
        state = master.members_state(c) or state
        if member not in state:
            return {"patroni": "not a member"}
        why = refusal(c, member, state, leader)
    if why:
        raise MembersError(f"{why}: nothing done")
    steps: dict[str, Any] = {"leader": leader, "was": state[member].get("state")}
    try:
        master.stop_patroni(member)
        steps["patroni"] = "stopped and disabled"
    except CommandExecutionError as exc:
        # A dead host: its key expires all the same; said, since its Patroni would rejoin on boot.
        steps["patroni"] = f"not stopped ({exc}): stop and disable it there before the host comes back"
    steps["stopped_seconds"] = round(time.monotonic() - t0, 3)
    deadline = time.monotonic() + float(c["profile_settings"]["dcs"].get("ttl", 30)) + EXPIRY_MARGIN
    while member in master.members_state(c):
        if time.monotonic() >= deadline:
            raise MembersError(f"{member}: {steps['patroni']}, but Patroni still lists it in cluster {name}: "
                               "run this again once its member key has expired")  # fmt: skip
        time.sleep(1)
    steps["gone_seconds"] = round(time.monotonic() - t0, 3)
    current = master.find_leader(c) or leader
    try:
        master.wait_healthy(c, current, None, timeout)
    except CommandExecutionError as exc:
        raise MembersError(f"{member} left cluster {name}, but the remaining members are not healthy: {exc}") from None
    return steps
