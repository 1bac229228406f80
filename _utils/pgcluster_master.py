"""The plumbing every master-side runner shares: the model as the minions last received it,
a function run on one minion, the formula's YAML files. Salt gives utils no ``__utils__``: the
runners pass their ``__opts__`` and the model util's ``settings`` in.

The runners (``_runners/pgcluster.py``, ``_runners/pgcluster_growth.py``) call these through
``__utils__["pgcluster_master.<function>"]``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import requests
import salt.cache
import salt.client
import salt.fileclient
import salt.utils.files
import salt.utils.yaml
from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)
__virtualname__ = "pgcluster_master"
FORMULA = "pgcluster"  # the formula's folder in the master's file roots


def __virtual__():
    return __virtualname__


class PgclusterError(CommandExecutionError):
    """A runner cannot do what was asked; the message says why."""


def formula_yaml(opts: dict, name: str) -> dict:
    """salt://pgcluster/NAME from the master's own file roots."""
    client = salt.fileclient.FSClient(opts)
    try:
        path = client.cache_file(f"salt://{FORMULA}/{name}", "base")
    finally:
        client.destroy()
    if not path:
        raise PgclusterError(f"salt://{FORMULA}/{name} is not in the master's file roots")
    with salt.utils.files.fopen(path) as f:
        return salt.utils.yaml.safe_load(f) or {}


def cached(opts: dict, bank: str, minion: str) -> dict:
    """What the master's cache holds for MINION in BANK (pillar, grains...), {} when nothing."""
    data = salt.cache.factory(opts).fetch(bank, minion)
    return data if isinstance(data, dict) else {}


def model(opts: dict, settings: Callable[..., dict], minion: str | None = None) -> dict:
    """The validated model as MINION (default: any minion that has it) last received its pillar,
    merged over the formula's defaults by SETTINGS (``pgcluster_model.settings``). Raises
    PgclusterError naming the pillar's problems."""
    candidates = [minion] if minion is not None else salt.cache.factory(opts).list("pillar")
    for mid in candidates:
        pillar = cached(opts, "pillar", mid).get(FORMULA) or {}
        if not pillar.get("clusters"):
            continue
        grains = dict(cached(opts, "grains", mid), id=mid)
        try:
            return settings(formula_yaml(opts, "defaults.yaml"), formula_yaml(opts, "osfamilymap.yaml"), pillar, grains)
        except CommandExecutionError as exc:
            raise PgclusterError(str(exc)) from None
    return {"clusters": {}, "hosts": {}}


def cluster(model: dict, name: Any) -> dict:
    """Cluster NAME of MODEL, or PgclusterError naming the clusters there are."""
    c = model["clusters"].get(name) if isinstance(name, str) else None
    if not c:
        known = ", ".join(sorted(model["clusters"])) or "none"
        raise PgclusterError(f"unknown cluster {name!r} (clusters: {known})")
    return c


def call(opts: dict, minion: str, fun: str, *args: Any, wait: float = 120, **kwarg: Any) -> Any:
    """FUN on MINION, waiting up to WAIT seconds; returns its return. Raises PgclusterError when
    the minion does not answer or the function fails (the message is the function's own)."""
    try:
        # A minion busy with a long job (a restore) still answers find_job within seconds.
        with salt.client.LocalClient(mopts=dict(opts, gather_job_timeout=15)) as local:
            ret = local.cmd(minion, fun, list(args), timeout=int(wait), full_return=True, kwarg=kwarg or None)
    except Exception as exc:  # SaltClientError, a timeout...: one message, not a traceback
        raise PgclusterError(f"{minion}: {fun}: {type(exc).__name__}: {exc}") from None
    return _returned(minion, fun, ret.get(minion))


def call_each(opts: dict, minions: list[str], fun: str, *args: Any, wait: float = 10, **kwarg: Any) -> dict:
    """FUN on MINIONS at once, in one job: {minion: its return}. Raises PgclusterError naming the
    first of them (in order) that does not answer or fails: a minion that got the job answers
    within WAIT seconds, and 5 s for Salt's job lookup are enough to call one silent (one at a
    time, each cost 25 s)."""
    try:
        with salt.client.LocalClient(mopts=dict(opts, gather_job_timeout=5)) as local:
            ret = local.cmd(minions, fun, list(args), tgt_type="list", timeout=int(wait), full_return=True,
                            kwarg=kwarg or None)  # fmt: skip
    except Exception as exc:  # SaltClientError, a timeout...: one message, not a traceback
        raise PgclusterError(f"{fun}: {type(exc).__name__}: {exc}") from None
    return {minion: _returned(minion, fun, ret.get(minion)) for minion in minions}


def ping(opts: dict, minions: list[str], wait: float = 10) -> None:
    """test.ping on MINIONS at once (``call_each``). Raises PgclusterError naming the first of
    them that does not answer."""
    call_each(opts, minions, "test.ping", wait=wait)


def _returned(minion: str, fun: str, r: Any) -> Any:
    """MINION's return of FUN from Salt's full return R, or PgclusterError saying why there is none."""
    if not isinstance(r, dict) or str(r.get("ret")).startswith("Minion did not return"):
        why = f": {r['ret']}" if isinstance(r, dict) else ""
        raise PgclusterError(f"{minion} does not answer ({fun}{why})")
    if r.get("retcode", 0) != 0 or r.get("ret") is False:
        why = " ".join(str(r.get("ret")).split()).removeprefix("ERROR: ")
        raise PgclusterError(
            f"{minion}: {why[:400]}" if why.startswith(fun.split(".")[0]) else f"{minion}: {fun}: {why[:400]}"
        )
    return r["ret"]


def prometheus(url: str | None, ca: str, path: str, params: dict, timeout: float = 30) -> Any:
    """GET PATH (e.g. /api/v1/query) of the Prometheus at URL (``pgcluster_model.prometheus_url``),
    its certificate checked against CA; the answer's ``data``. Raises PgclusterError saying why
    there is none."""
    if not url:
        raise PgclusterError("monitoring is not enabled (pgcluster:monitoring:enabled): Prometheus has no history")
    try:
        resp = requests.get(f"{url}{path}", params=params, timeout=timeout, verify=ca)
        body = resp.json()
    except (requests.RequestException, ValueError) as exc:
        raise PgclusterError(f"Prometheus at {url} does not answer: {type(exc).__name__}: {exc}") from None
    if body.get("status") != "success":
        raise PgclusterError(f"Prometheus refused {params.get('query')!r}: {body.get('error', resp.status_code)}")
    return body["data"]


# ---- every PgBouncer of a cluster at once -------------------------------------------------------
# Jobs that may leave a PgBouncer routed or paused otherwise than the safety net last verified.
ROUTE_CHANGING = frozenset({"pgbouncer.pause", "pgbouncer.repoint", "pgbouncer.resume"})


def on_pgbouncers(
    opts: dict, c: dict, fun: str, args: list, timeout: int = 4, kwarg: dict | None = None, verifies: bool = False
) -> dict:
    """FUN on every PgBouncer host of cluster C at once: Salt's full returns by host. A job that
    changes routing or pauses (``ROUTE_CHANGING``) first forgets what the safety net verified of
    C (``verified``), unless VERIFIES (the safety net's own job, which records what it verified).

    The callers hold the cluster's routing lock meanwhile, so a host that is down must cost
    little: Salt waits TIMEOUT seconds for the returns, then asks the silent hosts whether they
    still run the job (a host that does is waited for, however long it takes) and gives each 2 s
    to say so (Salt's default 10 s would come on top). A host that is down costs TIMEOUT + 2 s."""
    hosts = c["pgbouncer"]
    if not hosts:
        return {}
    if fun in ROUTE_CHANGING and not verifies:
        forget_verified(opts, c["name"])
    with salt.client.LocalClient(mopts=dict(opts, gather_job_timeout=2)) as local:
        return local.cmd(hosts, fun, args, tgt_type="list", timeout=timeout, full_return=True, kwarg=kwarg)


def failures(ret: dict, hosts: list[str]) -> dict[str, str]:
    """{host: why} of the HOSTS whose return in RET (``on_pgbouncers``) is missing or failed."""
    bad = {}
    for host in hosts:
        r = ret.get(host)
        if r is None:
            bad[host] = "no answer"
        elif r.get("retcode", 0) != 0:
            bad[host] = str(r.get("ret"))[:300]
    return bad


def repoint_kwarg(
    spec: dict, leader: dict, replicas: list, resume_paused: bool = False, cut_over: list | None = None
) -> dict:
    """The arguments of ``pgbouncer.repoint`` that route a cluster (routing SPEC) to LEADER
    (``find_leader``'s answer; its timeline and system are the fence) and the ``<db>_ro`` reads
    to REPLICAS (``pgcluster_routing.replica_addresses``); CUT_OVER: migrated databases that
    follow the leader from now on."""
    return {"timeline": leader.get("timeline"), "system": leader.get("system"), "resume_paused": resume_paused,
            "spec": spec, "cut_over": cut_over, "replicas": replicas}  # fmt: skip


def repointed(c: dict, ret: dict, started: float, leader: str) -> dict:
    """What a ``pgbouncer.repoint`` on every PgBouncer of C (RET, begun at STARTED) did: how long
    it took and which hosts changed, resumed, refused (the fence), failed."""
    done = {h: r["ret"] for h, r in ret.items() if isinstance(r.get("ret"), dict)}
    refused = {h: r["refused"] for h, r in done.items() if r.get("refused")}
    if refused:  # a newer route is in place there (the fence): not a failure, but worth a line
        log.warning("pgcluster: %s: route to %s refused by %s", c["name"], leader, refused)
    return {
        "seconds": round(time.monotonic() - started, 3),
        "changed": sorted(h for h, r in done.items() if r.get("changed")),
        "resumed": sorted(h for h, r in done.items() if r.get("resumed")),
        "refused": refused,
        "failed": failures(ret, c["pgbouncer"]),
    }


def locks_dir(opts: dict) -> str:
    """Where the master keeps the clusters' routing locks (``pgcluster_lock``)."""
    return os.path.join(opts["cachedir"], "pgcluster", "locks")


# ---- what the safety net verified ---------------------------------------------------------------
# The safety net (``pgcluster.reconcile``) records, per PgBouncer host of a cluster, the route it
# verified there (a digest of the ``pgbouncer.repoint`` it sent) and when. While the leader,
# timeline, replicas and routing spec give the same digest, and no other routing job was sent
# since (``on_pgbouncers`` forgets the record first), the host needs no job: the safety net costs
# a PgBouncer host nothing while the cluster is idle.
def _verified_path(opts: dict, cluster: str) -> str:
    return os.path.join(opts["cachedir"], "pgcluster", "verified", f"{cluster}.json")


def route_digest(args: list, kwarg: dict) -> str:
    """A digest of the route a ``pgbouncer.repoint`` with ARGS and KWARG installs (whether it
    also resumes does not change the route)."""
    route = {k: v for k, v in kwarg.items() if k != "resume_paused"}
    return hashlib.sha256(json.dumps([args, route], sort_keys=True, default=str).encode()).hexdigest()


def _seconds(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def verified(opts: dict, cluster: str) -> dict:
    """{host: {'route': digest, 'at': epoch seconds}, or {'failed': epoch seconds} for a host that
    did not answer} as the safety net last recorded CLUSTER's PgBouncer hosts. A record it cannot
    read, or an entry of another shape (a damaged or hand-edited file), counts as never verified:
    that host is checked."""
    try:
        with salt.utils.files.fopen(_verified_path(opts, cluster)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {h: v for h, v in data.items()
            if isinstance(v, dict) and (isinstance(v.get("route"), str) and _seconds(v.get("at"))
                                        or set(v) == {"failed"} and _seconds(v["failed"]))}  # fmt: skip


def due(known: dict, hosts: list[str], route: str, full_every: float, retry: float) -> list[str]:
    """The HOSTS the safety net must check now, by KNOWN (what ``verified`` read): those whose
    recorded route is not ROUTE or was verified FULL_EVERY seconds ago or more, and those that did
    not answer RETRY seconds ago or more. A time in the future (the clock went back) is as good as none."""
    now = time.time()

    def is_due(host: str) -> bool:
        rec = known.get(host, {})
        if "failed" in rec:
            return not 0 <= now - rec["failed"] < retry
        return rec.get("route") != route or not 0 <= now - rec["at"] < full_every

    return [h for h in hosts if is_due(h)]


def remember_verified(opts: dict, cluster: str, hosts: dict) -> None:
    """Record HOSTS ({host: {'route', 'at'}}) as what the safety net verified of CLUSTER."""
    path = _verified_path(opts, cluster)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with salt.utils.files.fopen(f"{path}.tmp", "w") as f:
        json.dump(hosts, f)
    os.replace(f"{path}.tmp", path)


def forget_verified(opts: dict, cluster: str) -> None:
    """Forget what the safety net verified of CLUSTER: its next round checks every PgBouncer."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_verified_path(opts, cluster))
