"""The recommender interface (recsys/base.py, recsys/registry.py): a model registered by name is configured, fitted on a
training set that never holds the held-out days, evaluated and served like the built-ins; unknown names are refused at
load; and the built-in models give the metrics they gave before the interface existed (pinned on a hand-built log)."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from pyspark.sql import functions as F

from conftest import settings_for
from shopmine.conf import ConfError, RecommendConf
from shopmine.features import aggregates
from shopmine.io.delta import Lake
from shopmine.recsys import models as m
from shopmine.recsys import registry
from shopmine.recsys.base import Context, Fitted, Recommender, Training
from shopmine.recsys.run import run_recommend
from test_ranker import daily_rows


def small_log(seed: int = 5, users: int = 30, items: int = 60, days: int = 8) -> list:
    """Users with a favourite category among 4 (60 % of their picks), 1-4 events on 60 % of 8 days."""
    rnd = random.Random(seed)
    cats = {f"i{i}": f"c{i % 4}" for i in range(items)}
    rows: dict = {}
    for u in range(users):
        taste = rnd.randrange(4)
        for d in range(days):
            if rnd.random() < 0.4:
                continue
            for _ in range(rnd.randrange(1, 5)):
                i = rnd.randrange(items)
                if rnd.random() < 0.6:
                    i = (i // 4) * 4 + taste
                item = f"i{i % items}"
                kind = rnd.choices(["view", "cart", "favourite", "purchase"], [8, 2, 1, 1])[0]
                key = (f"u{u}", item, d)
                old = rows.get(key, (f"u{u}", item, d, {}, cats[item], rnd.randrange(1440)))
                old[3][kind] = old[3].get(kind, 0) + 1
                rows[key] = old
    return list(rows.values())


def lake_inputs(spark, settings):
    daily = daily_rows(spark, small_log())
    last = daily.agg(F.max("event_date")).first()[0]
    inter = aggregates.interactions(daily, last, settings.features)
    return inter, daily, daily.select("item_id", "category_id").distinct(), last


class SeenTraining(Fitted):
    """The toy's lists: the items of the user's training history in reverse id order (excluded ones removed)."""

    def __init__(self, train: Training) -> None:
        super().__init__({"cutoff": str(train.cutoff)})
        self.train = train
        self.explanations = [("reverse_id", 1.0, "toy")]

    def scores(self, n, exclude):
        return m._drop_excluded(self.train.inter.select(
            "user_id", "item_id", (-F.xxhash64("item_id")).cast("double").alias("score")), exclude)


class Toy(Recommender):
    name = "toy"
    needs_time_split = True
    seen: list = []

    def fit(self, train, ctx):
        Toy.seen.append((train.cutoff, train.daily.agg(F.max("event_date")).first()[0]))
        return SeenTraining(train)


@pytest.fixture
def toy():
    registry.register(Toy)
    Toy.seen = []
    yield Toy
    registry.unregister("toy")


def test_unknown_and_duplicate_names_are_refused_at_load(lake_root):
    with pytest.raises(ConfError, match="unknown recommender.*nope.*known: popularity"):
        settings_for(lake_root, "recommend.models=[popularity,nope]")
    with pytest.raises(ConfError, match="distinct"):
        settings_for(lake_root, "recommend.models=[popularity,popularity]")
    with pytest.raises(ConfError, match="ranker need"):
        settings_for(lake_root, "recommend.split=stratified")


def test_registration_is_what_the_configuration_checks(toy, lake_root):
    assert RecommendConf(models=["popularity", "toy"]).models == ["popularity", "toy"]
    registry.unregister("toy")
    with pytest.raises(ValueError, match="unknown recommender.*toy"):
        RecommendConf(models=["popularity", "toy"])
    with pytest.raises(ValueError, match="built-in"):
        registry.unregister("als")


@pytest.mark.slow
def test_a_registered_recommender_is_trained_evaluated_and_served(spark, toy, lake_root):
    s = settings_for(lake_root, "recommend.models=[popularity,toy]", "recommend.serve_model=toy")
    inter, daily, items, last = lake_inputs(spark, s)
    report = run_recommend(Lake(spark, s), s, "r-toy", inter, daily, items)
    cut = last - timedelta(days=s.recommend.holdout_days - 1)
    # fitted twice: on the days before the held-out ones, then (serving) on every day
    assert Toy.seen == [(cut, cut - timedelta(days=1)), (last + timedelta(days=1), last)]
    assert report.served == "toy" and set(report.metrics) == {"popularity", "toy"}
    metrics = spark.read.format("delta").load(f"{lake_root}/ops/model_metrics").where("model = 'toy'")
    assert {r.metric for r in metrics.select("metric").distinct().collect()} >= {"ndcg", "recall", "coverage"}
    assert '"cutoff": "%s"' % cut in metrics.first().details
    explained = spark.read.format("delta").load(f"{lake_root}/ops/model_explanations").where("model = 'toy'")
    assert [(r.feature, r.kind) for r in explained.collect()] == [("reverse_id", "toy")]
    top = spark.read.format("delta").load(f"{lake_root}/gold/recs_topn")
    assert {r.model for r in top.select("model").distinct().collect()} == {"toy"}
    bought = inter.where("n_purchase > 0").select("user_id", "item_id")
    assert top.join(bought, ["user_id", "item_id"]).count() == 0          # excluded items honoured
    per_user = top.groupBy("user_id").agg(F.count(F.lit(1)).alias("n"), F.max("rank").alias("r")).collect()
    expected = inter.join(bought, ["user_id", "item_id"], "left_anti").groupBy("user_id").count()
    assert {r.user_id: min(r["count"], s.recommend.top_n) for r in expected.collect()} == \
        {r.user_id: r.n for r in per_user}
    assert all(r.n == r.r for r in per_user)                                  # ranks 1..n


def test_a_context_shares_one_frame_per_key_and_releases_it(spark):
    ctx = Context(spark, None)
    made = []
    df = ctx.shared("k", lambda: made.append(1) or spark.range(3))
    assert ctx.shared("k", lambda: made.append(1) or spark.range(5)) is df and made == [1]
    assert df.is_cached
    ctx.release()
    assert not df.is_cached


# The metrics every built-in model reached on small_log() with the code before the Recommender interface (993f6ab),
# 4 of each model's 17 figures: the interface must not change what the models compute.
BEFORE = {
    "popularity": {"ndcg@10": 0.130042932, "map@10": 0.0741263, "coverage@10": 0.183333333, "recall@20": 0.377586207},
    "category_popularity": {"ndcg@10": 0.23469545, "map@10": 0.147856231, "coverage@10": 0.783333333,
                            "recall@20": 0.625287356},
    "revisit": {"ndcg@10": 0.122239741, "map@10": 0.058705072, "coverage@10": 1.0, "recall@20": 0.213793103},
    "als": {"ndcg@10": 0.162681724, "map@10": 0.074452655, "coverage@10": 1.0, "recall@20": 0.53045977},
    "item_cf": {"ndcg@10": 0.05766841, "map@10": 0.026600985, "coverage@10": 0.983333333, "recall@20": 0.348850575},
    "item_cf_sim": {"ndcg@10": 0.066733723, "map@10": 0.027654625, "coverage@10": 1.0, "recall@20": 0.346551724},
    "item_cf_sum": {"ndcg@10": 0.252298717, "map@10": 0.155030104, "coverage@10": 1.0, "recall@20": 0.514942529},
    "ranker": {"ndcg@10": 0.2433213, "map@10": 0.121362662, "coverage@10": 1.0, "recall@20": 0.62816092},
}
SERVED_BEFORE = ("item_cf_sum", [("i10", 1), ("i18", 2), ("i38", 3), ("i22", 4), ("i58", 5)])  # u0's list


@pytest.mark.slow
def test_built_in_models_compute_what_they_did_before_the_interface(spark, lake_root):
    s = settings_for(lake_root, "recommend.ranker.cutoffs=3", "recommend.ranker.max_iter=5",
                     "recommend.als.max_iter=3")
    spark.sparkContext.setCheckpointDir(f"{lake_root}/_checkpoints")
    inter, daily, items, _ = lake_inputs(spark, s)
    report = run_recommend(Lake(spark, s), s, "r-before", inter, daily, items)
    for model, want in BEFORE.items():
        assert {k: report.metrics[model][k] for k in want} == pytest.approx(want, abs=1e-8), model
    top = spark.read.format("delta").load(f"{lake_root}/gold/recs_topn").where("user_id = 'u0'").orderBy("rank")
    assert (report.served, [(r.item_id, r.rank) for r in top.limit(5).collect()]) == SERVED_BEFORE
