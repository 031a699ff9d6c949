"""Recommender pieces on tiny hand-made frames: every metric against hand-computed values (and Spark ML's
RankingEvaluator where it defines the same metric), the splits, item neighbours and the product's CF formula."""

from __future__ import annotations

import math
from datetime import date, datetime

import pytest
from pyspark.ml.evaluation import RankingEvaluator
from pyspark.sql import functions as F

from shopmine.conf import FeaturesConf, ItemCfConf, RecommendConf
from shopmine.evaluation import ranking as ev
from shopmine.recsys import models as m

L2 = math.log2


@pytest.fixture
def recs_truth(spark):
    recs = spark.createDataFrame([("A", "i1", 0.9), ("A", "i2", 0.8), ("A", "i3", 0.7), ("A", "i4", 0.6),
                                  ("B", "i5", 1.0), ("D", "i1", 1.0)], "user_id string, item_id string, score double")
    truth = spark.createDataFrame([("A", "i2"), ("A", "i4"), ("A", "i9"), ("B", "i5"), ("C", "i1")],
                                  "user_id string, item_id string")
    return recs, truth


def test_ranking_metrics_match_hand_computation(recs_truth):
    recs, truth = recs_truth
    # A: top-2 [i1, i2] vs {i2, i4, i9}; B: [i5] vs {i5}; C: nothing recommended vs {i1}; D has no truth (not counted).
    ndcg_a2 = (1 / L2(3)) / (1 + 1 / L2(3))
    got = ev.ranking_metrics(recs, truth, 2)
    assert got["users"] == 3
    assert got["precision"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)
    assert got["recall"] == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert got["hit_rate"] == pytest.approx(2 / 3)
    assert got["ndcg"] == pytest.approx((ndcg_a2 + 1 + 0) / 3)
    assert got["map"] == pytest.approx(((1 / 2) / 3 + 1 + 0) / 3)
    # At 4, A hits at ranks 2 and 4: AP = (1/2 + 2/4) / 3 (divided by |rel| = 3, not by min(k, |rel|)).
    got4 = ev.ranking_metrics(recs, truth, 4)
    ndcg_a4 = (1 / L2(3) + 1 / L2(5)) / (1 + 1 / L2(3) + 1 / L2(4))
    assert got4["ndcg"] == pytest.approx((ndcg_a4 + 1 + 0) / 3)
    assert got4["map"] == pytest.approx(((1 / 2 + 2 / 4) / 3 + 1 + 0) / 3)
    assert got4["recall"] == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_precision_recall_ndcg_agree_with_spark_ml(recs_truth, spark):
    recs, truth = recs_truth
    ids = {f"i{n}": float(n) for n in range(1, 10)}
    to_d = F.udf(lambda xs: [ids[x] for x in xs], "array<double>")
    top = ev.top_k(recs, 2).groupBy("user_id").agg(
        F.transform(F.array_sort(F.collect_list(F.struct("rank", "item_id"))), lambda x: x["item_id"]).alias("p"))
    lists = truth.groupBy("user_id").agg(F.collect_set("item_id").alias("l")).join(top, "user_id", "left") \
        .select(to_d(F.coalesce("p", F.array().cast("array<string>"))).alias("prediction"), to_d("l").alias("label"))
    ours = ev.ranking_metrics(recs, truth, 2)
    for spark_name, name in (("precisionAtK", "precision"), ("recallAtK", "recall"), ("ndcgAtK", "ndcg")):
        value = RankingEvaluator(metricName=spark_name, k=2).evaluate(lists)
        assert value == pytest.approx(ours[name]), name


def test_coverage_novelty_and_diversity(spark):
    train = spark.createDataFrame([("u1", "a"), ("u2", "a"), ("u1", "b"), ("u3", "c"), ("u4", "d")],
                                  "user_id string, item_id string")
    recs = spark.createDataFrame([("u1", "c", 2.0), ("u1", "d", 1.0), ("u2", "a", 2.0), ("u2", "c", 1.0)],
                                 "user_id string, item_id string, score double")
    cats = spark.createDataFrame([("a", "X"), ("b", "X"), ("c", "X"), ("d", "Y")], "item_id string, category_id string")
    got = ev.beyond_accuracy(recs, train, 2, cats)
    assert got["coverage"] == pytest.approx(3 / 4)  # {a, c, d} of 4 training items
    assert got["novelty"] == pytest.approx((2 + 2 + 1 + 2) / 4)  # -log2(1/4) for c, d, c; -log2(2/4) for a
    assert got["diversity"] == pytest.approx((1 + 0) / 2)  # u1: X vs Y; u2: X vs X


def _daily(spark, rows):
    """interactions_daily-like rows: (user, item, date, n_view, n_purchase)."""
    out = []
    for user, item, d, views, buys in rows:
        t = datetime(d.year, d.month, d.day, 12)
        out.append((user, item, d, "c1", None, views + buys, views, 0, 0, 0, 0, buys, 0, float(views + 5 * buys),
                    float(views + 5 * buys), None, t, t, 0.0, 0.0, 0, None, None, 0.0))
    schema = ("user_id string, item_id string, event_date date, category_id string, brand string, n_events long, "
              "n_view long, n_search long, n_favourite long, n_cart long, n_remove_from_cart long, n_purchase long, "
              "n_review long, weight double, decayed_weight double, rating double, first_event_time timestamp, "
              "last_event_time timestamp, revenue double, price_sum double, price_n long, price_min double, "
              "price_max double, price_sumsq double")
    return spark.createDataFrame(out, schema)


def test_time_split_has_no_future_in_training(spark):
    d = lambda n: date(2025, 11, n)  # noqa: E731
    daily = _daily(spark, [("u", "a", d(1), 1, 0), ("u", "b", d(4), 1, 0), ("u", "a", d(5), 0, 1),
                           ("v", "c", d(5), 1, 0),  # v is only in the test period: cold, not evaluated
                           ("w", "a", d(2), 2, 0)])
    split = ev.time_split(daily, RecommendConf(holdout_days=2), FeaturesConf())
    train = {(r["user_id"], r["item_id"]): (r["n_events"], r["as_of"]) for r in split.train.collect()}
    assert train == {("u", "a"): (1, d(3)), ("w", "a"): (2, d(3))}
    assert {(r[0], r[1]) for r in split.truth.collect()} == {("u", "b"), ("u", "a")}


def test_leave_last_and_stratified_splits(spark):
    d = lambda n: date(2025, 11, n)  # noqa: E731
    daily = _daily(spark, [("u", "a", d(1), 1, 0), ("u", "b", d(2), 1, 0), ("u", "c", d(3), 1, 0),
                           ("u", "a", d(3), 1, 0), ("v", "a", d(1), 1, 0)])
    split = ev.leave_last_split(daily, RecommendConf(leave_last_n=1), FeaturesConf())
    # u's last new item is c (day 3): held out; training = u's other items before day 3 (a's day-3 view excluded).
    # v has a single item: nothing held out, its history still trains the models.
    assert {(r[0], r[1]) for r in split.truth.collect()} == {("u", "c")}
    assert {(r["user_id"], r["item_id"], r["n_events"]) for r in split.train.collect()} == {
        ("u", "a", 1), ("u", "b", 1), ("v", "a", 1)}
    inter = spark.createDataFrame([("u", f"i{n}", 1.0) for n in range(8)], "user_id string, item_id string, strength double")
    s = ev.stratified_split(inter, RecommendConf(test_ratio=0.25, seed=3))
    assert (s.train.count(), s.truth.count()) == (6, 2)
    assert s.train.join(s.truth, ["user_id", "item_id"]).count() == 0
    again = ev.stratified_split(inter, RecommendConf(test_ratio=0.25, seed=3))
    assert sorted(r[1] for r in again.truth.collect()) == sorted(r[1] for r in s.truth.collect())


def test_item_neighbours_cosine_and_heavy_user_cap(spark):
    train = spark.createDataFrame([("u1", "a", 3.0), ("u1", "b", 2.0), ("u2", "a", 1.0), ("u2", "b", 1.0),
                                   ("u3", "a", 1.0), ("u3", "c", 1.0), ("u4", "c", 5.0), ("u4", "d", 4.0),
                                   ("u4", "b", 0.5)], "user_id string, item_id string, strength double")
    got = {(r["item_id"], r["neighbour_id"]): (r["rank"], r["similarity"], r["co_users"])
           for r in m.item_neighbours(train, ItemCfConf(neighbours=2, max_items_per_user=2)).collect()}
    # Cap 2: u4 keeps c and d (its strongest), dropping b. n_a = 3, n_b = 2, n_c = 2, n_d = 1.
    assert got[("a", "b")] == (1, pytest.approx(2 / math.sqrt(3 * 2)), 2)
    assert got[("a", "c")] == (2, pytest.approx(1 / math.sqrt(3 * 2)), 1)
    assert got[("d", "c")] == (1, pytest.approx(1 / math.sqrt(1 * 2)), 1)
    assert ("b", "c") not in got and ("a", "d") not in got  # never co-occur after the cap
    assert all(rank <= 2 for rank, _, _ in got.values())
    jac = m.item_neighbours(train, ItemCfConf(similarity="jaccard", max_items_per_user=2)).where(
        "item_id = 'a' AND neighbour_id = 'b'").first()["similarity"]
    assert jac == pytest.approx(2 / (3 + 2 - 2))


def test_cf_score_follows_the_product_formula(spark):
    # u rated j1 = 5 and j2 = 2 (explicit ratings); candidate i has both as neighbours; μ_u = 3.5.
    train = spark.createDataFrame([("u", "j1", 1.0, 5.0, 0), ("u", "j2", 1.0, 2.0, 0)],
                                  "user_id string, item_id string, strength double, rating double, n_purchase long")
    nb = spark.createDataFrame([("i", "j1", 0.9), ("i", "j2", 0.3)],
                               "item_id string, neighbour_id string, similarity double")
    w1, w2 = 1 / (1 + 1.5), 1 / (1 + 1.5)
    product = (5 * w1 + 2 * w2) / (w1 + w2)
    weighted = (0.9 * 5 + 0.3 * 2) / (0.9 + 0.3)
    tie = 1.2 / 2.2 * 1e-3
    got = {r["item_id"]: r["score"] for r in m.cf_scores(train, nb, None, "formula").collect()}
    assert got == {"i": pytest.approx(product + tie)}
    got = {r["item_id"]: r["score"] for r in m.cf_scores(train, nb, None, "weighted").collect()}
    assert got == {"i": pytest.approx(weighted + tie)}
    got = {r["item_id"]: r["score"] for r in m.cf_scores(train, nb, None, "sum").collect()}
    assert got == {"i": pytest.approx(0.9 * 5 + 0.3 * 2)}


def test_implicit_strength_maps_to_the_rating_scale(spark):
    train = spark.createDataFrame([("u", f"i{n}", float(n), None) for n in range(1, 21)],
                                  "user_id string, item_id string, strength double, rating double")
    r = {x["item_id"]: x["r"] for x in m.user_ratings(train).collect()}
    s95 = 19.0  # percentile_approx(0.95) of 1..20
    assert r["i1"] == pytest.approx(1 + 4 * math.log1p(1) / math.log1p(s95))
    assert r["i20"] == 5.0 and min(r.values()) >= 1


def test_baselines_exclude_bought_items(spark):
    t = datetime(2025, 11, 1)
    train = spark.createDataFrame([
        ("u", "a", "c1", 1.0, 0, t.replace(hour=1)), ("u", "b", "c1", 2.0, 1, t.replace(hour=2)),
        ("v", "a", "c1", 1.0, 0, t.replace(hour=3)), ("v", "c", "c2", 1.0, 0, t.replace(hour=4)),
        ("w", "a", "c1", 1.0, 0, t.replace(hour=5))],
        "user_id string, item_id string, category_id string, strength double, n_purchase long, "
        "last_event_time timestamp")
    ex = m.excluded(train, "bought")
    pop = {(r[0], r[1]) for r in ev.top_k(m.popularity(train, 2, ex), 2).collect()}
    assert ("u", "b") not in pop and ("u", "a") in pop and ("w", "b") in pop
    rev = {(r[0], r[1]) for r in m.revisit(train, ex).collect()}
    assert rev == {("u", "a"), ("v", "a"), ("v", "c"), ("w", "a")}  # interacted, not bought
    cat = {(r[0], r[1]) for r in m.category_popularity(train, 5, ex).collect()}
    assert ("u", "b") not in cat and ("w", "b") in cat and ("w", "c") not in cat  # w only knows category c1


def test_als_lists_stay_full_after_removing_a_heavy_users_history(spark):
    from shopmine.conf import AlsConf

    rows = [("heavy", f"i{n}", 1.0 + n % 3, 0) for n in range(9)]  # heavy has seen 9 of the 12 items
    rows += [(f"u{u}", f"i{(u + d) % 12}", 1.0, 0) for u in range(12) for d in range(3)]
    train = spark.createDataFrame(rows, "user_id string, item_id string, strength double, n_purchase long")
    model, idx = m.fit_als(train, AlsConf(max_iter=3), 4, 0.1, 1.0, 2, 7)
    got = m.als_scores(model, idx, 3, m.excluded(train, "seen"))
    heavy = {r["item_id"] for r in got.where("user_id = 'heavy'").collect()}
    assert heavy == {"i9", "i10", "i11"}  # exactly the 3 unseen items, although 9 candidates were excluded
    per_user = {r[0]: r[1] for r in got.groupBy("user_id").count().collect()}
    assert all(v >= 3 for v in per_user.values()) and len(per_user) == 13
