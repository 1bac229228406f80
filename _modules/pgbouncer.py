"""Operate this host's PgBouncer: routing to a cluster's leader, RELOAD, PAUSE/RESUME, status.

Routing lives in one file per cluster (``/etc/pgbouncer/routing-<cluster>.ini``), included by
``pgbouncer.ini``: the highstate and a repoint write it through the same function, so both
always agree. The admin console is reached over the local socket as the ``postgres`` OS user
(peer authentication), so no admin password is needed on the host.

CLI examples::

    salt app1 pgbouncer.status
    salt app1 pgbouncer.repoint main 198.18.0.12
    salt app1 pgbouncer.pause main
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

from salt.exceptions import CommandExecutionError

__virtualname__ = "pgbouncer"
CONF_DIR = "/etc/pgbouncer"
PORT = 6432


def __virtual__():
    return __virtualname__


def _cluster(name: str) -> dict:
    c = (__pillar__.get("pgcluster", {}).get("clusters", {}) or {}).get(name)
    if not c:
        raise CommandExecutionError(f"pgbouncer: no cluster {name!r} in pillar pgcluster:clusters")
    return c


def routing_path(cluster: str) -> str:
    """Path of CLUSTER's routing file."""
    return os.path.join(CONF_DIR, f"routing-{cluster}.ini")


# The routing file's format, also used by pgbouncer-route-at-start (through routing_spec).
HEADER = "; Managed by Salt (pgcluster): routing of cluster {cluster}; leader {leader}.\n[databases]\n"
LINE = "{name} = host={leader} port={port} dbname={db}\n"


def routing_text(cluster: str, leader: str, port: int, databases: list[str], replicas: list[str] | None = None) -> str:
    """The routing file: every database of CLUSTER to LEADER, ``<db>_ro`` to REPLICAS when given."""
    text = HEADER.format(cluster=cluster, leader=leader)
    for db in sorted(databases):
        text += LINE.format(name=db, db=db, leader=leader, port=port)
        if replicas:
            text += LINE.format(name=f"{db}_ro", db=db, leader=",".join(replicas), port=port)
    return text


def routing_spec(cluster: str) -> dict:
    """What pgbouncer-route-at-start needs to route CLUSTER when PgBouncer starts (no secret)."""
    model = __pillar__.get("pgcluster", {})
    c = _cluster(cluster)
    port = (model.get("patroni") or {}).get("restapi_port", 8008)
    return {
        "apis": [f"http://{model['hosts'][m]}:{port}" for m in c["members"]],
        "hosts": {m: model["hosts"][m] for m in c["members"]},
        "port": int(c.get("port", 5432)),
        "databases": sorted(c.get("databases", {}) or {}),
        "header": HEADER.replace("{cluster}", cluster),
        "line": LINE,
    }


def _admin(command: str) -> list[list[str]]:
    return __salt__["pgsql.query"](command, dbname="pgbouncer", port=PORT)


def _databases(rows: list[list[str]]) -> list[dict]:
    out = []
    for row in rows:
        # name, host, port, database, force_user, pool_size, min_pool_size, reserve_pool, pool_mode,
        # max_connections, current_connections, paused, disabled (PgBouncer 1.18)
        out.append({"name": row[0], "host": row[1], "port": int(row[2] or 0), "database": row[3],
                    "paused": row[11] == "1", "disabled": row[12] == "1"})  # fmt: skip
    return out


def show_databases() -> list[dict]:
    """SHOW DATABASES as a list of {'name', 'host', 'port', 'database', 'paused', 'disabled'}."""
    return _databases(_admin("SHOW DATABASES"))


def _targets(cluster: str, databases: list[dict]) -> dict[str, str]:
    dbs = set(_cluster(cluster).get("databases", {}) or {})
    return {d["name"]: d["host"] for d in databases if d["name"] in dbs}


def targets(cluster: str) -> dict[str, str]:
    """{database: host} that PgBouncer routes CLUSTER's databases to now."""
    return _targets(cluster, show_databases())


def write_routing(cluster: str, leader: str, replicas: list[str] | None = None) -> bool:
    """Write CLUSTER's routing file atomically (0644: no secret in it). Returns True when it changed."""
    c = _cluster(cluster)
    text = routing_text(cluster, leader, int(c.get("port", 5432)), list(c.get("databases", {}) or {}), replicas)
    path = routing_path(cluster)
    try:
        with open(path) as f:
            if f.read() == text:
                return False
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(dir=CONF_DIR, prefix=".routing-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return True


def reload() -> bool:
    """RELOAD: PgBouncer re-reads its configuration. Returns True."""
    _admin("RELOAD")
    return True


def repoint(
    cluster: str, leader: str, replicas: list[str] | None = None, timeout: float = 5, resume_paused: bool = False
) -> dict:
    """Route every database of CLUSTER to LEADER (an address): rewrite, RELOAD, verify with SHOW DATABASES.
    With RESUME_PAUSED, also RESUME any of CLUSTER's databases left paused (the safety net's use).

    Returns ``{'changed', 'targets', 'seconds', 'resumed'}``. Raises CommandExecutionError when
    PgBouncer does not answer or still routes elsewhere after TIMEOUT seconds.
    """
    start = time.monotonic()
    changed = write_routing(cluster, leader, replicas)
    # RELOAD is synchronous on the admin console: SHOW DATABASES in the same session verifies it.
    reload_and_show = "RELOAD;\nSHOW DATABASES;"
    now = _targets(cluster, _databases(_admin(reload_and_show if changed else "SHOW DATABASES")))
    deadline = start + timeout
    while not now or any(h != leader for h in now.values()):
        if time.monotonic() >= deadline:
            raise CommandExecutionError(f"pgbouncer: {cluster} still routes to {now} after RELOAD (wanted {leader})")
        time.sleep(0.05)
        now = _targets(cluster, _databases(_admin(reload_and_show)))
    resumed = resume(cluster) if resume_paused else []
    return {"changed": changed, "targets": now, "seconds": round(time.monotonic() - start, 4), "resumed": resumed}


def pause(cluster: str) -> list[str]:
    """PAUSE every database of CLUSTER (waits for running queries to finish). Returns the databases."""
    dbs = sorted(_cluster(cluster).get("databases", {}) or {})
    for db in dbs:
        _admin(f"PAUSE {db}")
    return dbs


def resume(cluster: str) -> list[str]:
    """RESUME every paused database of CLUSTER. Returns the databases resumed."""
    dbs = set(_cluster(cluster).get("databases", {}) or {})
    done = []
    for d in show_databases():
        if d["name"] in dbs and d["paused"]:
            _admin(f"RESUME {d['name']}")
            done.append(d["name"])
    return done


def status() -> dict[str, Any]:
    """{'databases': SHOW DATABASES, 'pools': SHOW POOLS rows} of this PgBouncer."""
    return {"databases": show_databases(), "pools": _admin("SHOW POOLS")}
