"""The growth forecast (pgcluster_growth util): a straight line through the history, a
days-until-full only when the history says so."""

from __future__ import annotations

import random

import pytest
from pgctest import load_module

DAY = 86400
GB = 10**9


@pytest.fixture
def growth():
    return load_module("utils", "pgcluster_growth")


def hourly(days: float, start: float, per_day: float, noise: float = 0.0, seed: int = 7) -> list:
    rnd = random.Random(seed)
    t0 = 1_790_000_000
    return [[t0 + h * 3600, start + per_day * h / 24 + rnd.uniform(-noise, noise)] for h in range(int(days * 24) + 1)]


def test_linear_growth_gives_its_rate_and_the_day_it_is_full(growth):
    # 10 GB growing 1 GB a day for 10 days (with 50 MB of noise), on a 100 GB filesystem.
    f = growth.forecast(hourly(10, 10 * GB, GB, noise=0.05 * GB), capacity=100 * GB)
    assert f["enough_history"] and f["why"] == ""
    assert f["per_day"] == pytest.approx(GB, rel=0.01)
    assert f["days_until_full"] == pytest.approx(80, abs=0.5)  # 20 GB now, 80 GB to go
    assert f["span_days"] == 10 and f["points"] == 241


def test_a_flat_series_is_not_growing_and_gets_no_date(growth):
    f = growth.forecast(hourly(3, 50 * GB, 0), capacity=100 * GB)
    assert f["enough_history"] and f["per_day"] == pytest.approx(0, abs=1)
    assert f["days_until_full"] is None and f["why"] == "not growing"


def test_a_shrinking_series_gets_no_date(growth):
    f = growth.forecast(hourly(3, 50 * GB, -GB), capacity=100 * GB)
    assert f["per_day"] == pytest.approx(-GB, rel=0.01)
    assert f["days_until_full"] is None and f["why"] == "shrinking"


@pytest.mark.parametrize("series", [[], hourly(0.1, GB, GB), hourly(5 / 24, GB, GB)])
def test_too_little_history_says_so_instead_of_forecasting(growth, series):
    f = growth.forecast(series, capacity=100 * GB)
    assert not f["enough_history"] and f["per_day"] is None and f["days_until_full"] is None
    assert f["why"].startswith("too little history")


def test_already_full_is_zero_days(growth):
    f = growth.forecast(hourly(1, 100 * GB, GB), capacity=100 * GB)
    assert f["days_until_full"] == 0


def test_gaps_duplicates_and_garbage_in_the_series_are_ignored(growth):
    series = hourly(2, 10 * GB, GB)
    messy = [*series[::3], series[5], ["x", 1], [series[7][0], "NaN"], None]
    f = growth.forecast(messy, capacity=20 * GB)
    assert f["per_day"] == pytest.approx(GB, rel=0.001)
    assert f["days_until_full"] == pytest.approx(8, abs=0.05)


# ---- the report (salt-run pgcluster.growth) -----------------------------------------------------
def raw_cluster(days: float, app_per_day: float, fs_per_day: float) -> dict:
    """What the runner reads from Prometheus for the lab cluster: two databases, WAL, the
    repository and each member's filesystems (the data directory's and another)."""
    used = hourly(days, 40 * GB, fs_per_day)
    fs = {
        "/": {"avail": [[t, 100 * GB - v] for t, v in used], "size": [[t, 100 * GB] for t, _ in used]},
        "/boot": {"avail": [[t, GB] for t, _ in used], "size": [[t, 2 * GB] for t, _ in used]},
    }
    return {
        "cluster": "main",
        "data_dir": "/var/lib/postgresql/15/patroni-main",
        "databases": {"app": hourly(days, 10 * GB, app_per_day), "postgres": hourly(days, 8 * 10**6, 0)},
        "wal": hourly(days, 0, 3 * GB),
        "repository": hourly(days, 5 * GB, GB / 2),
        "filesystems": {
            "pg1": fs,
            "pg2": {"/": {k: [[t, v - GB] if k == "avail" else [t, v] for t, v in s] for k, s in fs["/"].items()}},
        },  # fmt: skip
        "tables": {"app": [["public.orders", str(6 * GB)], ["public.items", str(GB)]]},
    }


def test_the_report_names_growth_per_database_and_the_fullest_member(growth):
    rep = growth.report(raw_cluster(10, GB, 2 * GB))
    assert rep["databases"]["app"]["per_day_bytes"] == pytest.approx(GB, rel=0.01)
    assert rep["databases"]["postgres"]["per_day_bytes"] == pytest.approx(0, abs=1)
    assert rep["total"]["size_bytes"] == pytest.approx(20 * GB + 8 * 10**6, rel=0.01)
    assert rep["wal_per_day_bytes"] == pytest.approx(3 * GB, rel=0.01)
    assert rep["repository"]["per_day_bytes"] == pytest.approx(GB / 2, rel=0.01)
    # The data directory's filesystem is "/" (the longest mountpoint holding it), not /boot.
    assert rep["filesystems"]["pg1"]["mountpoint"] == "/"
    # pg2 has 1 GB less free: 100 - 60 - 1 = 39 GB left at 2 GB a day.
    assert rep["fullest"] == "pg2"
    assert rep["days_until_full"] == pytest.approx(19.5, abs=0.2)
    assert rep["largest_tables"]["app"][0] == {"table": "public.orders", "bytes": 6 * GB}
    assert rep["notes"] == []
    text = growth.table(rep, 30)
    assert f"fullest member: pg2 (full in {rep['days_until_full']:.0f} days)" in text and "public.orders" in text
    assert "over the last 30 days (history found: 10 days)" in text
    assert "app" in text and "+1.0 GiB" in growth.table(growth.report(raw_cluster(10, 2**30, 0)), 30)


def test_a_short_history_reports_sizes_but_no_forecast(growth):
    rep = growth.report(raw_cluster(0.2, GB, GB))
    assert rep["databases"]["app"]["size_bytes"] == pytest.approx(10 * GB + GB * 0.2, rel=0.01)
    assert rep["databases"]["app"]["per_day_bytes"] is None and rep["days_until_full"] is None
    assert rep["notes"][0].startswith("no growth rate yet: too little history")
    assert "no forecast" in growth.table(rep, 30)
    # A shorter minimum history (e.g. a lab test) forecasts from what there is.
    assert growth.report(raw_cluster(0.2, GB, GB), min_span=600)["databases"]["app"]["per_day_bytes"] > 0


def test_a_flat_filesystem_gets_no_day_and_says_why(growth):
    rep = growth.report(raw_cluster(10, 0, 0))
    assert rep["days_until_full"] is None
    assert rep["notes"] == [f"no day of full disk: the data filesystem of {rep['fullest']} is not growing"]


def test_data_mount_is_the_longest_mountpoint_holding_the_directory(growth):
    mounts = ["/", "/var", "/var/lib/postgresql", "/var/lib/postgresqlx", "/srv"]
    assert growth.data_mount("/var/lib/postgresql/15/main", mounts) == "/var/lib/postgresql"
    assert growth.data_mount("/var/lib/postgresql", mounts) == "/var/lib/postgresql"
    assert growth.data_mount("/data/pg", ["/srv"]) is None


def test_the_chart_is_a_valid_png_with_the_series_drawn():
    import struct
    import zlib

    chart = load_module("utils", "pgcluster_chart")
    now = 1_790_000_000
    history = [(now - DAY + h * 3600, GB + h * 10**7) for h in range(25)]
    ahead = [(now, 1.24 * GB), (now + DAY, 1.5 * GB)]
    series = [{"name": "app", "points": history}, {"name": "app forecast", "points": ahead, "dashed": True}]
    png = chart.line_chart(series, now, width=400, height=200)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = {}, 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        assert struct.unpack(">I", png[pos + 8 + length : pos + 12 + length])[0] == zlib.crc32(kind + data)
        chunks[kind] = data
        pos += 12 + length
    assert set(chunks) == {b"IHDR", b"IDAT", b"IEND"}
    width, height = struct.unpack(">II", chunks[b"IHDR"][:8])
    pixels = zlib.decompress(chunks[b"IDAT"])
    assert (width, height) == (400, 200) and len(pixels) == height * (1 + width * 3)
    assert bytes(chart.COLOURS[0]) in pixels  # the series' colour is drawn
    assert chart.human(1.5 * 2**30) == "1.5G" and chart.human(1000 * 2**20) == "1.0G"
    assert chart.colour_name(7) == "orange"
    assert chart.relative(-3 * 3600) == "-3.0h" and chart.relative(5 * 86400) == "+5.0d"
