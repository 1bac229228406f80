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
