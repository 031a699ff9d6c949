"""demand: the daily grid, the weekday index with shrinkage, level and damped trend, the seasonal naive baseline,
MAPE / WAPE and the purchase patterns, each against hand-computed values."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from conftest import spec_frame
from shopmine.conf import DemandConf
from shopmine.apps.demand import (
    daily_units,
    errors,
    fit,
    forecast,
    last_complete_day,
    purchase_patterns,
    seasonal_naive,
)
from shopmine.io.tables import SILVER_EVENTS

MONDAY = date(2025, 11, 3)


def _buys(spark, per_day: dict[str, list[int]], start: date = MONDAY, **extra):
    rows = []
    for cat, units in per_day.items():
        for i, u in enumerate(units):
            if u:
                at = datetime.combine(start + timedelta(days=i), datetime.min.time()) + timedelta(hours=10)
                rows.append({"event_id": f"{cat}{i}", "user_id": "u", "item_id": "i", "category_id": cat,
                             "event_type": "purchase", "quantity": u, "event_time": at, "event_date": at.date(),
                             **extra})
    return spec_frame(spark, SILVER_EVENTS, rows)


def test_daily_grid_fills_missing_days_and_drops_bots(spark):
    events = _buys(spark, {"a": [2, 0, 3], "b": [0, 0, 1]}).unionByName(
        _buys(spark, {"a": [0, 50, 0]}, is_bot=True))
    got = {(r["category_id"], r["day"]): r["units"] for r in daily_units(events).collect()}
    d = [MONDAY + timedelta(days=i) for i in range(3)]
    assert got == {("a", d[0]): 2.0, ("a", d[1]): 0.0, ("a", d[2]): 3.0,
                   ("b", d[0]): 0.0, ("b", d[1]): 0.0, ("b", d[2]): 1.0}


def test_a_partly_covered_last_day_is_left_out(spark):
    events = _buys(spark, {"a": [2, 3]})  # purchases at 10:00: the second day's data stops mid-day
    assert last_complete_day(events) == MONDAY
    late = spec_frame(spark, SILVER_EVENTS, [{"event_id": "v", "user_id": "u", "item_id": "i", "event_type": "view",
                                              "event_time": datetime(2025, 11, 4, 23, 10),
                                              "event_date": date(2025, 11, 4)}])
    assert last_complete_day(events.unionByName(late)) == date(2025, 11, 4)  # views into its last hour: complete
    assert {r["day"] for r in daily_units(events, MONDAY).collect()} == {MONDAY}


def test_weekday_index_level_and_forecast_by_hand(spark):
    week = [10, 10, 10, 10, 10, 20, 20]  # Monday .. Sunday
    daily = daily_units(_buys(spark, {"c": week * 2}))
    end = MONDAY + timedelta(days=13)  # the second Sunday
    conf = DemandConf(level_days=7, shrinkage=2.0, damping=0.9)
    (m,) = fit(daily, end, conf).collect()
    mean = 180 / 14
    s_week, s_end = (2 * 10 / mean + 2) / 4, (2 * 20 / mean + 2) / 4  # two of each weekday, shrunk by 2
    assert m["season"][1] == pytest.approx(s_week) and m["season"][7] == pytest.approx(s_end)
    level = (5 * 10 / s_week + 2 * 20 / s_end) / 7
    assert m["level"] == pytest.approx(level) and m["trend"] == pytest.approx(0.0)
    out = {r["horizon"]: r for r in forecast(spark, fit(daily, end, conf), end, 7, 0.9).collect()}
    assert out[1]["forecast_date"] == end + timedelta(days=1)
    assert out[1]["units_forecast"] == pytest.approx(level * s_week, abs=1e-6)  # Monday
    assert out[6]["units_forecast"] == pytest.approx(level * s_end, abs=1e-6)  # Saturday


def test_damped_trend(spark):
    daily = daily_units(_buys(spark, {"t": list(range(1, 15))}))  # 1, 2, ..., 14 units
    end = MONDAY + timedelta(days=13)
    conf = DemandConf(level_days=7, shrinkage=1e9, damping=0.9)  # shrinkage this strong: no weekly cycle
    (m,) = fit(daily, end, conf).collect()
    assert m["level"] == pytest.approx(11.0, rel=1e-6) and m["trend"] == pytest.approx(1.0, rel=1e-6)
    out = {r["horizon"]: r["units_forecast"] for r in forecast(spark, fit(daily, end, conf), end, 2, 0.9).collect()}
    assert out[1] == pytest.approx(11 + 0.9, rel=1e-6) and out[2] == pytest.approx(11 + 0.9 + 0.81, rel=1e-6)


def test_seasonal_naive_and_errors(spark):
    daily = daily_units(_buys(spark, {"c": [1, 2, 3, 4, 5, 6, 7, 8, 0, 4]}))
    end = MONDAY + timedelta(days=7)  # forecast days 8 and 9 from days 1 and 2 (a week earlier)
    naive = {r["forecast_date"]: r["units_forecast"] for r in seasonal_naive(daily, end, 2).collect()}
    assert naive == {MONDAY + timedelta(days=8): 2.0, MONDAY + timedelta(days=9): 3.0}
    m = errors(seasonal_naive(daily, end, 2), daily)
    # day 8: forecast 2, actual 0 (no MAPE term); day 9: forecast 3, actual 4
    assert m == {"mape": pytest.approx(0.25), "wape": pytest.approx((2 + 1) / 4), "category_days": 2.0}


def test_purchase_patterns(spark):
    events = _buys(spark, {"c": [1, 0, 0, 0, 0, 0, 2, 3]})  # Monday, Sunday, Monday at 10:00
    got = {(r["weekday"], r["hour"]): (r["purchases"], r["units"], r["share"])
           for r in purchase_patterns(events).collect()}
    assert got == {(1, 10): (2, 4, pytest.approx(2 / 3, abs=1e-6)), (7, 10): (1, 2, pytest.approx(1 / 3, abs=1e-6))}
