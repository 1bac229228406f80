"""``salt-run pgcluster.growth``: how fast each database of a cluster grows and when the data
filesystem of its fullest member runs out of room, from the history Prometheus keeps (the
monitoring component), as a table, as data (``--out=json``) and as a PNG chart.

A runner module of its own (the operation has nothing to share with routing); Salt lists its
function under ``pgcluster`` with the others.

CLI Example:

.. code-block:: bash

    salt-run pgcluster.growth main
    salt-run pgcluster.growth main days=90 --out=json
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from salt.exceptions import CommandExecutionError

__virtualname__ = "pgcluster"
UTILS = ("pgcluster_master.model", "pgcluster_growth.report", "pgcluster_chart.line_chart", "pgcluster_model.settings")
POINTS = 240  # samples per series asked of Prometheus, whatever the window
TOP_TABLES = 5
DATA_OUTPUTS = ("json", "yaml", "pprint", "raw", "newline_values_only")


def __virtual__():
    missing = [u for u in UTILS if u not in __utils__]
    if missing:
        return (False, f"pgcluster growth: utils missing: {', '.join(missing)} (run saltutil.sync_utils)")
    return __virtualname__


class GrowthError(CommandExecutionError):
    """The report cannot be made; the message says why."""


def _clean_errors(func):
    """A refusal as one message and a non-zero exit code, not a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except CommandExecutionError as exc:
            __context__["retcode"] = 1
            return {"error": str(exc), "retcode": 1}

    return wrapper


def _prometheus(model: dict) -> tuple[str | None, str]:
    """Base URL of the monitoring host's Prometheus and the CA that signed its certificate."""
    return __utils__["pgcluster_model.prometheus_url"](model), __utils__["pgcluster_model.pki_files"](model)["ca"]


def _range(prom: tuple[str | None, str], query: str, start: float, end: float) -> list[dict]:
    """Prometheus's range query QUERY: [{"metric": labels, "values": [[t, "v"]...]}]."""
    params = {"query": query, "start": start, "end": end, "step": max(15.0, (end - start) / POINTS)}
    return __utils__["pgcluster_master.prometheus"](*prom, "/api/v1/query_range", params)["result"]


def _series(prom, query: str, start: float, end: float, label: str) -> dict[str, list]:
    return {r["metric"].get(label, ""): r["values"] for r in _range(prom, query, start, end)}


def _largest_tables(model: dict, c: dict) -> dict[str, list]:
    """The TOP_TABLES largest tables (with indexes and TOAST) of each database, asked of the
    leader now; {} when no leader answers."""
    cafile = __utils__["pgcluster_model.pki_files"](model)["ca"]
    apis = {m: __utils__["pgcluster_model.api_url"](model, m) for m in c["members"]}
    leader = __utils__["pgcluster_routing.find_leader"](apis, timeout=5, cafile=cafile)
    if not leader:
        return {}
    sql = ("SELECT schemaname || '.' || relname, pg_total_relation_size(relid) FROM pg_stat_user_tables "
           f"ORDER BY 2 DESC LIMIT {TOP_TABLES}")  # fmt: skip
    out = {}
    for db in sorted(c["databases"]):
        out[db] = __utils__["pgcluster_master.call"](
            __opts__, leader["name"], "pgsql.query", sql, dbname=db, port=c["port"], wait=60
        )
    return out


@_clean_errors
def growth(cluster: str, days: Any = 30, min_history_hours: Any = 6, chart: bool = True) -> Any:
    """How CLUSTER grows over the last DAYS days: per database its size now and growth per day,
    the largest tables, WAL written per day, the backup repository's size and growth, and per
    member the data filesystem's size, use, growth and days until full; the fullest member and
    its days until full. With less than MIN_HISTORY_HOURS of history it says so instead of
    forecasting. CHART: also write a PNG (sizes over time, forecast lines dashed) and name it.
    Prints a table; ``--out=json`` returns the data.

    CLI Example:

    .. code-block:: bash

        salt-run pgcluster.growth main
        salt-run pgcluster.growth main days=90 --out=json
    """
    try:
        days, min_hours = float(days), float(min_history_hours)
    except (TypeError, ValueError):
        raise GrowthError(f"days={days!r} and min_history_hours={min_history_hours!r} must be numbers") from None
    if not 0 < days <= 3660 or min_hours < 0:
        raise GrowthError(f"days={days:g} must be between 0 and 3660, min_history_hours={min_hours:g} at least 0")
    model = __utils__["pgcluster_master.model"](__opts__, __utils__["pgcluster_model.settings"])
    c = __utils__["pgcluster_master.cluster"](model, cluster)
    prom = _prometheus(model)
    if not prom[0]:
        raise GrowthError("monitoring is not enabled (pgcluster:monitoring:enabled): no history to report on")
    end = time.time()
    start = end - days * 86400
    sel = f'cluster="{cluster}"'
    members = "|".join(c["members"])
    raw = {
        "cluster": cluster,
        "data_dir": __utils__["pgcluster_model.data_dir"](model, cluster),
        "databases": _series(
            prom, f"max by (datname) (pgcluster_database_size_bytes{{{sel}}})", start, end, "datname"
        ),  # fmt: skip
        "wal": next(iter(_series(prom, f"max(pgcluster_wal_position_bytes{{{sel}}})", start, end, "").values()), []),
        "repository": next(
            iter(
                _series(
                    prom, f'max(pgcluster_pgbackrest_repository_bytes{{host="{c.get("backup")}"}})', start, end, ""
                ).values()
            ),
            [],
        ),  # fmt: skip
        "filesystems": {},
        "tables": _largest_tables(model, c),
    }
    for kind in ("avail", "size"):
        for r in _range(prom, f'node_filesystem_{kind}_bytes{{job="node",host=~"{members}"}}', start, end):
            fs = raw["filesystems"].setdefault(r["metric"]["host"], {}).setdefault(r["metric"]["mountpoint"], {})
            fs[kind] = r["values"]
    rep = __utils__["pgcluster_growth.report"](raw, min_span=min_hours * 3600)
    rep["window_days"] = days
    if chart:
        rep["chart"], rep["chart_legend"] = _chart(cluster, raw, rep, end)
    if __opts__.get("output") in DATA_OUTPUTS:
        return rep
    return __utils__["pgcluster_growth.table"](rep, days)


def _chart(cluster: str, raw: dict, rep: dict, now: float) -> tuple[str, str]:
    """Write the PNG of each database's size over time with its forecast line (dashed, as far
    ahead as the history reaches back); returns its path and which colour is which database."""
    names = [n for n in sorted(raw["databases"]) if raw["databases"][n]]
    series, legend = [], []
    for i, name in enumerate(names):
        points = [(float(t), float(v)) for t, v in raw["databases"][name]]
        series.append({"name": name, "points": points, "colour": i})
        per_day, now_size = rep["databases"][name]["per_day_bytes"], rep["databases"][name]["size_bytes"]
        if per_day is not None and points:
            ahead = max(now - points[0][0], 60.0)  # as far ahead as the history reaches back
            series.append({"name": f"{name} forecast", "colour": i, "dashed": True,
                           "points": [(now, now_size), (now + ahead, now_size + per_day * ahead / 86400)]})  # fmt: skip
        legend.append(f"{__utils__['pgcluster_chart.colour_name'](i)}: {name}")
    directory = os.path.join(__opts__["cachedir"], "pgcluster", "growth")
    os.makedirs(directory, mode=0o750, exist_ok=True)
    path = os.path.join(directory, f"{cluster}.png")
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(__utils__["pgcluster_chart.line_chart"](series, now))
    os.replace(tmp, path)
    return path, ", ".join(legend)
