"""Operate this host's PgBouncer: routing to a cluster's leader, RELOAD, PAUSE/RESUME, status.

Routing lives in one file per cluster, included by ``pgbouncer.ini``. Its place, the admin
console's port and socket, PostgreSQL's port and the databases all come from the data model
(``pgcluster.node.routing``): the runner passes them as ``spec``; from the command line they
are derived from this minion's pillar. The highstate, a repoint and the start-up hook write the
file through the same code (the ``pgcluster_routing`` util), so all three always agree. The
admin console is reached over the local socket as the ``postgres`` OS user (peer
authentication), so no admin password is needed on the host.

CLI Example:

.. code-block:: bash

    salt app1 pgbouncer.status
    salt app1 pgbouncer.repoint main 198.18.0.12
    salt app1 pgbouncer.pause main
"""

from __future__ import annotations

import time
from typing import Any

from salt.exceptions import CommandExecutionError

__virtualname__ = "pgbouncer"


def __virtual__():
    if "pgcluster_routing.routing_text" not in __utils__:
        return (False, "pgbouncer: the pgcluster_routing util is missing (run saltutil.sync_utils)")
    if "pgsql.query" not in __salt__:
        return (False, "pgbouncer: the pgsql module is not available (psql missing?)")
    return __virtualname__


def _spec(cluster: str, spec: dict | None = None) -> dict:
    """How this host routes CLUSTER: SPEC when given (by the runner), else derived from pillar."""
    if spec:
        return spec
    routing = __salt__["pgcluster.settings"]()["node"]["routing"]
    if cluster not in routing:
        served = ", ".join(sorted(routing)) or "none"
        raise CommandExecutionError(f"pgbouncer: this host serves no cluster {cluster!r} (it serves: {served})")
    return routing[cluster]


def _any_spec(cluster: str | None = None, spec: dict | None = None) -> dict:
    """The spec of CLUSTER, or of any cluster this host serves (the admin console is shared)."""
    if cluster or spec:
        return _spec(cluster, spec)
    routing = __salt__["pgcluster.settings"]()["node"]["routing"]
    if not routing:
        raise CommandExecutionError("pgbouncer: this host serves no pgcluster cluster")
    return next(iter(routing.values()))


def _admin(command: str, spec: dict, names: bool = True) -> list:
    return __salt__["pgsql.query"](command, dbname="pgbouncer", port=spec["admin_port"],
                                   socket_dir=spec["admin_socket_dir"], names=names, timeout=10)  # fmt: skip


def _databases(rows: list[dict]) -> list[dict]:
    """SHOW DATABASES rows, read by column name (1.18 has ``paused``/``disabled`` near the end;
    later versions add columns)."""
    return [{"name": r.get("name"), "host": r.get("host"), "port": int(r.get("port") or 0),
             "database": r.get("database"), "paused": r.get("paused") == "1", "disabled": r.get("disabled") == "1"}
            for r in rows]  # fmt: skip


def show_databases(cluster: str | None = None, spec: dict | None = None) -> list[dict]:
    """SHOW DATABASES as a list of {'name', 'host', 'port', 'database', 'paused', 'disabled'}.

    CLI Example:

    .. code-block:: bash

        salt app1 pgbouncer.show_databases main
    """
    return _databases(_admin("SHOW DATABASES", _any_spec(cluster, spec)))


def _targets(spec: dict, databases: list[dict]) -> dict[str, str]:
    dbs = set(spec["databases"])
    return {d["name"]: d["host"] for d in databases if d["name"] in dbs}


def targets(cluster: str, spec: dict | None = None) -> dict[str, str]:
    """{database: host} that PgBouncer routes CLUSTER's databases to now.

    CLI Example:

    .. code-block:: bash

        salt app1 pgbouncer.targets main
    """
    s = _spec(cluster, spec)
    return _targets(s, _databases(_admin("SHOW DATABASES", s)))


def routed_timeline(cluster: str, spec: dict | None = None) -> int | None:
    """The Patroni timeline CLUSTER's routing file was written for (None: unknown or no file).

    CLI Example:

    .. code-block:: bash

        salt app1 pgbouncer.routed_timeline main
    """
    s = _spec(cluster, spec)
    return __utils__["pgcluster_routing.routed_timeline"](s)


def write_routing(
    cluster: str, leader: str | None, timeline: int | None = None, spec: dict | None = None, system: str | None = None
) -> bool:
    """Write CLUSTER's routing file (every database to LEADER, an address) atomically, unless the
    fence refuses it (a route for an older TIMELINE of the same SYSTEM than the installed one).
    Returns True when it changed. Raises CommandExecutionError when refused.

    CLI Example:

    .. code-block:: bash

        salt app1 pgbouncer.write_routing main 198.18.0.12
    """
    changed, why = __utils__["pgcluster_routing.install_route"](_spec(cluster, spec), leader, timeline, system)
    if why:
        raise CommandExecutionError(f"pgbouncer: {cluster}: {why}: route left as it is")
    return changed


def reload(cluster: str | None = None, spec: dict | None = None) -> bool:
    """RELOAD: PgBouncer re-reads its configuration. Returns True.

    CLI Example:

    .. code-block:: bash

        salt app1 pgbouncer.reload
    """
    _admin("RELOAD", _any_spec(cluster, spec), names=False)
    return True


def repoint(
    cluster: str,
    leader: str,
    timeline: int | None = None,
    timeout: float = 5,
    resume_paused: bool = False,
    spec: dict | None = None,
    system: str | None = None,
    cut_over: list | None = None,
    replicas: list | None = None,
) -> dict:
    """Route CLUSTER's databases to LEADER (an address) and their ``<db>_ro`` twins to REPLICAS
    (addresses; none: the leader): rewrite, RELOAD, verify with SHOW DATABASES. A database being
    migrated in stays routed to its source until CUT_OVER names it (a migration's cutover); once
    cut over it follows the leader. With RESUME_PAUSED, also RESUME
    any of CLUSTER's databases left paused (the safety net's use). TIMELINE and SYSTEM (Patroni's
    timeline and database system identifier the route was computed for) are the fence: a route
    older than the installed one is refused, and the answer says so (``refused``) with the routes
    left as they are.

    Returns ``{'changed', 'targets', 'seconds', 'resumed'}`` (and ``refused`` when refused).
    Raises CommandExecutionError when PgBouncer does not answer or still routes elsewhere after
    TIMEOUT seconds.

    CLI Example:

    .. code-block:: bash

        salt app1 pgbouncer.repoint main 198.18.0.12
        salt app1 pgbouncer.repoint main 198.18.0.12 cut_over='[shop]'
    """
    start = time.monotonic()
    s = _spec(cluster, spec)
    changed, refused = __utils__["pgcluster_routing.install_route"](s, leader, timeline, system, replicas,
                                                                    cut_over=cut_over or ())  # fmt: skip
    if refused:  # this PgBouncer already routes for a newer timeline: nothing to verify here
        shown = _databases(_admin("SHOW DATABASES", s))
        resumed = _resume(s, shown) if resume_paused else []
        return {"changed": False, "refused": refused, "targets": _targets(s, shown),
                "seconds": round(time.monotonic() - start, 4), "resumed": resumed}  # fmt: skip
    cut = __utils__["pgcluster_routing.routed"](s)["cut"]
    wanted = {db: host for db, (host, _) in __utils__["pgcluster_routing.destinations"](s, leader, cut).items()}
    # RELOAD is synchronous on the admin console: SHOW DATABASES in the same session verifies it.
    reload_and_show = "RELOAD;\nSHOW DATABASES;"
    shown = _databases(_admin(reload_and_show if changed else "SHOW DATABASES", s))
    now = _targets(s, shown)
    deadline = start + timeout
    while now != wanted:
        if time.monotonic() >= deadline:
            raise CommandExecutionError(f"pgbouncer: {cluster} still routes to {now} after RELOAD (wanted {wanted})")
        time.sleep(0.05)
        shown = _databases(_admin(reload_and_show, s))
        now = _targets(s, shown)
    # The verifying SHOW DATABASES says which are paused: their RESUME comes in one more session.
    resumed = _resume(s, shown) if resume_paused else []
    return {"changed": changed, "targets": now, "seconds": round(time.monotonic() - start, 4), "resumed": resumed}


def pause(cluster: str, spec: dict | None = None, databases: list | None = None) -> list[str]:
    """PAUSE every database of CLUSTER, or only DATABASES of it (waits for running queries to
    finish). Returns the databases paused.

    CLI Example:

    .. code-block:: bash

        salt app1 pgbouncer.pause main
        salt app1 pgbouncer.pause main databases='[shop]'
    """
    s = _spec(cluster, spec)
    dbs = [d for d in s["databases"] if databases is None or d in databases]
    for db in dbs:
        _admin(f"PAUSE {db}", s, names=False)
    return dbs


def resume(cluster: str, spec: dict | None = None) -> list[str]:
    """RESUME every paused database of CLUSTER. Returns the databases resumed.

    CLI Example:

    .. code-block:: bash

        salt app1 pgbouncer.resume main
    """
    s = _spec(cluster, spec)
    return _resume(s, _databases(_admin("SHOW DATABASES", s)))


def _resume(spec: dict, shown: list[dict]) -> list[str]:
    """RESUME, in one admin session, every database of SPEC that SHOWN (SHOW DATABASES) says is
    paused. Returns them."""
    dbs = set(spec["databases"])
    paused = [d["name"] for d in shown if d["name"] in dbs and d["paused"]]
    if paused:
        _admin("".join(f"RESUME {db};\n" for db in paused), spec, names=False)
    return paused


def status(cluster: str | None = None) -> dict[str, Any]:
    """{'databases': SHOW DATABASES, 'pools': SHOW POOLS rows} of this PgBouncer.

    CLI Example:

    .. code-block:: bash

        salt app1 pgbouncer.status
    """
    s = _any_spec(cluster)
    return {"databases": _databases(_admin("SHOW DATABASES", s)), "pools": _admin("SHOW POOLS", s)}
