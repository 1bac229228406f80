"""Where a cluster's writes go: find Patroni's leader, and write PgBouncer's routing file.

The one leader finder of pgcluster, used by the runners, the execution and state modules (Salt
loads this file as a custom util: ``__utils__["pgcluster_routing.find_leader"]``) and by the
PgBouncer start-up hook, which imports the same file on hosts where only the standard library
is at hand. Standard library only, on purpose.

A leader is the member that Patroni names as leader (GET /cluster, asked of every member at
once) *and* whose PostgreSQL has left recovery: Patroni answers 200 on GET /primary as soon as
it holds the leader lock, while PostgreSQL may still be promoting; the body's ``role`` comes
from ``pg_is_in_recovery()`` on the node itself.
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import json
import os
import re
import ssl
import tempfile
import urllib.error
import urllib.request
from typing import Any

__virtualname__ = "pgcluster_routing"
PRIMARY_ROLES = ("primary", "master")  # Patroni 4.x, 3.x
LEADER_ROLES = ("leader", "standby_leader")
# The routing file's format (one per cluster, included by pgbouncer.ini). The header says which
# leader, Patroni timeline and database system the route was computed for (the fence) and, while
# databases are being migrated in, which of them were cut over from their source to the leader.
HEADER = (
    "; Managed by Salt (pgcluster): routing of cluster {cluster}; leader {leader}; timeline {timeline}; "
    "system {system}{cut}.\n[databases]\n"
)
HEADER_FIELD = re.compile(r"; (leader|timeline|system|cut over) ([^;\s]+?)\.?(?=;|$)")
LINE = "{name} = host={host} port={port} dbname={db}\n"
# A replica further behind than this (bytes of WAL, Patroni's lag) serves no reads.
REPLICA_MAX_LAG = 16 * 1024 * 1024
NOWHERE = ("127.0.0.1", 1)  # no leader: clients get an error, never a write on a former leader


def __virtual__():
    return __virtualname__


def _context(cafile: str | None, certfile: str | None, keyfile: str | None) -> ssl.SSLContext | None:
    if not cafile and not certfile:
        return None
    ctx = ssl.create_default_context(cafile=cafile)
    if certfile:
        ctx.load_cert_chain(certfile, keyfile)
    return ctx


def get_json(url: str, timeout: float, context: ssl.SSLContext | None = None) -> tuple[int, Any]:
    """(HTTP status, parsed JSON body or None) of GET URL; status 0 when there is no answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:  # 503 and friends still carry Patroni's JSON
        status, raw = exc.code, exc.read()
    except (OSError, ValueError):
        return 0, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


def accepts_writes(status: int, body: Any) -> bool:
    """True when a GET /primary answer says: Patroni leads and PostgreSQL is out of recovery."""
    return status == 200 and isinstance(body, dict) and body.get("role") in PRIMARY_ROLES


def _named(views: list, apis: dict[str, str]) -> set[str]:
    """The members of APIS that any of VIEWS (GET /cluster bodies) names leader."""
    return {
        m.get("name")
        for view in views
        if isinstance(view, dict)
        for m in view.get("members") or []
        if m.get("role") in LEADER_ROLES and m.get("name") in apis
    }


def _views(pool: concurrent.futures.Executor, apis: dict[str, str], timeout: float, ctx: Any) -> dict[str, Any]:
    """{member: its GET /cluster body, None when it did not answer}, all asked at once.

    Waits for every member, except that it stops as soon as more than half of the members have
    answered and every answer so far names the same one leader (Patroni's members read the leader
    from the DCS): a member still silent then (a crashed host answers no SYN and would cost the
    whole TIMEOUT) could only name a leader that it alone believes in, and the majority's leader
    still has to accept writes itself."""
    asked = {pool.submit(get_json, f"{api}/cluster", timeout, ctx): m for m, api in apis.items()}
    views: dict[str, Any] = {}
    for done in concurrent.futures.as_completed(asked):
        views[asked[done]] = done.result()[1]
        answered = [v for v in views.values() if isinstance(v, dict)]
        if 2 * len(answered) > len(apis) and len(_named(answered, apis)) == 1:
            break
    return views


def find_leader(
    apis: dict[str, str],
    timeout: float = 2.0,
    cafile: str | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> dict | None:
    """The leader among APIS ({member: REST API base URL}) that accepts writes, or None.

    Every member is asked GET /cluster at once (``_views``: a crashed member costs at most
    TIMEOUT, nothing once a majority agrees); each member named leader is asked GET /primary;
    exactly one must accept writes. Returns ``{"name", "api", "timeline", "system", "replicas"}``
    (timeline and database system identifier from the leader's own PostgreSQL; the members that
    may serve reads, ``readable``).
    """
    ctx = _context(cafile, certfile, keyfile)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(len(apis), 1))
    try:
        views = _views(pool, apis, timeout, ctx)
        names = sorted(_named(list(views.values()), apis))
        answers = list(pool.map(lambda n: get_json(f"{apis[n]}/primary", timeout, ctx), names))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # a silent member's thread ends at its TIMEOUT
    leaders = [(n, body) for n, (status, body) in zip(names, answers, strict=True) if accepts_writes(status, body)]
    if len(leaders) != 1:
        return None
    name, body = leaders[0]
    own = views.get(name)  # the leader's own view of its replicas
    return {
        "name": name,
        "api": apis[name],
        "timeline": body.get("timeline"),
        "system": body.get("database_system_identifier"),
        "replicas": readable(
            own if isinstance(own, dict) else next((v for v in views.values() if isinstance(v, dict)), {})
        ),
    }


def standby_leader(apis: dict[str, str], timeout: float = 2.0, cafile: str | None = None) -> str | None:
    """The member of APIS that the members name standby leader (a Patroni standby cluster, as a
    physical migration runs one until its cutover), None when none does or they disagree."""
    ctx = _context(cafile, None, None)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(len(apis), 1))
    try:
        views = _views(pool, apis, timeout, ctx)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    named = {m.get("name") for v in views.values() if isinstance(v, dict) for m in v.get("members") or []
             if m.get("role") == "standby_leader" and m.get("name") in apis}  # fmt: skip
    return named.pop() if len(named) == 1 else None


def readable(view: dict) -> list[str]:
    """The members of a GET /cluster VIEW that may serve reads: replicas streaming at most
    REPLICA_MAX_LAG bytes behind (sorted names)."""
    return sorted(m["name"] for m in view.get("members") or [] if m.get("name") and m.get("role") not in LEADER_ROLES
                  and m.get("state") == "streaming" and isinstance(m.get("lag"), int)
                  and m["lag"] <= REPLICA_MAX_LAG)  # fmt: skip


def destinations(spec: dict, leader: str | None, cut: list[str] | tuple = ()) -> dict[str, tuple[str, int]]:
    """{database: (host, port)} of SPEC's cluster: a database being migrated in (``sources``) goes
    to its source until it is CUT over, every other one to LEADER (an address; None: nowhere)."""
    sources = spec.get("sources") or {}
    to_leader = (leader, spec["port"]) if leader else NOWHERE
    return {db: (sources[db]["address"], sources[db]["port"]) if db in sources and db not in cut else to_leader
            for db in spec["databases"]}  # fmt: skip


def routing_text(
    spec: dict,
    leader: str | None,
    timeline: int | None = None,
    replicas: list[str] | None = None,
    system: str | None = None,
    cut: list[str] | tuple = (),
) -> str:
    """The routing file of SPEC's cluster (``destinations``); with a leader, ``<db>_ro`` of each
    database the leader serves to one of REPLICAS (addresses; the lowest: every PgBouncer picks
    the same, and PgBouncer 1.18 cannot check TLS with a list of hosts), or to the leader when
    there is none; the header names LEADER, TIMELINE, SYSTEM and the migrated
    databases CUT over."""
    cut = sorted(set(cut) & set(spec.get("sources") or {}))
    text = HEADER.format(cluster=spec["cluster"], leader=leader or "none", timeline=timeline or "unknown",
                         system=system or "unknown",
                         cut=f"; cut over {','.join(cut) or 'none'}" if spec.get("sources") else "")  # fmt: skip
    for db, (host, port) in destinations(spec, leader, cut).items():
        text += LINE.format(name=db, db=db, host=host, port=port)
        if leader and host == leader:  # reads: a replica, else the leader itself
            text += LINE.format(name=f"{db}_ro", db=db, host=min(replicas or [leader]), port=port)
    return text


def write_routing(spec: dict, text: str) -> bool:
    """Write TEXT to SPEC's routing file atomically (0644: no secret in it). True when it changed."""
    path = spec["path"]
    try:
        with open(path) as f:
            if f.read() == text:
                return False
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".routing-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return True


def routed(spec: dict) -> dict | None:
    """What SPEC's routing file was written for, from its header: ``{"leader", "timeline",
    "system", "cut"}`` (None for what it does not say; ``cut``: the migrated databases cut over),
    or None when there is no file."""
    try:
        with open(spec["path"]) as f:
            first = f.readline().strip()
    except OSError:
        return None
    fields = {k: (None if v in ("unknown", "none") else v) for k, v in HEADER_FIELD.findall(first)}
    timeline = fields.get("timeline")
    return {
        "leader": fields.get("leader"),
        "timeline": int(timeline) if timeline and timeline.isdigit() else None,
        "system": fields.get("system"),
        "cut": [d for d in (fields.get("cut over") or "").split(",") if d],
    }


def routed_timeline(spec: dict) -> int | None:
    """The timeline SPEC's routing file was written for, from its header (None: unknown, no file)."""
    return (routed(spec) or {}).get("timeline")


def refusal(current: dict | None, leader: str | None, timeline: int | None, system: str | None) -> str | None:
    """Why a route to LEADER computed for TIMELINE of SYSTEM must not replace CURRENT (``routed``),
    or None when it may. The fence: a route older than the installed one is refused; a route for
    the same timeline may only repeat the leader or send clients nowhere. A route without a
    timeline (an operator's, a restore's) and a route for another database system (a cluster
    built anew) always pass."""
    if timeline is None or not current or current.get("timeline") is None:
        return None
    # From a command line both may come as numbers or strings (a system identifier parses as an int).
    timeline, system = int(timeline), (str(system) if system is not None else None)
    if system and current.get("system") and system != current["system"]:
        return None
    if timeline < current["timeline"]:
        return f"route for timeline {timeline} is older than the installed one (timeline {current['timeline']})"
    if timeline == current["timeline"] and leader and current.get("leader") not in (None, leader):
        return f"timeline {timeline} already routes to {current['leader']}, not {leader}"
    return None


def install_route(
    spec: dict,
    leader: str | None,
    timeline: int | None = None,
    system: str | None = None,
    replicas: list[str] | None = None,
    cut_over: list[str] | tuple = (),
) -> tuple[bool, str | None]:
    """Write the route to LEADER unless the fence refuses it. Returns (changed, why refused).
    Migrated databases cut over stay so; CUT_OVER adds databases to them (a migration's cutover).

    Compare-then-write is atomic among writers that hold SPEC's lock file (``<path>.lock``,
    flock): the master's repoint, highstate and the start-up hook on this host."""
    fd = os.open(f"{spec['path']}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        current = routed(spec)
        why = refusal(current, leader, timeline, system)
        if why:
            return False, why
        cut = [*(current or {}).get("cut", []), *cut_over]
        return write_routing(spec, routing_text(spec, leader, timeline, replicas, system, cut)), None
    finally:
        os.close(fd)


def route_to_leader(spec: dict, timeout: float = 2.0) -> str | None:
    """Route SPEC's cluster to the leader Patroni reports now (nowhere without one); returns its address."""
    apis = {m: v["api"] for m, v in spec["members"].items()}
    leader = find_leader(apis, timeout=timeout, cafile=spec.get("cafile"))
    if leader is None:  # nowhere, whatever was installed: never a former leader after a crash
        install_route(spec, None)
        return None
    address = spec["members"][leader["name"]]["address"]
    install_route(spec, address, leader["timeline"], leader["system"], replica_addresses(spec, leader))
    return address


def replica_addresses(spec: dict, leader: dict) -> list[str]:
    """The addresses of LEADER's (``find_leader``) readable replicas among SPEC's members."""
    return [spec["members"][n]["address"] for n in leader.get("replicas") or [] if n in spec["members"]]
