"""How fast things grow and when they run out of room: a straight-line forecast over a series.

Used by the growth report (``salt-run pgcluster.growth``) on series read from Prometheus
(``__utils__["pgcluster_growth.forecast"]``). Standard library only.

A forecast is the least-squares line through (time, bytes). It is given only when the history
is long enough (MIN_SPAN seconds and MIN_POINTS samples): with less, the answer says so instead
of inventing a trend. ``days_until_full`` is how long until the line reaches CAPACITY (the
filesystem's size, or free space plus what is used now), None when the series does not grow.
"""

from __future__ import annotations

from typing import Any

__virtualname__ = "pgcluster_growth"
DAY = 86400.0
MIN_SPAN = 6 * 3600.0  # six hours of history before any trend is named
MIN_POINTS = 4
# A slope smaller than this (bytes per day) is "flat": noise, not growth.
FLAT_BYTES_PER_DAY = 1.0


def __virtual__():
    return __virtualname__


def _clean(series: list) -> list[tuple[float, float]]:
    """(t, value) pairs sorted by time, without duplicates of a timestamp or non-numbers."""
    out: dict[float, float] = {}
    for point in series or []:
        try:
            t, v = float(point[0]), float(point[1])
        except (TypeError, ValueError, IndexError):
            continue
        if t == t and v == v:  # not NaN
            out[t] = v
    return sorted(out.items())


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of POINTS in value per second (0 for fewer than two distinct times)."""
    n = len(points)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mt) * (v - mv) for t, v in points) / var


def forecast(
    series: list, capacity: float | None = None, min_span: float = MIN_SPAN, min_points: int = MIN_POINTS
) -> dict[str, Any]:
    """The trend of SERIES ([(unix time, bytes)...]) and, with CAPACITY (bytes), when it is reached.

    Returns ``{'now', 'per_day', 'days_until_full', 'points', 'span_days', 'enough_history',
    'why'}``: ``per_day`` (bytes/day, None without enough history), ``days_until_full`` (None when
    not growing, without CAPACITY or without enough history; 0 when already full), ``why`` says in
    words why there is no forecast.
    """
    points = _clean(series)
    span = points[-1][0] - points[0][0] if points else 0.0
    out: dict[str, Any] = {
        "now": points[-1][1] if points else None,
        "per_day": None,
        "days_until_full": None,
        "points": len(points),
        "span_days": round(span / DAY, 3),
        "enough_history": False,
        "why": "",
    }
    if len(points) < min_points or span < min_span:
        out["why"] = (f"too little history: {len(points)} samples over {span / 3600:.1f} h "
                      f"(a forecast needs {min_points} over {min_span / 3600:.0f} h)")  # fmt: skip
        return out
    per_day = slope(points) * DAY
    out.update(per_day=per_day, enough_history=True)
    if capacity is None:
        return out
    if out["now"] >= capacity:
        out["days_until_full"] = 0.0
    elif per_day <= FLAT_BYTES_PER_DAY:
        out["why"] = "not growing" if per_day >= -FLAT_BYTES_PER_DAY else "shrinking"
    else:
        # From the line's value now (not the last, noisy sample) to the capacity.
        t_last = points[-1][0]
        n = len(points)
        line_now = sum(v for _, v in points) / n + slope(points) * (t_last - sum(t for t, _ in points) / n)
        out["days_until_full"] = max(0.0, (capacity - line_now) / per_day)
    return out


# ---- the growth report (salt-run pgcluster.growth) -------------------------------------------
def data_mount(data_dir: str, mountpoints: list[str]) -> str | None:
    """The mountpoint among MOUNTPOINTS that holds DATA_DIR: the longest one that prefixes it."""
    inside = [m for m in mountpoints if data_dir == m or data_dir.startswith(m.rstrip("/") + "/")]
    return max(inside, key=len) if inside else None


def _used(avail: list, size: list) -> list[tuple[float, float]]:
    """Used bytes over time: SIZE - AVAIL at the times both have a sample."""
    sizes = dict(_clean(size))
    return [(t, sizes[t] - a) for t, a in _clean(avail) if t in sizes]


def report(raw: dict, min_span: float = MIN_SPAN) -> dict[str, Any]:
    """The growth report of one cluster from RAW, the series read from Prometheus:

    ``{"cluster", "data_dir", "databases": {name: series}, "wal": series, "repository": series,
    "filesystems": {host: {mountpoint: {"avail": series, "size": series}}}, "tables": {database:
    [[table, bytes]...]}}`` (series: [(unix time, value)...]).

    Returns per database its size now and growth per day, the largest tables, WAL per day, the
    repository's size and growth, per member the data filesystem's size, use, growth and days
    until full, and the fullest member (the fewest days left; without a forecast, the fullest
    now). ``notes`` says what could not be forecast and why.
    """

    def trend(series: list, capacity: float | None = None) -> dict:
        return forecast(series, capacity, min_span=min_span)

    notes: list[str] = []
    dbs = {}
    for name, series in sorted((raw.get("databases") or {}).items()):
        f = trend(series)
        dbs[name] = {"size_bytes": f["now"], "per_day_bytes": f["per_day"]}
    total = trend([(t, v) for t, v in _sum_series(raw.get("databases") or {})])
    wal = trend(raw.get("wal") or [])
    repo = trend(raw.get("repository") or [])
    fss = {}
    for host, mounts in sorted((raw.get("filesystems") or {}).items()):
        mount = data_mount(raw["data_dir"], list(mounts))
        if mount is None:
            notes.append(f"{host}: no filesystem holding {raw['data_dir']} is reported by its node exporter")
            continue
        used = _used(mounts[mount].get("avail") or [], mounts[mount].get("size") or [])
        size = _clean(mounts[mount].get("size") or [])
        capacity = size[-1][1] if size else None
        f = trend(used, capacity)
        fss[host] = {"mountpoint": mount, "size_bytes": capacity, "used_bytes": f["now"],
                     "per_day_bytes": f["per_day"], "days_until_full": f["days_until_full"],
                     "why": f["why"]}  # fmt: skip
    fullest = None
    if fss:
        with_days = [h for h in fss if fss[h]["days_until_full"] is not None]
        if with_days:
            fullest = min(with_days, key=lambda h: fss[h]["days_until_full"])
        else:
            fullest = max(fss, key=lambda h: (fss[h]["used_bytes"] or 0) / (fss[h]["size_bytes"] or 1))
    if not total["enough_history"]:
        notes.append(f"no growth rate yet: {total['why']}")
    elif fullest and fss[fullest]["days_until_full"] is None:
        notes.append(f"no day of full disk: the data filesystem of {fullest} is {fss[fullest]['why'] or 'not growing'}")
    tables = {db: [{"table": t, "bytes": int(b)} for t, b in rows] for db, rows in (raw.get("tables") or {}).items()}
    return {
        "cluster": raw.get("cluster"),
        "history_days": total["span_days"],
        "databases": dbs,
        "total": {"size_bytes": total["now"], "per_day_bytes": total["per_day"]},
        "largest_tables": tables,
        "wal_per_day_bytes": wal["per_day"],
        "repository": {"size_bytes": repo["now"], "per_day_bytes": repo["per_day"]},
        "filesystems": fss,
        "fullest": fullest,
        "days_until_full": fss[fullest]["days_until_full"] if fullest else None,
        "notes": notes,
    }


def _sum_series(by_name: dict[str, list]) -> list[tuple[float, float]]:
    """The sum of several series at the times every one of them has a sample."""
    cleaned = [dict(_clean(s)) for s in by_name.values()]
    if not cleaned:
        return []
    times = set.intersection(*(set(c) for c in cleaned))
    return [(t, sum(c[t] for c in cleaned)) for t in sorted(times)]


def _bytes(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    sign = "+" if signed and value > 0 else ""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(value) >= size:
            return f"{sign}{value / size:.1f} {unit}"
    return f"{sign}{value:.0f} B"


def table(rep: dict, window_days: float) -> str:
    """REP (``report``) as the text an operator reads."""
    out = [f"cluster {rep['cluster']}: growth over the last {_days(window_days)} "
           f"(history found: {_days(rep['history_days'])})", ""]  # fmt: skip
    rows = [("DATABASE", "SIZE", "PER DAY")]
    rows += [(n, _bytes(d["size_bytes"]), _bytes(d["per_day_bytes"], True)) for n, d in rep["databases"].items()]
    rows.append(("(all)", _bytes(rep["total"]["size_bytes"]), _bytes(rep["total"]["per_day_bytes"], True)))
    out += _columns(rows)
    for db, tables in sorted(rep["largest_tables"].items()):
        if tables:
            out += ["", f"LARGEST TABLES OF {db}"] + _columns([(t["table"], _bytes(t["bytes"])) for t in tables])
    repo = rep["repository"]
    repo_line = f"backup repository: {_bytes(repo['size_bytes'])} ({_bytes(repo['per_day_bytes'], True)} per day)"
    out += ["", f"WAL written per day: {_bytes(rep['wal_per_day_bytes'])}", repo_line, ""]
    rows = [("MEMBER", "DATA FILESYSTEM", "SIZE", "USED", "PER DAY", "FULL IN")]
    for host, f in rep["filesystems"].items():
        days = _days(f["days_until_full"]) if f["days_until_full"] is not None else (f["why"] or "-")
        rows.append((host, f["mountpoint"], _bytes(f["size_bytes"]), _bytes(f["used_bytes"]),
                     _bytes(f["per_day_bytes"], True), days))  # fmt: skip
    out += _columns(rows)
    if rep["fullest"]:
        days = rep["days_until_full"]
        when = f"full in {_days(days)}" if days is not None else "no forecast"
        out += ["", f"fullest member: {rep['fullest']} ({when})"]
    out += [f"note: {n}" for n in rep["notes"]]
    if rep.get("chart"):
        out += [f"chart: {rep['chart']} ({rep.get('chart_legend', '')})"]
    return "\n".join(out)


def _days(days: float) -> str:
    """A number of days as people say it: hours under a day, tenths under ten days."""
    if days < 1:
        return f"{days * 24:.1f} hours"
    return f"{days:.1f} days" if days < 10 else f"{days:.0f} days"


def _columns(rows: list[tuple]) -> list[str]:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
