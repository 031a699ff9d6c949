"""Unit tests of the feature transforms on tiny hand-made frames, with hand-computed expectations."""

from __future__ import annotations

import math
from datetime import date, datetime, timezone

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.sql import functions as F

from conftest import settings_for
from shopmine.conf import FeaturesConf, ProfileConf
from shopmine.features import aggregates, pipeline, profiles
from shopmine.features.daily import interactions_daily, user_daily
from shopmine.features.sessions import sessionize
from shopmine.io.delta import Lake
from shopmine.io.tables import SILVER_EVENTS

T = datetime


def events(spark, rows):
    """silver.events rows from (event_id, user, session, item, category, type, time[, price, quantity, rating, bot])."""
    full = []
    for r in rows:
        eid, user, sess, item, cat, etype, ts, *rest = r
        price, qty, rating, bot = (rest + [None, None, None, False])[:4] if rest else (None, None, None, False)
        values = (eid, user, sess, item, cat, "b1" if item else None, price, qty, etype, None, rating, ts,
                  ts.date(), "canonical", "f.csv", 2, None, "batch", bool(bot), None, False, False, [])
        named = dict(zip(SILVER_EVENTS.schema.fieldNames(), values))  # later nullable columns (pii_sealed) stay null
        full.append(tuple(named.get(n) for n in SILVER_EVENTS.schema.fieldNames()))
    return spark.createDataFrame(full, SILVER_EVENTS.schema)


# -- sessions ------------------------------------------------------------------------------------------------------

def test_sessions_split_at_the_gap_exactly_and_at_midnight(spark):
    gap = 30
    df = events(spark, [
        ("e1", "a", None, "i1", "c1", "view", T(2025, 11, 1, 10, 0, 0)),
        ("e2", "a", None, "i2", "c1", "cart", T(2025, 11, 1, 10, 30, 0)),      # exactly 30 min later: same session
        ("e3", "a", None, "i2", "c1", "purchase", T(2025, 11, 1, 11, 0, 1)),   # 30 min 1 s later: a new session
        ("e4", "a", None, "i3", "c2", "view", T(2025, 11, 1, 23, 50, 0)),
        ("e5", "a", None, "i3", "c2", "favourite", T(2025, 11, 2, 0, 5, 0)),  # after midnight: a new session
        ("e6", "b", "S9", "i1", "c1", "view", T(2025, 11, 1, 8, 0, 0)),        # the source's id is kept
        ("e7", "b", "S9", "i4", "c3", "view", T(2025, 11, 1, 12, 0, 0)),       # ... however long the gap
        ("e8", "b", None, None, None, "search", T(2025, 11, 1, 9, 0, 0)),
    ])
    got = sessionize(df, gap).select("session_id", "user_id", "session_date", "duration_seconds", "n_events", "n_view",
                                     "n_cart", "n_purchase", "n_items", "n_categories", "converted", "funnel_step",
                                     "from_source")
    epoch = lambda t: str(int(t.replace(tzinfo=timezone.utc).timestamp()))  # noqa: E731
    expected = spark.createDataFrame([
        (f"a:{epoch(T(2025, 11, 1, 10))}", "a", date(2025, 11, 1), 1800, 2, 1, 1, 0, 2, 1, False, "cart", False),
        (f"a:{epoch(T(2025, 11, 1, 11, 0, 1))}", "a", date(2025, 11, 1), 0, 1, 0, 0, 1, 1, 1, True, "purchase", False),
        (f"a:{epoch(T(2025, 11, 1, 23, 50))}", "a", date(2025, 11, 1), 0, 1, 1, 0, 0, 1, 1, False, "view", False),
        (f"a:{epoch(T(2025, 11, 2, 0, 5))}", "a", date(2025, 11, 2), 0, 1, 0, 0, 0, 1, 1, False, "favourite", False),
        ("S9", "b", date(2025, 11, 1), 4 * 3600, 2, 2, 0, 0, 2, 2, False, "view", True),
        (f"b:{epoch(T(2025, 11, 1, 9))}", "b", date(2025, 11, 1), 0, 1, 0, 0, 0, 0, 0, False, "none", False),
    ], got.schema)
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


# -- decay ---------------------------------------------------------------------------------------------------------

def test_time_decayed_strength_matches_hand_computation(spark):
    conf = FeaturesConf(half_life_days=1.0)  # weights: view 1, cart 3, purchase 5
    df = events(spark, [
        ("e1", "u", None, "i1", "c1", "purchase", T(2025, 11, 1, 12), 10.0, 2, None),
        ("e2", "u", None, "i1", "c1", "view", T(2025, 11, 3, 18), 10.0),
        ("e3", "u", None, "i2", "c2", "cart", T(2025, 11, 3, 0)),
        ("e4", "u", None, "i2", "c2", "view", T(2025, 11, 3, 1), None, None, None, True),  # a bot event: not counted
        ("e5", "v", None, "i1", "c1", "review", T(2025, 11, 2, 9), None, None, 4.0),
    ])
    daily = interactions_daily(df, conf)
    got = aggregates.interactions(daily, date(2025, 11, 3), conf).select(
        "user_id", "item_id", "strength", "n_events", "n_purchase", "rating")
    # As of the end of 2025-11-03: the purchase is 2.5 days old, the view 0.25 days, the cart 1 day, the review 1.625.
    expected = spark.createDataFrame([
        ("u", "i1", round(5 * 2 ** -2.5 + 1 * 2 ** -0.25, 6), 2, 1, None),
        ("u", "i2", round(3 * 2 ** -1.0, 6), 1, 0, None),
        ("v", "i1", round(1 * 2 ** -1.625, 6), 1, 0, 4.0),
    ], "user_id string, item_id string, strength double, n_events long, n_purchase long, rating double")
    assert_approx_df_equality(got, expected, 1e-9, ignore_row_order=True, ignore_nullable=True)
    # Decaying the day-end value later equals decaying each event directly (the incremental scheme is exact).
    later = aggregates.interactions(daily, date(2025, 11, 10), conf).where("item_id = 'i2'").first()["strength"]
    assert later == pytest.approx(3 * 2 ** -8.0, abs=1e-6)
    # Revenue counts price x quantity of purchases only.
    assert daily.where("item_id = 'i1' AND user_id = 'u'").agg(F.sum("revenue")).first()[0] == 20.0


def test_window_excludes_events_after_as_of(spark):
    conf = FeaturesConf()
    df = events(spark, [("e1", "u", None, "i1", "c1", "view", T(2025, 11, 1, 12)),
                        ("e2", "u", None, "i2", "c1", "view", T(2025, 11, 5, 12))])
    got = aggregates.interactions(interactions_daily(df, conf), date(2025, 11, 2), conf)
    assert [r["item_id"] for r in got.collect()] == ["i1"]


def test_item_and_category_popularity_counts_users_once_and_splits_the_trend_windows(spark):
    conf = FeaturesConf(trend_window_days=2)  # as of 11-05: recent = 11-04..11-05, earlier = 11-02..11-03
    df = events(spark, [
        ("e1", "a", None, "i1", "c1", "view", T(2025, 11, 1, 9), 10.0),       # before both trend windows
        ("e2", "a", None, "i1", "c1", "view", T(2025, 11, 4, 9), 12.0),       # a again on another day: one user
        ("e3", "a", None, "i1", "c1", "purchase", T(2025, 11, 4, 9, 5), 12.0, 2),
        ("e4", "b", None, "i1", "c1", "view", T(2025, 11, 2, 9), 8.0),        # earlier window
        ("e5", "c", None, "i1", "c1", "cart", T(2025, 11, 5, 9)),             # neither a viewer nor a buyer
        ("e6", "b", None, "i2", "c1", "view", T(2025, 11, 3, 9)),
        ("e7", "b", None, "i2", "c1", "purchase", T(2025, 11, 3, 9, 1), 5.0),
        ("e8", "d", None, "i3", "c2", "view", T(2025, 11, 5, 9)),
    ])
    daily = interactions_daily(df, conf)
    cols = ("distinct_users", "viewers", "buyers", "n_view", "views_recent", "views_earlier", "purchases_recent",
            "purchases_earlier", "trend", "conversion_rate", "revenue", "price_mean", "price_min", "price_max")
    items = {r["item_id"]: r.asDict() for r in aggregates.item_features(daily, date(2025, 11, 5), conf).collect()}
    assert set(items) == {"i1", "i2", "i3"}
    # i1: users a, b, c; viewers a, b; buyer a. Events recent 3 (e2, e3, e5), earlier 1 (e4): trend (3+1)/(1+1).
    # Prices seen 10, 12, 12, 8: mean 10.5. Revenue: 12 x 2.
    assert {k: items["i1"][k] for k in cols} == {
        "distinct_users": 3, "viewers": 2, "buyers": 1, "n_view": 3, "views_recent": 1, "views_earlier": 1,
        "purchases_recent": 1, "purchases_earlier": 0, "trend": 2.0, "conversion_rate": 0.5, "revenue": 24.0,
        "price_mean": 10.5, "price_min": 8.0, "price_max": 12.0}
    assert {k: items["i2"][k] for k in ("distinct_users", "viewers", "buyers", "conversion_rate", "trend",
                                        "price_mean")} == {
        "distinct_users": 1, "viewers": 1, "buyers": 1, "conversion_rate": 1.0, "trend": round(1 / 3, 6),
        "price_mean": 5.0}
    assert items["i3"]["category_id"] == "c2" and items["i3"]["price_mean"] is None
    cats = {r["category_id"]: r.asDict() for r in aggregates.category_features(daily, date(2025, 11, 5), conf).collect()}
    # c1: items i1, i2; users a, b, c; viewers a, b; buyers a, b.
    assert {k: cats["c1"][k] for k in ("n_items", "distinct_users", "viewers", "buyers", "conversion_rate")} == {
        "n_items": 2, "distinct_users": 3, "viewers": 2, "buyers": 2, "conversion_rate": 1.0}
    assert {k: cats["c2"][k] for k in ("n_items", "distinct_users", "viewers", "buyers")} == {
        "n_items": 1, "distinct_users": 1, "viewers": 1, "buyers": 0}


def test_user_features_rates_conversion_entropy_and_hours(spark):
    conf = FeaturesConf()
    df = events(spark, [
        ("e1", "u", None, "i1", "c1", "view", T(2025, 11, 3, 1), 10.0),
        ("e2", "u", None, "i2", "c2", "view", T(2025, 11, 3, 13), 30.0),
        ("e3", "u", None, "i2", "c2", "cart", T(2025, 11, 3, 13, 5)),
        ("e4", "u", None, "i2", "c2", "purchase", T(2025, 11, 8, 20), 30.0, 3),  # a Saturday
    ])
    daily = interactions_daily(df, conf)
    inter = aggregates.interactions(daily, date(2025, 11, 10), conf)
    uf = aggregates.user_features(user_daily(df), sessionize(df, 30), daily, inter, date(2025, 11, 10), conf).first()
    assert (uf["n_events"], uf["n_view"], uf["n_cart"], uf["n_purchase"]) == (4, 2, 1, 1)
    assert uf["rate_view"] == 0.5
    assert (uf["view_to_cart"], uf["cart_to_purchase"]) == (0.5, 1.0)
    assert (uf["active_days"], uf["recency_days"], uf["purchase_recency_days"], uf["frequency"]) == (2, 2, 2, 1)
    assert (uf["monetary"], uf["units"]) == (90.0, 3)
    assert (uf["avg_viewed_price"], uf["avg_bought_price"]) == (20.0, 30.0)
    assert uf["sessions"] == 3  # 01:00, 13:00-13:05 on the 3rd; 20:00 on the 8th
    assert uf["category_entropy"] == pytest.approx(-(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75)), abs=1e-6)
    assert uf["top_category"] == "c2" and uf["n_categories"] == 2
    assert uf["hour_share"][13] == 0.5 and uf["peak_hour"] == 13
    assert (uf["share_night"], uf["share_afternoon"], uf["share_evening"]) == (0.25, 0.5, 0.25)
    assert uf["weekend_share"] == 0.25 and uf["weekday_share"][0] == 0.75  # the 3rd is a Monday


# -- profiles ------------------------------------------------------------------------------------------------------

def _features(spark, rows):
    """Minimal user_features rows: (user, n_purchase, purchase_recency, frequency, monetary, first_seen, recency)."""
    as_of = date(2025, 11, 30)
    out = []
    for user, n_purchase, prec, freq, money, first_seen, rec in rows:
        out.append((user, n_purchase, prec, freq, money, first_seen, rec, 0.1, 0.2, None, 50.0, None, 14, 0.0, as_of))
    return spark.createDataFrame(out, "user_id string, n_purchase long, purchase_recency_days int, frequency long, "
                                      "monetary double, first_seen date, recency_days int, rate_favourite double, "
                                      "rate_cart double, cart_to_purchase double, avg_viewed_price double, "
                                      "avg_bought_price double, peak_hour int, bot_score double, as_of date")


def test_rfm_scores_tiers_segments_and_lifecycle(spark):
    old = date(2025, 10, 1)
    feats = _features(spark, [
        ("best", 9, 0, 50, 500.0, old, 0),     # most recent, most frequent, biggest spender
        ("b2", 5, 1, 40, 400.0, old, 1),
        ("b3", 3, 2, 30, 300.0, old, 5),
        ("b4", 2, 3, 20, 200.0, old, 10),
        ("lapsed", 1, 4, 10, 100.0, old, 40),  # least recent, least frequent, smallest spender
        ("window", 0, None, 0, 0.0, date(2025, 11, 28), 2),  # never bought, first seen 2 days ago
    ])
    empty_inter = spark.createDataFrame([], "user_id string, category_id string, brand string, strength double")
    items = spark.createDataFrame([(10.0,), (20.0,), (60.0,)], "price_mean double")
    got = profiles.build_profiles(feats, empty_inter, items, ProfileConf(), "run1", datetime(2025, 12, 1)).select(
        "user_id", "r_score", "f_score", "m_score", "spending_power", "segment", "lifecycle_stage",
        "preferred_price_band")
    # Quintile bounds among the 5 buyers: recency 0,1,2,3; frequency 10,20,30,40; monetary 100,200,300,400.
    # Spending bounds (50/75/90 %): 300, 400, 500. Item price tertiles: 10, 20 -> a 50.0 viewed price is premium.
    expected = spark.createDataFrame([
        ("best", 5, 5, 5, "high", "champions", "active", "premium"),
        ("b2", 4, 4, 4, "medium", "champions", "active", "premium"),
        ("b3", 3, 3, 3, "low", "potential_loyalist", "active", "premium"),
        ("b4", 2, 2, 2, "low", "hibernating", "lapsing", "premium"),
        ("lapsed", 1, 1, 1, "low", "hibernating", "churned", "premium"),
        ("window", 0, 0, 0, "none", "browser", "new", "premium"),
    ], got.schema)
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_top_categories_are_weighted_shares(spark):
    inter = spark.createDataFrame([("u", "c1", 3.0), ("u", "c2", 1.0), ("u", "c3", 1.0), ("w", "c1", 0.0)],
                                  "user_id string, category_id string, strength double")
    got = {r["user_id"]: [tuple(x) for x in r["top_category_ids"]]
           for r in profiles.top_weighted(inter, "category_id", 2).collect()}
    assert got == {"u": [("c1", 0.6), ("c2", 0.2)], "w": [("c1", 0.0)]}


def test_profile_merge_rewrites_only_changed_users(spark, tmp_path):
    lake = Lake(spark, settings_for(str(tmp_path / "lake")))
    feats = _features(spark, [("a", 1, 1, 1, 10.0, date(2025, 10, 1), 1), ("b", 2, 2, 2, 20.0, date(2025, 10, 1), 2),
                              ("c", 0, None, 0, 0.0, date(2025, 10, 1), 3)])
    inter = spark.createDataFrame([("a", "c1", "b1", 1.0)], "user_id string, category_id string, brand string, "
                                                               "strength double")
    items = spark.createDataFrame([(10.0,)], "price_mean double")
    build = lambda f, run: profiles.build_profiles(f, inter, items, ProfileConf(), run, datetime(2025, 12, 1))  # noqa: E731
    lake.upsert(build(feats, "r1"), "gold.user_profiles", ["user_id"], compare=["profile_hash"],
                update_exprs={"profile_version": "t.profile_version + 1"})
    first = lake.version("gold.user_profiles")
    # Only c's behaviour changes (more carts; nothing that moves the RFM quantiles); a and b are rebuilt identically.
    feats2 = feats.withColumn("rate_cart", F.when(F.col("user_id") == "c", 0.5).otherwise(F.col("rate_cart")))
    m = lake.upsert(build(feats2, "r2"), "gold.user_profiles", ["user_id"], compare=["profile_hash"],
                    update_exprs={"profile_version": "t.profile_version + 1"})
    assert (m["numTargetRowsUpdated"], m["numTargetRowsInserted"]) == (1, 0)
    now = {r["user_id"]: (r["profile_version"], r["updated_by_run"], r["cart_rate"])
           for r in lake.read("gold.user_profiles").collect()}
    assert now["a"][:2] == (1, "r1") and now["b"][:2] == (1, "r1")
    assert now["c"] == (2, "r2", 0.5)
    # Time travel gives the earlier profile.
    before = lake.read("gold.user_profiles", version=first).where("user_id = 'c'").first()
    assert (before["profile_version"], before["cart_rate"]) == (1, 0.2)


# -- the Spark ML feature pipeline ---------------------------------------------------------------------------------

def test_feature_pipeline_one_hot_scaling_and_mean_normalisation(spark, tmp_path):
    cols = {c: 0.0 for c in pipeline.LOG_COLUMNS + pipeline.PLAIN_COLUMNS}
    rows = []
    for user, rate_view, cat in (("a", 0.0, "c1"), ("b", 0.5, "c1"), ("c", 1.0, "c2"), ("d", None, None)):
        r = dict(cols, user_id=user, rate_view=rate_view, top_category=cat)
        rows.append(r)
    schema = ", ".join(["user_id string", "top_category string"]
                       + [f"{c} double" for c in pipeline.LOG_COLUMNS + pipeline.PLAIN_COLUMNS])
    df = spark.createDataFrame([tuple(r[c.split()[0]] for c in schema.split(", ")) for r in rows], schema)
    lake = Lake(spark, settings_for(str(tmp_path / "lake")))
    _, path = pipeline.fit_and_save(lake, df, "run1", "test", None)
    model = pipeline.load_feature_pipeline(lake)
    assert pipeline.latest_path(lake) == path
    out = model.transform(df)
    names = pipeline.vector_names(out)
    i = names.index("f_rate_view")
    got = {r["user_id"]: (r["features"][i], r["features_01"][i], r["features_meannorm"][i], r["features_std"][i])
           for r in out.collect()}
    # rate_view: 0, 0.5, 1, null -> 0 ; min 0, max 1, mean 0.375, sample std = sqrt(0.229167)
    mean, std = 0.375, math.sqrt(sum((x - 0.375) ** 2 for x in (0, 0.5, 1, 0)) / 3)
    for user, x in (("a", 0.0), ("b", 0.5), ("c", 1.0), ("d", 0.0)):
        assert got[user][0] == x
        assert got[user][1] == pytest.approx(x)                    # [0, 1]: (x - min) / (max - min)
        assert got[user][2] == pytest.approx(x - mean)             # mean normalisation: (x - mean) / (max - min)
        assert got[user][3] == pytest.approx((x - mean) / std)     # standardisation
    # One-hot of the top category: c1 (2 users) gets the first slot; a missing category is a value of its own; a
    # category unseen at fit time gets the '__unknown' slot.
    onehot = [n for n in names if n.startswith("onehot_top_category_")]
    assert sorted(onehot) == sorted(f"onehot_top_category_{v}" for v in ("c1", "c2", "(none)", "__unknown"))
    assert onehot[0] == "onehot_top_category_c1"
    new = spark.createDataFrame([tuple(r[c.split()[0]] for c in schema.split(", ")) for r in rows[:1]], schema) \
        .withColumn("top_category", F.lit("c99"))
    for frame, hot in ((out.where("user_id = 'a'"), "onehot_top_category_c1"),
                       (model.transform(new), "onehot_top_category___unknown")):
        vec = frame.first()["features"]
        assert [vec[names.index(n)] for n in onehot] == [1.0 if n == hot else 0.0 for n in onehot]
