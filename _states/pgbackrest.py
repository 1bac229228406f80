"""States of the backup host: the stanza exists, archiving works, a full backup exists.

Each reports no change when the repository already is as asked, and changes nothing under
``test=True``. They run on the host that holds the repository (the backup host).
"""

from __future__ import annotations

import time

from salt.exceptions import CommandExecutionError

__virtualname__ = "pgbackrest"
# Errors that mean "not yet" while the cluster bootstraps: no primary found yet (056), a member
# or PostgreSQL not reachable yet (049 host connect, 057 db connect, 039 protocol/TLS peer down),
# the repository's archive lock held for a moment by a member's archive-push (050: its remote
# process on the backup host locks the stanza while PostgreSQL retries archiving at bootstrap).
WAITABLE = {39, 49, 50, 56, 57}


def __virtual__():
    if "pgbackrest.info" not in __salt__:
        return (False, "pgbackrest states: the pgbackrest execution module is not available (pgbackrest installed?)")
    return __virtualname__


def _ret(name: str) -> dict:
    return {"name": name, "result": True, "changes": {}, "comment": ""}


def _until(func, timeout: float, interval: float = 3):
    """FUNC() retried while it raises a WAITABLE pgBackRest error, for at most TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return func()
        except CommandExecutionError as exc:
            if getattr(exc, "code", 0) not in WAITABLE or time.monotonic() + interval > deadline:
                raise
        time.sleep(interval)


def stanza_present(name: str, timeout: float = 600) -> dict:
    """The stanza NAME exists in the repository; created (through the leader) if not.

    Waits up to TIMEOUT seconds for the cluster to have a leader reachable by pgBackRest.
    """
    ret = _ret(name)
    try:
        info = _until(lambda: __salt__["pgbackrest.info"](name), timeout)
        if info["exists"]:
            ret["comment"] = f"stanza {name} exists ({info['status']})"
            return ret
        if __opts__.get("test"):
            ret.update(result=None, comment=f"stanza {name} would be created", changes={"stanza": "created"})
            return ret
        words = _until(lambda: __salt__["pgbackrest.stanza_create"](name), timeout)
    except CommandExecutionError as exc:
        ret.update(result=False, comment=f"stanza {name}: {exc}")
        return ret
    ret.update(comment=words.splitlines()[-1] if words else f"stanza {name} created", changes={"stanza": "created"})
    return ret


def checked(name: str, timeout: float = 300, cluster: str | None = None) -> dict:
    """``pgbackrest check`` passes for stanza NAME: the leader's WAL reaches the repository.

    A verification: never a change. Under ``test=True`` it is not run (it forces a WAL switch).
    Not while CLUSTER runs as a standby cluster of a physical migration's source (no primary to
    check; the cutover moves the stanza to the new system, backs it up and checks it).
    """
    ret = _ret(name)
    if __opts__.get("test"):
        ret["comment"] = "archiving is checked on a real run only"
        return ret
    standby = __salt__["pgcluster.standby_cluster"](cluster) if cluster else {}
    if standby:
        ret["comment"] = (f"stanza {name}: not checked, {cluster} is a standby cluster of {standby['source']} "
                          "(physical migration): its cutover upgrades the stanza and takes a full backup")  # fmt: skip
        return ret
    try:
        _until(lambda: __salt__["pgbackrest.check"](name, timeout=timeout), timeout)
    except CommandExecutionError as exc:
        ret.update(result=False, comment=f"stanza {name}: {exc}")
        return ret
    ret["comment"] = f"stanza {name}: check passed (WAL archiving works)"
    return ret


def backup_present(name: str, kind: str = "full") -> dict:
    """Stanza NAME has at least one good backup of TYPE (full, diff, incr); takes one if not."""
    ret = _ret(name)
    try:
        backups = [b for b in __salt__["pgbackrest.info"](name)["backups"] if b["type"] == kind and not b["error"]]
        if backups:
            ret["comment"] = f"stanza {name}: {len(backups)} {kind} backup(s), newest {backups[-1]['label']}"
            return ret
        if __opts__.get("test"):
            ret.update(result=None, comment=f"a {kind} backup of {name} would be taken", changes={"backup": kind})
            return ret
        new = __salt__["pgbackrest.backup"](name, kind=kind)
    except CommandExecutionError as exc:
        ret.update(result=False, comment=f"stanza {name}: {exc}")
        return ret
    ret.update(comment=f"stanza {name}: {kind} backup {new['label']} taken", changes={"backup": new["label"]})
    return ret
