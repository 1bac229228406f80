"""``salt-run migrate.<step> <cluster>``: move an existing PostgreSQL server into a cluster, as
declared in the cluster's ``migrate`` pillar block (source minion, port, mode, databases).

``check`` is the preflight: it changes nothing and reports, one line per problem, everything that
stands in the way (judged by the ``pgcluster_migrate`` util from what the source says of itself,
``pgsql.survey``, and what every member offers, ``pgsql.room``).

CLI Example:

.. code-block:: bash

    salt-run migrate.check main
"""

from __future__ import annotations

from typing import Any

from salt.exceptions import CommandExecutionError

__virtualname__ = "migrate"
UTILS = (
    "pgcluster_master.model",
    "pgcluster_master.guarded",
    "pgcluster_migrate.problems",
    "pgcluster_model.settings",
    "pgcluster_routing.find_leader",
)
# How long a minion may take to survey its server (sizes of every database and table).
SURVEY_WAIT = 120


def __virtual__():
    missing = [u for u in UTILS if u not in __utils__]
    if missing:
        return (False, f"migrate: utils missing: {', '.join(missing)} (run saltutil.sync_utils)")
    return __virtualname__


class MigrateError(CommandExecutionError):
    """The migration step cannot run; the message says why."""


def _shared(fun: str, *args: Any, **kwargs: Any) -> Any:
    """FUN of the pgcluster_master util (the plumbing all runners share), its errors as ours."""
    try:
        return __utils__[f"pgcluster_master.{fun}"](*args, **kwargs)
    except CommandExecutionError as exc:
        raise MigrateError(str(exc)) from None


def _plan(cluster: Any) -> tuple[dict, dict, dict]:
    """The model, CLUSTER in it and its migrate block with defaults; MigrateError when there is
    no such cluster or it declares no migration."""
    model = _shared("model", __opts__, __utils__["pgcluster_model.settings"])
    c = _shared("cluster", model, cluster)
    m = c.get("migrate")
    if not m:
        raise MigrateError(f"cluster {cluster} declares no migration (pgcluster:clusters:{cluster}:migrate: "
                           "source, port, mode, databases; see pillar.example)")  # fmt: skip
    return model, c, {"port": 5432, "databases": [], **m}


def _reaches(minion: str, address: str, port: int) -> str | None:
    """None when MINION opens a TCP connection to ADDRESS:PORT, else why not."""
    try:
        ret = _shared("call", __opts__, minion, "network.connect", address, port=port, timeout=5, wait=30)
    except MigrateError as exc:
        return str(exc)
    return None if ret.get("result") else ret.get("comment") or "connection refused"


def _target(model: dict, c: dict, problems: list[str]) -> dict:
    """What CLUSTER's members offer (``pgsql.room`` on each, user tables on the leader), in the
    form ``pgcluster_migrate.problems`` wants; a member that does not answer is a problem."""
    rooms: dict[str, dict] = {}
    for member in c["members"]:
        try:
            rooms[member] = _shared("call", __opts__, member, "pgsql.room", port=c["port"], wait=60)
        except MigrateError as exc:
            problems.append(f"member {member} does not answer: {exc}")
    if not rooms:
        raise MigrateError(f"no member of {c['name']} answers: nothing to judge the migration against")
    apis = {m: __utils__["pgcluster_model.api_url"](model, m) for m in c["members"]}
    cafile = __utils__["pgcluster_model.pki_files"](model)["ca"]
    leader = __utils__["pgcluster_routing.find_leader"](apis, timeout=5, cafile=cafile)
    user_tables: dict[str, int] = {}
    if leader is None:
        problems.append(f"{c['name']} has no leader that accepts writes: whether it holds data is unknown")
    else:
        found = _shared("call", __opts__, leader["name"], "pgsql.survey", port=c["port"], wait=SURVEY_WAIT)
        user_tables = {d: facts["tables"] for d, facts in found["databases"].items()}
    first = next(iter(rooms.values()))
    return {
        "major": first["major"],
        "extensions": sorted(set.intersection(*(set(r["extensions"]) for r in rooms.values()))),
        "locales": sorted(set.intersection(*(set(r["locales"]) for r in rooms.values()))),
        "free": {m: r["free"] for m, r in rooms.items()},
        "user_tables": user_tables,
        "leader": leader["name"] if leader else None,
    }


def _check(cluster: Any) -> dict:
    model, c, m = _plan(cluster)
    source, port = m["source"], m["port"]
    c = dict(c, name=cluster)
    try:
        survey = _shared("call", __opts__, source, "pgsql.survey", port=port, wait=SURVEY_WAIT)
    except MigrateError as exc:
        raise MigrateError(f"source {source}, port {port}: {exc}") from None
    problems: list[str] = []
    target = _target(model, c, problems)
    problems += __utils__["pgcluster_migrate.problems"](cluster, m, survey, target)
    # Every member (replication, subscriptions) and every PgBouncer host (routing to the source
    # until the cutover) must reach the source's PostgreSQL over the network.
    address = model["hosts"][source]
    for host in dict.fromkeys(c["members"] + c.get("pgbouncer", [])):
        why = _reaches(host, address, port)
        if why:
            problems.append(f"{host} cannot reach {source}'s PostgreSQL at {address}:{port} ({why}): set "
                            "listen_addresses there (a restart) and open the port to the cluster's hosts")  # fmt: skip
    dbs = m["databases"] or sorted(survey["databases"])
    ret = {
        "cluster": cluster,
        "source": f"{source}:{port}",
        "mode": m["mode"],
        "version": survey["version"],
        "system": survey["system"],
        "databases": {d: survey["databases"][d] for d in dbs if d in survey["databases"]},
        "size_bytes": survey["size"],
        "target": {"major": target["major"], "leader": target["leader"], "free_bytes": target["free"]},
        "problems": problems,
        "ready": not problems,
    }
    if problems:
        __context__["retcode"] = 1
    return ret


def check(cluster: str) -> dict:
    """The preflight of migrating CLUSTER's ``migrate`` source into it: changes nothing, reports
    the source (version, system identifier, each database moved with its size, encoding, locale,
    extensions, tables without a key, unlogged tables, large objects), the members' room, and
    ``problems``: one line per thing that stands in the way (source unreachable as a minion, over
    PostgreSQL or from a member or PgBouncer host; major version; ``wal_level``; replication slots
    and senders; extensions or locales the members lack; a cluster already holding data; free
    disk on each member against the source's size). Exits non-zero when there is a problem.

    CLI Example:

    .. code-block:: bash

        salt-run migrate.check main
        salt-run migrate.check main --out=json
    """
    return __utils__["pgcluster_master.guarded"](__context__, _check, cluster)
