"""The per-cluster critical section of the master's routing operations (pgcluster_lock util):
one holder, a refusal naming it, at most one event lookup running and one waiting."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

import pytest
from pgctest import REPO, load_module

lock = load_module("utils", "pgcluster_lock")


def take(tmp_path, name: str, what: str, wait: float = 0):
    return lock.take(str(tmp_path), name, what, wait)


def test_one_holder_at_a_time_and_the_refusal_names_it(tmp_path):
    held, _ = take(tmp_path, "main", "switchover to pg2")
    with held:
        other, why = take(tmp_path, "main", "restore")
        assert other is None and re.fullmatch(r"switchover to pg2 \(pid \d+, since \d\d:\d\d:\d\d\)", why)
        take(tmp_path, "other", "restore")[0].release()  # another cluster is free
    take(tmp_path, "main", "restore")[0].release()  # released: free again


def test_the_lock_holds_between_threads_and_waits_when_asked(tmp_path):
    held, _ = take(tmp_path, "main", "reconcile")
    threading.Timer(0.3, held.release).start()
    start = time.monotonic()
    got, why = take(tmp_path, "main", "follow_leader", wait=5)
    assert got and why == "" and 0.25 < time.monotonic() - start < 3
    got.release()


def test_a_process_that_dies_releases_its_lock(tmp_path):
    code = (f"import sys; sys.path.insert(0, {str(REPO / '_utils')!r}); import pgcluster_lock as l; "
            f"l.take({str(tmp_path)!r}, 'main', 'killed'); import time; print('held', flush=True); "
            "time.sleep(60)")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert take(tmp_path, "main", "restore")[1].startswith("killed")
    finally:
        proc.kill()
        proc.wait()
    take(tmp_path, "main", "restore")[0].release()


def test_a_flood_of_lookups_runs_one_and_queues_one(tmp_path):
    # 50 event lookups while a switchover holds the section: one waits, 49 return at once.
    section, _ = take(tmp_path, "main", "switchover")
    results: list = []

    def event():
        got, why = lock.coalesced(str(tmp_path), "main", "follow_leader", wait=5)
        results.append(got or why)
        if got:
            time.sleep(0.05)
            got.release()

    threads = [threading.Thread(target=event) for _ in range(50)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    assert len(results) == 49 and all(r.startswith("coalesced") for r in results)  # one waits
    section.release()
    for t in threads:
        t.join(5)
    assert len(results) == 50 and len([r for r in results if not isinstance(r, str)]) == 1


def test_the_waiting_lookup_gives_up_after_its_wait(tmp_path):
    with take(tmp_path, "main", "restore")[0]:
        got, why = lock.coalesced(str(tmp_path), "main", "follow_leader", wait=0.2)
        assert got is None and why.startswith("restore (pid")
        # The queue slot was given back: the next event may wait again.
        assert lock.coalesced(str(tmp_path), "main", "follow_leader", wait=0.1)[1].startswith("restore")


@pytest.mark.parametrize("name", ["../etc/passwd", "", "a/b", "x" * 100, None])
def test_a_cluster_name_that_is_no_name_is_refused(tmp_path, name):
    with pytest.raises(ValueError, match="not a cluster name"):
        take(tmp_path, name, "follow_leader")


def test_a_forked_child_does_not_keep_its_parents_lock(tmp_path):
    # A flock belongs to the open file: a child forked while the lock is held (a Salt process
    # forking a job) would keep it held after the parent's release, as long as the child lives.
    held, _ = take(tmp_path, "main", "reconcile")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child lives on, holding whatever it inherited
        os.close(r)
        os.write(w, b"x")
        time.sleep(3)
        os._exit(0)
    try:
        os.close(w)
        os.read(r, 1)
        held.release()
        got, why = take(tmp_path, "main", "restore")
        assert got is not None, why
        got.release()
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def test_a_switchover_waits_for_a_reconcile_round_but_not_for_a_restore(tmp_path):
    held, _ = take(tmp_path, "main", "reconcile")
    threading.Timer(0.5, held.release).start()
    got, why = lock.take(str(tmp_path), "main", "switchover from pg2", wait_for_short=10)
    assert got is not None, why
    got.release()
    with take(tmp_path, "main", "restore to latest")[0]:
        start = time.monotonic()
        got, why = lock.take(str(tmp_path), "main", "switchover from pg2", wait_for_short=10)
        assert got is None and why.startswith("restore to latest") and time.monotonic() - start < 2


def test_the_words_of_a_holder_that_died_describe_nobody(tmp_path):
    path = tmp_path / "main.lock"
    path.write_text('{"what": "reconcile", "pid": 999999999, "since": 0}')
    assert lock.Lock(str(tmp_path), "main").holder() == {}
