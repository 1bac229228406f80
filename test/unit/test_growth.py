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
