"""risk: each flag on hand-made users with hand-computed scores, and the evaluation against known bots."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from chispa import assert_df_equality

from pyspark.sql import functions as F

from conftest import spec_frame
from shopmine.conf import AnomalyConf, RiskConf
from shopmine.io.tables import GOLD_USER_FEATURES, SILVER_EVENTS
from shopmine.apps.risk import (
    abnormal_purchase_flags,
    anomaly_flags,
    bot_flags,
    click_farming_flags,
    evaluate,
    scraper_flags,
)

T0 = datetime(2025, 11, 10, 12, 0)


def _event(user, etype="view", item="i1", at=T0, **kw):
    return {"event_id": f"{user}-{item}-{etype}-{at.isoformat()}", "user_id": user, "item_id": item,
            "event_type": etype, "event_time": at, "event_date": at.date(), **kw}


def _features(spark, rows):
    return spec_frame(spark, GOLD_USER_FEATURES, rows)


def test_bot_flag_takes_cleans_reasons(spark):
    features = _features(spark, [{"user_id": "u1", "bot_score": 0.9}, {"user_id": "u2", "bot_score": 0.2}])
    events = spec_frame(spark, SILVER_EVENTS, [
        _event("u1", is_bot=True, bot_reason="machine-regular gaps"),
        _event("u1", is_bot=True, bot_reason="machine-regular gaps", item="i2"),
        _event("u2", is_bot=True, bot_reason="70 events in one minute")])
    got = bot_flags(features, events, RiskConf())
    expected = spark.createDataFrame([("u1", "bot", 0.9, ["90% of events bot-flagged by clean", "machine-regular gaps"])],
                                     "user_id string, flag string, score double, reasons array<string>")
    assert_df_equality(got, expected, ignore_nullable=True)


def test_scraper_needs_long_browsing_only_sessions(spark):
    base = {"n_view": 300, "rate_view": 1.0, "avg_session_events": 150.0, "sessions": 2}
    features = _features(spark, [{"user_id": "u3", **base}, {"user_id": "u4", **base, "n_cart": 1},
                                 {"user_id": "u5", **base, "avg_session_events": 12.0}])
    rows = scraper_flags(features, RiskConf()).collect()
    assert [(r["user_id"], r["score"]) for r in rows] == [("u3", 150.0)]
    assert rows[0]["reasons"] == ["300 views in 2 sessions (150 events per session), no cart, favourite or purchase"]


def test_click_farming_flags_new_accounts_of_a_burst(spark):
    day = T0.date()
    new = [f"n{i}" for i in range(5)]
    features = _features(spark, [{"user_id": u, "first_seen": day} for u in new + ["m0", "m1", "m2", "m3"]]
                         + [{"user_id": "old", "first_seen": day - timedelta(days=30)}])
    events = [_event(u, "cart", "i9", T0 + timedelta(minutes=2 * i)) for i, u in enumerate(new)]
    events.append(_event("old", "purchase", "i9", T0 + timedelta(minutes=5)))
    # four new accounts on another item: below min_accounts
    events += [_event(u, "cart", "i8", T0 + timedelta(minutes=i)) for i, u in enumerate(["m0", "m1", "m2", "m3"])]
    rows = click_farming_flags(spec_frame(spark, SILVER_EVENTS, events), features, RiskConf()).collect()
    assert sorted(r["user_id"] for r in rows) == new
    assert {r["score"] for r in rows} == {5.0}
    assert rows[0]["reasons"] == ["item i9: 5 new accounts of 6 carted or bought it within 60 min from 2025-11-10 12:00"]
    strict = RiskConf(click_farming={"min_new_share": 0.9})  # 5 of 6 actors are new: 0.83 < 0.9
    assert click_farming_flags(spec_frame(spark, SILVER_EVENTS, events), features, strict).count() == 0
    # the same burst on the data's first day: nobody can be told new from returning, so nobody is flagged
    censored = features.where("user_id != 'old'").unionByName(
        _features(spark, [{"user_id": "old", "first_seen": day}]))
    assert click_farming_flags(spec_frame(spark, SILVER_EVENTS, events), censored, RiskConf()).count() == 0


def test_abnormal_purchase_against_the_users_own_history(spark):
    buys = [_event("u5", "purchase", f"i{i}", T0 + timedelta(days=i), price=10.0, quantity=q)
            for i, q in enumerate([1, 1, 1, 40])]
    buys += [_event("u6", "purchase", f"i{i}", T0 + timedelta(days=i), price=10.0, quantity=q)
             for i, q in enumerate([1, 50])]  # two purchases: below min_history, no yardstick
    # five times the usual quantity is not abnormal (min_ratio 10), however tight the history
    buys += [_event("u7", "purchase", f"i{i}", T0 + timedelta(days=i), price=10.0, quantity=q)
             for i, q in enumerate([1, 1, 1, 5])]
    rows = {r["user_id"]: r for r in abnormal_purchase_flags(spec_frame(spark, SILVER_EVENTS, buys), RiskConf()).collect()}
    assert set(rows) == {"u5"}
    # quantity: median 1, MAD 0 -> spread floored at 10 % of the median: z = 39 / 0.1; amount: 390 / 1.0 (10 % of 10)
    assert rows["u5"]["score"] == pytest.approx(390.0)
    assert rows["u5"]["reasons"] == [
        "item i3 at 2025-11-13 12:00: amount 400.00 vs the user's median 10.00 (robust z 390.0)",
        "item i3 at 2025-11-13 12:00: quantity 40 vs the user's median 1 (robust z 390.0)"]


def test_anomaly_score_is_the_robust_z(spark):
    features = _features(spark, [{"user_id": f"u{i}", "n_events": 10 + i} for i in range(19)]
                         + [{"user_id": "heavy", "n_events": 1000}])
    conf = RiskConf(anomaly=AnomalyConf(columns=["n_events"], log_columns=[], z_threshold=4.0))
    (row,) = anomaly_flags(features, conf).collect()
    # median of 10..28 and 1000 = 19; absolute deviations 0,1,1,...,9,9,981 -> MAD 5; spread 1.4826 x 5
    assert row["user_id"] == "heavy" and row["score"] == pytest.approx(981 / (1.4826 * 5))
    assert row["reasons"] == [f"n_events = 1000 (all users' median 19, robust z {981 / (1.4826 * 5):.1f})"]


def test_anomaly_falls_back_to_the_mean_deviation_when_mad_is_zero(spark):
    # 17 of 20 users never browse at night: MAD 0; mean absolute deviation (0.6 + 0.3 + 0.1) / 20 = 0.05
    shares = [0.0] * 17 + [0.6, 0.3, 0.1]
    features = _features(spark, [{"user_id": f"u{i}", "share_night": v, "n_events": 50} for i, v in enumerate(shares)])
    conf = RiskConf(anomaly=AnomalyConf(columns=["share_night"], log_columns=[], z_threshold=4.0))
    rows = {r["user_id"]: r["score"] for r in anomaly_flags(features, conf).collect()}
    assert rows == {"u17": pytest.approx(0.6 / (1.253314 * 0.05)), "u18": pytest.approx(0.3 / (1.253314 * 0.05))}
    few = features.withColumn("n_events", F.when(F.col("user_id") == "u18", 5).otherwise(F.col("n_events")))
    assert {r["user_id"] for r in anomaly_flags(few, conf).collect()} == {"u17"}  # 5 events: never flagged
    flat = _features(spark, [{"user_id": f"u{i}", "share_night": 0.0, "n_events": 50} for i in range(5)])
    assert anomaly_flags(flat, conf).count() == 0  # no spread at all: the column says nothing


def test_evaluation_counts(spark):
    flags = spark.createDataFrame([("u1", "bot"), ("u1", "anomaly"), ("u7", "anomaly"), ("u9", "click_farming")],
                                  "user_id string, flag string")
    users = spark.createDataFrame([(f"u{i}",) for i in range(10)], "user_id string")
    truth = spark.createDataFrame([("u1",), ("u8",)], "user_id string")
    m = evaluate(flags, users, truth)
    assert m["bot"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "flagged": 1.0, "true_bots": 2.0}
    assert m["any"]["precision"] == 0.5 and m["any"]["recall"] == 0.5 and m["any"]["flagged"] == 2.0
    assert m["scraper"]["flagged"] == 0.0 and m["scraper"]["recall"] == 0.0


def test_unknown_anomaly_column_names_the_key(spark):
    from shopmine.conf import ConfError

    with pytest.raises(ConfError, match="risk.anomaly.columns"):
        anomaly_flags(_features(spark, [{"user_id": "u"}]),
                      RiskConf(anomaly=AnomalyConf(columns=["nope"], log_columns=[])))
