"""Offline evaluation of recommenders, distributed: splits without future leaks, ranking metrics at K, catalogue
coverage, novelty and intra-list diversity.

Frames used throughout:

* ``recs``: (user_id, item_id, score) — any number of candidates per user; ranked here by score, ties by item id;
* ``truth``: (user_id, item_id) — the held-out relevant items;
* ``train``: (user_id, item_id, ...) — what the models saw.

Every metric is averaged over the evaluated users: the users with held-out relevant items *and* a training
history (a model cannot be asked about users it never saw; cold-start users are excluded from every model alike).
A user with no recommendation scores 0 on every per-user metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from shopmine.conf import FeaturesConf, RecommendConf
from shopmine.features import aggregates


# -- splits ----------------------------------------------------------------------------------------------------------


@dataclass
class Split:
    name: str
    train: DataFrame   # gold.interactions-like rows built from training events only
    truth: DataFrame   # (user_id, item_id) relevant held-out items, for users with a training history
    cutoff: date | None = None  # time split: the first held-out day (training saw only the days before it)


def _relevant(daily: DataFrame, types: list[str]) -> F.Column:
    return sum((F.col(f"n_{t}") for t in types), F.lit(0)) > 0


def time_split(daily: DataFrame, conf: RecommendConf, features: FeaturesConf) -> Split:
    """Global time split: the last ``holdout_days`` event dates are held out. Training interactions are folded from
    the per-day table up to the day before the cut (as if featurized then); nothing after the cut leaks in."""
    last = daily.agg(F.max("event_date")).first()[0]
    cut = last - timedelta(days=conf.holdout_days - 1)
    train = aggregates.interactions(daily.where(F.col("event_date") < F.lit(cut)), cut - timedelta(days=1), features)
    held = daily.where((F.col("event_date") >= F.lit(cut)) & _relevant(daily, conf.relevant_types))
    truth = held.select("user_id", "item_id").distinct().join(train.select("user_id").distinct(), "user_id", "left_semi")
    return Split(f"time(last {conf.holdout_days} days from {cut})", train, truth, cut)


def leave_last_split(daily: DataFrame, conf: RecommendConf, features: FeaturesConf) -> Split:
    """Per user, the ``leave_last_n`` items first seen most recently are held out; the user's training history is
    every other item's events before the day the first held-out item appeared (no same-day or later events)."""
    first_seen = daily.groupBy("user_id", "item_id").agg(F.min("first_event_time").alias("t"),
                                                         F.min("event_date").alias("d"))
    w = Window.partitionBy("user_id").orderBy(F.desc("t"), F.desc("item_id"))
    ranked = first_seen.withColumn("r", F.row_number().over(w)).withColumn("n", F.count(F.lit(1)).over(
        Window.partitionBy("user_id")))
    held = ranked.where((F.col("r") <= conf.leave_last_n) & (F.col("n") > conf.leave_last_n))
    cut = held.groupBy("user_id").agg(F.min("d").alias("cut"))
    # Users with nothing held out (a single item) keep their whole history: it still trains the models.
    before = (daily.join(cut, "user_id", "left").where(F.col("cut").isNull() | (F.col("event_date") < F.col("cut")))
              .join(held.select("user_id", "item_id"), ["user_id", "item_id"], "left_anti").drop("cut"))
    as_of = daily.agg(F.max("event_date")).first()[0]
    train = aggregates.interactions(before, as_of, features)
    relevant = daily.where(_relevant(daily, conf.relevant_types)).select("user_id", "item_id").distinct()
    truth = (held.select("user_id", "item_id").join(relevant, ["user_id", "item_id"], "left_semi")
             .join(train.select("user_id").distinct(), "user_id", "left_semi"))
    return Split(f"leave_last({conf.leave_last_n})", train, truth)


def stratified_split(inter: DataFrame, conf: RecommendConf) -> Split:
    """Per user, a random ``test_ratio`` share of the user's items is held out (deterministic by ``seed``), as in
    Microsoft Recommenders' ``python_stratified_split`` (the MovieLens protocol of ../shared/REFERENCE.md).
    Training rows keep their full-history strength: this split ignores time, like the protocol it reproduces."""
    key = F.xxhash64(F.lit(conf.seed), "user_id", "item_id")
    w = Window.partitionBy("user_id").orderBy(key, "item_id")
    ranked = inter.withColumn("_r", F.row_number().over(w)).withColumn(
        "_n", F.count(F.lit(1)).over(Window.partitionBy("user_id")))
    n_train = F.round(F.col("_n") * (1 - conf.test_ratio))
    train = ranked.where(F.col("_r") <= n_train).drop("_r", "_n")
    truth = ranked.where(F.col("_r") > n_train).select("user_id", "item_id") \
        .join(train.select("user_id").distinct(), "user_id", "left_semi")
    return Split(f"stratified({1 - conf.test_ratio:.2f}/{conf.test_ratio:.2f}, seed {conf.seed})", train, truth)


# -- ranking -----------------------------------------------------------------------------------------------------------


def top_k(recs: DataFrame, k: int) -> DataFrame:
    """The best ``k`` rows per user by score (ties: item id), with ``rank`` 1..k."""
    w = Window.partitionBy("user_id").orderBy(F.desc("score"), F.asc("item_id"))
    return recs.withColumn("rank", F.row_number().over(w)).where(F.col("rank") <= k)


def _lists(recs: DataFrame, truth: DataFrame, k: int) -> DataFrame:
    """Per evaluated user: ``pred`` (ranked item ids, at most k) and ``rel`` (relevant item ids)."""
    pred = top_k(recs, k).groupBy("user_id").agg(
        F.transform(F.array_sort(F.collect_list(F.struct("rank", "item_id"))), lambda x: x["item_id"]).alias("pred"))
    rel = truth.groupBy("user_id").agg(F.collect_set("item_id").alias("rel"))
    return rel.join(pred, "user_id", "left").withColumn(
        "pred", F.coalesce("pred", F.array().cast("array<string>")))


def per_user_metrics(recs: DataFrame, truth: DataFrame, k: int) -> DataFrame:
    """Per evaluated user, at cut-off ``k`` (pred_i = the item at rank i, rel = the relevant set):

    * ``precision`` = |top-k ∩ rel| / k
    * ``recall`` = |top-k ∩ rel| / |rel|
    * ``hit_rate`` = 1 if top-k ∩ rel is not empty, else 0
    * ``ndcg`` = DCG / IDCG with DCG = Σ_{i ≤ k, pred_i ∈ rel} 1 / log2(i + 1) and IDCG = Σ_{i ≤ min(k, |rel|)}
      1 / log2(i + 1) (binary relevance)
    * ``map`` (average precision) = Σ_{i ≤ k, pred_i ∈ rel} P@i / |rel|, P@i = |top-i ∩ rel| / i — divided by
      |rel|, not by min(k, |rel|), as Microsoft Recommenders does (so figures compare with ../shared/REFERENCE.md)
    """
    lists = _lists(recs, truth, k)
    positions = F.sequence(F.lit(1), F.greatest(F.size("pred"), F.lit(1)))
    is_hit = lambda i: F.when(F.size("pred") >= i, F.array_contains("rel", F.element_at("pred", i))).otherwise(False)  # noqa: E731
    hits = F.size(F.array_intersect("pred", "rel"))
    dcg = F.aggregate(F.transform(positions, lambda i: F.when(is_hit(i), 1 / F.log2(i + 1)).otherwise(0.0)),
                      F.lit(0.0), lambda acc, x: acc + x)
    idcg = F.aggregate(F.transform(F.sequence(F.lit(1), F.least(F.lit(k), F.size("rel"))), lambda i: 1 / F.log2(i + 1)),
                       F.lit(0.0), lambda acc, x: acc + x)
    ap = F.aggregate(F.transform(positions, lambda i: F.when(
        is_hit(i), F.size(F.array_intersect(F.slice("pred", 1, i), "rel")) / i).otherwise(0.0)),
        F.lit(0.0), lambda acc, x: acc + x)
    return lists.select(
        "user_id",
        (hits / F.lit(k)).alias("precision"),
        (hits / F.size("rel")).alias("recall"),
        (hits > 0).cast("double").alias("hit_rate"),
        (dcg / idcg).alias("ndcg"),
        (ap / F.size("rel")).alias("map"),
    )


PER_USER = ("precision", "recall", "ndcg", "map", "hit_rate")


def ranking_metrics(recs: DataFrame, truth: DataFrame, k: int) -> dict[str, float]:
    """The per-user metrics averaged over the evaluated users (one aggregate row), plus ``users``."""
    row = per_user_metrics(recs, truth, k).agg(F.count(F.lit(1)).alias("users"),
                                               *[F.avg(m).alias(m) for m in PER_USER]).first()
    return {m: float(row[m] or 0.0) for m in PER_USER} | {"users": int(row["users"])}


def beyond_accuracy(recs: DataFrame, train: DataFrame, k: int, categories: DataFrame | None = None) -> dict[str, float]:
    """Over every user's top-``k`` list:

    * ``coverage`` = distinct recommended items / distinct items in training (catalogue coverage)
    * ``novelty`` = mean over recommended items of −log2(p_i), p_i = share of training users who interacted with i
      (items unseen in training count as seen by one user)
    * ``diversity`` (intra-list) = mean over lists of the share of item pairs from different categories (needs
      ``categories``: item_id, category_id; None without it)
    """
    top = top_k(recs, k).select("user_id", "item_id")
    n_users = train.select("user_id").distinct().count()
    pop = train.groupBy("item_id").agg(F.countDistinct("user_id").alias("u"))
    catalogue = pop.count()
    row = (top.join(pop, "item_id", "left")
           .agg(F.countDistinct("item_id").alias("items"),
                F.avg(-F.log2(F.coalesce("u", F.lit(1)) / F.lit(max(n_users, 1)))).alias("novelty")).first())
    out = {"coverage": (row["items"] / catalogue) if catalogue else 0.0, "novelty": float(row["novelty"] or 0.0)}
    if categories is not None:
        cats = top.join(categories.select("item_id", "category_id"), "item_id", "left").groupBy("user_id").agg(
            F.collect_list(F.coalesce("category_id", F.col("item_id"))).alias("c"))
        n = F.size("c")
        same = F.aggregate(F.transform(F.array_distinct("c"), lambda v: F.size(F.filter("c", lambda x: x == v))),
                           F.lit(0), lambda acc, m: acc + m * (m - 1))  # ordered pairs sharing a category
        ild = cats.where(n > 1).select((1 - same / (n * (n - 1))).alias("d")).agg(F.avg("d")).first()[0]
        out["diversity"] = float(ild) if ild is not None else None
    return out
