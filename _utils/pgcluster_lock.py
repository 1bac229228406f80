"""One writer at a time: the per-cluster critical section of the master's routing operations.

Every runner path that changes where PgBouncers route a cluster (follow the leader, reconcile,
switchover, restore) holds the cluster's lock while it looks up the leader and repoints, so no
two of them interleave. Leader lookups triggered by events are coalesced: at most one runs and
one waits per cluster, whoever sends how many events; the others return at once.

The locks are ``flock`` locks on files in the master's cache directory: they hold between the
reactor's worker threads (each opens the file itself) and between processes (``salt-run``), and
a process that dies releases its locks. The holder writes what it does into the file, so that a
refusal can say who holds the lock and since when. Standard library only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time

__virtualname__ = "pgcluster_lock"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
POLL = 0.02
# Routine holders that finish within seconds: an operation asked for meanwhile waits for them.
SHORT = ("reconcile", "follow_leader")
# Locks this process holds. A flock belongs to the open file, which a forked child shares: a child
# outliving its parent's release would keep the lock held. Children close their copies at once.
_HELD: set[Lock] = set()


def _forget_in_child() -> None:
    for lock in list(_HELD):
        if lock.fd is not None:
            with contextlib.suppress(OSError):
                os.close(lock.fd)
            lock.fd = None
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def __virtual__():
    return __virtualname__


def describe(holder: dict) -> str:
    if not holder:
        return "another operation"
    since = time.strftime("%H:%M:%S", time.localtime(holder.get("since", 0)))
    return f"{holder.get('what', 'another operation')} (pid {holder.get('pid')}, since {since})"


def valid_name(name: object) -> bool:
    """Whether NAME can name a cluster's lock (a plain name: no path, at most 63 characters)."""
    return isinstance(name, str) and NAME.fullmatch(name) is not None


class Lock:
    """An exclusive lock on DIRECTORY/NAME.KIND (KIND: ``lock`` for the critical section,
    ``queue`` for the one waiting lookup, ``operation`` for one long operation at a time)."""

    def __init__(self, directory: str, name: str, kind: str = "lock"):
        if not valid_name(name):
            raise ValueError(f"not a cluster name: {str(name)[:80]!r}")
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.path = os.path.join(directory, f"{name}.{kind}")
        self.fd: int | None = None

    def acquire(self, what: str, wait: float = 0.0) -> bool:
        """Take the lock, waiting up to WAIT seconds; True when taken. WHAT is written for others."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(POLL)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"what": what, "pid": os.getpid(), "since": time.time()}).encode(), 0)
        self.fd = fd
        _HELD.add(self)
        return True

    def release(self) -> None:
        _HELD.discard(self)
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None

    def holder(self) -> dict:
        """What the current holder wrote ({} when nobody holds the lock or it wrote nothing yet)."""
        try:
            with open(self.path) as f:
                text = f.read()
        except OSError:
            return {}
        try:
            found = json.loads(text) if text else {}
        except ValueError:
            return {}
        # A holder killed before it released left its words behind: they describe nobody now.
        return found if isinstance(found, dict) and os.path.exists(f"/proc/{found.get('pid')}") else {}

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def take(
    directory: str, name: str, what: str, wait: float = 0.0, wait_for_short: float = 0.0
) -> tuple[Lock | None, str]:
    """Cluster NAME's critical section, taken for WHAT (waiting up to WAIT seconds): (the lock, "")
    or, when it stays held, (None, who holds it). While the holder is one of the short, routine
    operations (SHORT: a reconcile round, an event's lookup) it is waited for up to WAIT_FOR_SHORT
    seconds more. Release the lock (or use it as a context manager) when done."""
    lock = Lock(directory, name)
    if lock.acquire(what, wait):
        return lock, ""
    deadline = time.monotonic() + wait_for_short
    while True:
        holder = lock.holder()
        if holder and not str(holder.get("what", "")).startswith(SHORT):
            return None, describe(holder)
        if lock.acquire(what, 0.2):
            return lock, ""
        if time.monotonic() >= deadline:
            return None, describe(lock.holder())


def operation(directory: str, name: str, what: str) -> tuple[Lock | None, str]:
    """Cluster NAME's lock for one long operation at a time (a rolling restart, a restore: minutes;
    they take the routing lock too, when they reroute): (the lock, "") or (None, who holds it). Not
    waited for."""
    lock = Lock(directory, name, "operation")
    if lock.acquire(what):
        return lock, ""
    return None, describe(lock.holder())


def coalesced(directory: str, name: str, what: str, wait: float) -> tuple[Lock | None, str]:
    """For an event-triggered lookup of cluster NAME: (the critical section, ""), or (None, why)
    when another lookup is already waiting for it (this one is redundant: the waiting one will
    look after whatever holds the section now) or the section stays held for WAIT seconds. At most
    one lookup runs and one waits, however many events arrive."""
    queue = Lock(directory, name, "queue")
    if not queue.acquire(what):
        return None, "coalesced: another lookup of this cluster is already waiting"
    try:
        return take(directory, name, what, wait)
    finally:
        queue.release()
