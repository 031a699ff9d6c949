"""The two-stage ranker on hand-made per-day logs: features are point-in-time (nothing on or after a cutoff changes a
row), labels come from the window after the cutoff only, every user gets a full list, and on a log with a signal no
single candidate source finds, the ranker beats the best source."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from shopmine.conf import RecommendConf, Settings
from shopmine.evaluation import ranking as ev
from shopmine.recsys import ranker as rk

D0 = date(2025, 11, 1)
SCHEMA = ("user_id string, item_id string, event_date date, category_id string, brand string, n_events long, "
          "n_view long, n_search long, n_favourite long, n_cart long, n_remove_from_cart long, n_purchase long, "
          "n_review long, weight double, decayed_weight double, rating double, first_event_time timestamp, "
          "last_event_time timestamp, revenue double, price_sum double, price_n long, price_min double, "
          "price_max double, price_sumsq double")


def daily_rows(spark, rows):
    """gold.interactions_daily-like rows from (user, item, day, {type: count}, category, minute-of-day)."""
    out = []
    for user, item, day, counts, cat, minute in rows:
        d = D0 + timedelta(days=day)
        t = datetime(d.year, d.month, d.day) + timedelta(minutes=minute)
        n = {k: counts.get(k, 0) for k in ("view", "search", "favourite", "cart", "remove_from_cart", "purchase",
                                           "review")}
        w = float(n["view"] + 2 * n["favourite"] + 3 * n["cart"] + 5 * n["purchase"])
        out.append((user, item, d, cat, None, sum(n.values()), *n.values(), w, w, None, t, t, 0.0, 10.0, 1, 10.0,
                    10.0, 100.0))
    return spark.createDataFrame(out, SCHEMA)


def settings(**ranker) -> Settings:
    return Settings(recommend=RecommendConf(holdout_days=2, ranker=ranker))


@pytest.mark.slow
def test_features_at_a_cutoff_never_see_the_cutoff_day_or_later(spark):
    past = [("u", "a", 0, {"view": 2}, "c1", 10), ("u", "b", 1, {"cart": 1}, "c1", 20),
            ("u", "c", 2, {"view": 1, "purchase": 1}, "c2", 30), ("v", "a", 2, {"view": 1}, "c1", 40),
            ("v", "d", 1, {"favourite": 1}, "c2", 50), ("w", "b", 0, {"view": 3}, "c1", 60)]
    future = [("u", "a", 3, {"purchase": 1}, "c1", 5),   # the cutoff day itself
              ("u", "e", 3, {"view": 5}, "c1", 6), ("v", "b", 4, {"cart": 2}, "c1", 7),
              ("x", "a", 4, {"view": 1}, "c3", 8),      # a user who only appears later
              ("w", "b", 5, {"view": 9}, "c1", 9)]
    cutoff = D0 + timedelta(days=3)
    s = settings(sources={"revisit": 10, "covisit": 10, "category_popularity": 10, "popularity": 10})
    before = rk.RankerRun(daily_rows(spark, past), s).scored_candidates(cutoff)
    after = rk.RankerRun(daily_rows(spark, past + future), s).scored_candidates(cutoff)
    assert before.count() > 0
    assert_df_equality(before, after, ignore_row_order=True, ignore_nullable=True)
    # Hand-checked features of (u, b) at the cutoff: carted on day 1 (2 days before the cutoff, 20 minutes in).
    row = before.where("user_id = 'u' AND item_id = 'b'").first()
    assert row["n_cart"] == 1 and row["carted_not_bought"] == 1.0 and row["ui_days"] == 1
    assert row["ui_hours_last"] == pytest.approx(48 - 20 / 60)
    assert row["ui_events_1d"] == 0 and row["ui_events_3d"] == 1
    assert row["u_items"] == 3 and row["u_purchases"] == 1 and row["u_days"] == 3
    assert row["i_users"] == 2  # u and w touched b before the cutoff (v's cart is on day 4)
    assert row["revisit_rank"] == 1.0  # u's unbought items by recency: b (day 1) before a (day 0); c was bought
    # u bought c: never a candidate for u.
    assert before.where("user_id = 'u' AND item_id = 'c'").count() == 0


def test_labels_come_from_the_window_after_the_cutoff(spark):
    rows = [("u", "a", 2, {"view": 1}, "c1", 0),      # before the cutoff: not a label
            ("u", "b", 3, {"view": 1}, "c1", 0),      # cutoff day: label
            ("u", "c", 4, {"cart": 1}, "c1", 0),      # last day of a 2-day window: label
            ("u", "d", 5, {"view": 1}, "c1", 0),      # after the window
            ("u", "e", 4, {"search": 2}, "c1", 0)]    # a type outside relevant_types
    got = rk.labels(daily_rows(spark, rows), D0 + timedelta(days=3), 2, ["view", "cart", "purchase"])
    assert {(r["user_id"], r["item_id"], r["label"]) for r in got.collect()} == {("u", "b", 1.0), ("u", "c", 1.0)}


@pytest.mark.slow
def test_training_cutoffs_end_before_the_evaluated_window(spark):
    rows = [(f"u{n}", f"i{(n + d) % 5}", d, {"view": 1}, "c1", n) for n in range(4) for d in range(10)]
    run = rk.RankerRun(daily_rows(spark, rows), settings(cutoffs=3, max_iter=2))
    run.fit(D0 + timedelta(days=7))  # the evaluated window starts on day 8
    # Label windows [c, c + 2) end on day 7 at the latest: cutoffs 6, 5, 4.
    assert run.stats["cutoffs"] == [str(D0 + timedelta(days=d)) for d in (4, 5, 6)]
    run.release()


@pytest.mark.slow
def test_every_user_gets_a_full_list_without_excluded_items(spark):
    rows = [(f"u{n}", f"i{(n * 3 + d % 3) % 40}", d, {"view": 1}, "c1", n) for n in range(12) for d in range(6)]
    rows += [("cold", "i1", 0, {"purchase": 1}, "c1", 5)]  # only a purchase, long ago: nothing to revisit
    s = settings(cutoffs=2, max_iter=3, sources={"revisit": 5, "popularity": 5})
    run = rk.RankerRun(daily_rows(spark, rows), s)
    model = run.fit(D0 + timedelta(days=5))
    top = ev.top_k(run.recommend(model, D0 + timedelta(days=6)), s.recommend.top_n)
    n = {r["user_id"]: r["count"] for r in top.groupBy("user_id").count().collect()}
    assert len(n) == 13 and set(n.values()) == {s.recommend.top_n}  # popularity fills to top_n for everyone
    assert top.where("user_id = 'cold' AND item_id = 'i1'").count() == 0  # bought: excluded
    run.release()


def signal_log(seed: int = 3, users: int = 40, days: int = 10) -> list:
    """Each day a user views 6 fresh items and carts one of them; the carted item is viewed again the next day.
    Re-visit ranks by recency and cannot tell the carted item from the other views of the day; the ranker can."""
    rnd = random.Random(seed)
    rows, fresh = [], iter(range(10**6))
    for u in range(users):
        carted = None
        for d in range(days):
            if carted is not None:
                rows.append((f"u{u}", carted, d, {"view": 1}, "c1", rnd.randrange(0, 60)))
            views = [f"i{next(fresh)}" for _ in range(6)]
            for item in views:
                rows.append((f"u{u}", item, d, {"view": 1}, "c1", rnd.randrange(60, 1440)))
            carted = rnd.choice(views)
            rows.append((f"u{u}", carted, d, {"cart": 1}, "c1", rnd.randrange(60, 1440)))  # merged below
    merged: dict = {}
    for user, item, d, counts, cat, minute in rows:
        key = (user, item, d)
        old = merged.get(key)
        if old is None:
            merged[key] = (user, item, d, dict(counts), cat, minute)
        else:
            for k, v in counts.items():
                old[3][k] = old[3].get(k, 0) + v
            merged[key] = (*old[:5], max(old[5], minute))
    return list(merged.values())


@pytest.mark.slow
def test_ranker_beats_its_best_single_source_on_a_log_with_signal(spark):
    daily = daily_rows(spark, signal_log())
    s = settings(cutoffs=3, max_iter=10)
    split = ev.time_split(daily, s.recommend, s.features)
    cut = D0 + timedelta(days=8)
    run = rk.RankerRun(daily, s)
    model = run.fit(cut - timedelta(days=1))
    ranker = ev.ranking_metrics(run.recommend(model, cut), split.truth, 10)["ndcg"]
    cands = run.scored_candidates(cut)
    alone = {src: ev.ranking_metrics(cands.where(F.col(f"{src}_rank") < rk.NO_RANK).select(
        "user_id", "item_id", (-F.col(f"{src}_rank")).alias("score")), split.truth, 10)["ndcg"] for src in rk.SOURCES}
    best = max(alone.values())
    assert ranker > 1.3 * best, (ranker, alone)
    importances = rk.importances(model)
    assert max(importances, key=importances.get) in ("n_cart", "carted_not_bought", "ui_events_1d", "ui_events_3d")
    run.release()


@pytest.mark.slow
def test_the_als_source_proposes_candidates_and_becomes_features(spark):
    """recommend.ranker.sources.als: ALS fitted on the interactions before the cutoff proposes its own candidates
    (ranked 1..n per user, bought items never), and the model then has als_rank / als_score among its inputs."""
    rows = [(f"u{n}", f"i{(n * 3 + d % 3) % 40}", d, {"view": 1}, "c1", n) for n in range(12) for d in range(6)]
    rows += [("u0", "i0", 1, {"purchase": 1}, "c1", 5)]
    s = settings(cutoffs=2, max_iter=3, sources={"revisit": 5, "als": 4, "popularity": 5})
    run = rk.RankerRun(daily_rows(spark, rows), s)
    cands = run.scored_candidates(D0 + timedelta(days=6))
    als = cands.where(F.col("als_rank") < rk.NO_RANK)
    per_user = {r["user_id"]: sorted(r["ranks"]) for r in als.groupBy("user_id").agg(
        F.collect_list("als_rank").alias("ranks")).collect()}
    assert len(per_user) == 12 and all(ranks == [1.0, 2.0, 3.0, 4.0] for ranks in per_user.values())
    assert als.where("user_id = 'u0' AND item_id = 'i0'").count() == 0
    assert als.where("als_score = 0").count() == 0
    model = run.fit(D0 + timedelta(days=5))
    assert {"als_rank", "als_score"} <= set(rk.importances(model))
    assert "als_rank" not in rk.feature_names(settings().recommend.ranker)  # off by default: no ALS fit per cutoff
    run.release()
