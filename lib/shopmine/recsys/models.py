"""Recommenders over ``gold.interactions``-like frames (user_id, item_id, category_id, strength, rating, counts,
last_event_time). Each model returns candidate scores (user_id, item_id, score) for the users of ``train``, with the
user's excluded items (``recommend.exclude``) already removed; ``evaluation.top_k`` ranks them.

* ``popularity``: items by distinct training users, the same list for everyone;
* ``category_popularity``: the most popular items of the user's three strongest categories;
* ``revisit``: items the user interacted with and did not buy, most recent first (strong on real e-commerce data);
* ``als``: Spark ML ALS with implicit preferences on the decayed strength;
* ``item_cf`` / ``item_cf_sim``: item-similarity CF over top-K neighbours (see ``item_neighbours`` and ``cf_scores``).

Nothing here collects per-user or per-item data to the driver: broadcast frames are bounded by top-N sizes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from shopmine.conf import AlsConf, ItemCfConf

log = logging.getLogger(__name__)
RATING_MAX = 5.0


def excluded(train: DataFrame, mode: str) -> DataFrame | None:
    """(user_id, item_id) pairs never to recommend: bought items, every seen item, or none."""
    if mode == "none":
        return None
    pairs = train if mode == "seen" else train.where(F.col("n_purchase") > 0)
    return pairs.select("user_id", "item_id").distinct()


def _drop_excluded(scores: DataFrame, exclude: DataFrame | None) -> DataFrame:
    return scores if exclude is None else scores.join(exclude, ["user_id", "item_id"], "left_anti")


def _item_users(train: DataFrame) -> DataFrame:
    return train.groupBy("item_id").agg(F.countDistinct("user_id").alias("users"),
                                        F.max("category_id").alias("category_id"))


# -- baselines ---------------------------------------------------------------------------------------------------------


def popularity(train: DataFrame, n: int, exclude: DataFrame | None) -> DataFrame:
    """The ``n`` items with the most distinct training users (ties: item id), for every user."""
    top = (_item_users(train).orderBy(F.desc("users"), F.asc("item_id")).limit(n)  # a distributed top-n
           .select("item_id", F.col("users").cast("double").alias("score")))
    users = train.select("user_id").distinct()
    return _drop_excluded(users.crossJoin(F.broadcast(top)), exclude)


def category_popularity(train: DataFrame, n: int, exclude: DataFrame | None, categories: int = 3) -> DataFrame:
    """Per user, the ``n`` most popular items of each of the user's ``categories`` strongest categories, scored by
    the category's share of the user's strength times the item's popularity within its category (max = 1)."""
    items = _item_users(train).where(F.col("category_id").isNotNull())
    w_cat = Window.partitionBy("category_id")
    top_items = (items.withColumn("r", F.row_number().over(w_cat.orderBy(F.desc("users"), F.asc("item_id"))))
                 .where(F.col("r") <= n)
                 .withColumn("pop", F.col("users") / F.max("users").over(w_cat)))
    per_cat = train.where(F.col("category_id").isNotNull()).groupBy("user_id", "category_id").agg(
        F.sum("strength").alias("s"))
    w_user = Window.partitionBy("user_id")
    user_cats = (per_cat.withColumn("share", F.col("s") / F.sum("s").over(w_user))
                 .withColumn("r", F.row_number().over(w_user.orderBy(F.desc("s"), F.asc("category_id"))))
                 .where(F.col("r") <= categories))
    scores = user_cats.join(top_items.select("category_id", "item_id", "pop"), "category_id") \
        .select("user_id", "item_id", (F.col("share") * F.col("pop")).alias("score"))
    return _drop_excluded(scores, exclude)


def revisit(train: DataFrame, exclude: DataFrame | None) -> DataFrame:
    """Items the user interacted with and did not buy, scored by recency (epoch seconds of the last event) with the
    strength as a fraction breaking ties."""
    cand = train.where(F.col("n_purchase") == 0)
    score = F.unix_seconds("last_event_time").cast("double") + F.least(F.col("strength"), F.lit(1e6)) / 1e6
    return _drop_excluded(cand.select("user_id", "item_id", score.alias("score")), exclude)


# -- ALS -----------------------------------------------------------------------------------------------------------------


@dataclass
class Indexed:
    """``train`` with dense integer ids (ALS needs ints), and the id maps to go back."""

    ratings: DataFrame
    users: DataFrame  # user_id, uidx
    items: DataFrame  # item_id, iidx


def dense_ids(df: DataFrame, column: str, name: str) -> DataFrame:
    """Distinct values of ``column`` numbered 0..n-1 with RDD ``zipWithIndex`` (distributed; no driver-side list)."""
    values = df.select(column).distinct()
    schema = f"{column} string, {name} int"
    return values.rdd.zipWithIndex().map(lambda r: (r[0][0], int(r[1]))).toDF(schema)


def index(train: DataFrame) -> Indexed:
    users = dense_ids(train, "user_id", "uidx").persist()
    items = dense_ids(train, "item_id", "iidx").persist()
    ratings = train.join(users, "user_id").join(items, "item_id").select("uidx", "iidx", "strength")
    return Indexed(ratings, users, items)


def als_estimator(conf: AlsConf, rank: int, reg: float, alpha: float, blocks: int, seed: int) -> ALS:
    return ALS(userCol="uidx", itemCol="iidx", ratingCol="strength", implicitPrefs=True, rank=rank, regParam=reg,
               alpha=alpha, maxIter=conf.max_iter, checkpointInterval=conf.checkpoint_interval,
               numUserBlocks=blocks, numItemBlocks=blocks, coldStartStrategy="drop", seed=seed,
               intermediateStorageLevel="MEMORY_AND_DISK", finalStorageLevel="MEMORY_AND_DISK")


def als_scores(model: ALSModel, idx: Indexed, n: int, exclude: DataFrame | None) -> DataFrame:
    """At least ``n`` scored candidates per user left after removing the user's excluded items, with Spark's blocked
    scoring (``recommendForUserSubset``), mapped back to string ids.

    A user with e excluded items needs n + e candidates. Users are bucketed by the next power of two of that need, and
    each bucket is scored in one call: the candidate rows stay within twice Σ_u (n + e_u), linear in the history,
    instead of users × the heaviest history (one fixed size for all) or short lists for heavy users (a fixed buffer).
    Only the bucket sizes (at most log2 of the longest history) reach the driver.
    """
    users = idx.users
    if exclude is not None:
        counts = exclude.groupBy("user_id").agg(F.count(F.lit(1)).alias("e"))
        users = users.join(counts, "user_id", "left")
    else:
        users = users.withColumn("e", F.lit(0))
    need = F.lit(n) + F.coalesce(F.col("e"), F.lit(0))
    users = users.withColumn("bucket", F.pow(F.lit(2), F.ceil(F.log2(need))).cast("int")).persist()
    parts = []
    for (size,) in users.select("bucket").distinct().collect():
        subset = users.where(F.col("bucket") == size).select("uidx")
        parts.append(model.recommendForUserSubset(subset, int(size)))
    recs = parts[0]
    for part in parts[1:]:
        recs = recs.unionByName(part)
    flat = recs.select("uidx", F.explode("recommendations").alias("r")).select(
        "uidx", F.col("r.iidx").alias("iidx"), F.col("r.rating").cast("double").alias("score"))
    scores = flat.join(idx.users, "uidx").join(idx.items, "iidx").select("user_id", "item_id", "score")
    return _drop_excluded(scores, exclude)


def fit_als(train: DataFrame, conf: AlsConf, rank: int, reg: float, alpha: float, blocks: int, seed: int
            ) -> tuple[ALSModel, Indexed]:
    idx = index(train)
    model = als_estimator(conf, rank, reg, alpha, blocks, seed).fit(idx.ratings)
    return model, idx


# -- item-similarity CF -------------------------------------------------------------------------------------------------


def item_neighbours(train: DataFrame, conf: ItemCfConf) -> DataFrame:
    """Top-``neighbours`` similar items per item, from co-occurrence within users — never the N×N matrix.

    Each user contributes at most ``max_items_per_user`` items (the strongest), so a user adds at most cap² pairs and
    the pair count is bounded by users × cap² however heavy the heaviest user. With c_ij = users having both items and
    n_i = users having i: cosine = c_ij / sqrt(n_i·n_j); jaccard = c_ij / (n_i + n_j − c_ij); conditional (i's
    neighbour j) = c_ij / (n_i · n_j^damping), P(j | i) damped for popular j. Pairs seen by fewer than
    ``min_co_users`` users are dropped. Returns (item_id, neighbour_id, rank, similarity, co_users).
    """
    w = Window.partitionBy("user_id").orderBy(F.desc("strength"), F.asc("item_id"))
    ui = train.withColumn("r", F.row_number().over(w)).where(F.col("r") <= conf.max_items_per_user) \
        .select("user_id", "item_id")
    n = ui.groupBy("item_id").agg(F.count(F.lit(1)).alias("n"))
    a, b = ui.alias("a"), ui.alias("b")
    pairs = (a.join(b, (F.col("a.user_id") == F.col("b.user_id")) & (F.col("a.item_id") < F.col("b.item_id")))
             .groupBy(F.col("a.item_id").alias("i"), F.col("b.item_id").alias("j")).agg(F.count(F.lit(1)).alias("c"))
             .where(F.col("c") >= conf.min_co_users))
    both = pairs.unionByName(pairs.select(F.col("j").alias("i"), F.col("i").alias("j"), "c"))
    both = (both.join(n.select(F.col("item_id").alias("i"), F.col("n").alias("ni")), "i")
            .join(n.select(F.col("item_id").alias("j"), F.col("n").alias("nj")), "j"))
    c, ni, nj = F.col("c"), F.col("ni"), F.col("nj")
    sim = {"cosine": c / F.sqrt(ni * nj), "jaccard": c / (ni + nj - c),
           "conditional": c / (ni * F.pow(nj, F.lit(conf.damping)))}[conf.similarity]
    ranked = both.withColumn("similarity", sim).withColumn(
        "rank", F.row_number().over(Window.partitionBy("i").orderBy(F.desc("similarity"), F.desc("c"), F.asc("j"))))
    return ranked.where(F.col("rank") <= conf.neighbours).select(
        F.col("i").alias("item_id"), F.col("j").alias("neighbour_id"), F.col("rank").cast("int"),
        F.round("similarity", 9).alias("similarity"), F.col("c").cast("long").alias("co_users"))


def user_ratings(train: DataFrame) -> DataFrame:
    """r_uj on a 1..5 scale: the user's review rating where there is one, else the implicit strength mapped as
    1 + 4·min(1, ln(1 + s) / ln(1 + s95)), s95 = the 95th percentile of strength (one aggregate); and μ_u, the mean
    of the user's r_uj."""
    s95 = train.agg(F.percentile_approx("strength", 0.95, 10_000).alias("s95"))
    implicit = 1 + (RATING_MAX - 1) * F.least(F.lit(1.0), F.log1p("strength") / F.log1p(F.greatest("s95", F.lit(1e-9))))
    r = train.crossJoin(F.broadcast(s95)).select("user_id", "item_id", F.coalesce("rating", implicit).alias("r"))
    return r.withColumn("mu", F.avg("r").over(Window.partitionBy("user_id")))


def cf_scores(train: DataFrame, neighbours: DataFrame, exclude: DataFrame | None, variant: str) -> DataFrame:
    """Score every candidate i = a neighbour of one of the user's items, over j ∈ N_i ∩ I_u (N_i: i's top-K):

    * ``formula`` (the product's): r̂_ui = Σ_j r_uj / (1 + |r_uj − μ_u|) ÷ Σ_j 1 / (1 + |r_uj − μ_u|) — a
      deviation-damped mean of the user's ratings of i's neighbours;
    * ``weighted``: r̂_ui = Σ_j sim_ij · r_uj / Σ_j sim_ij, the similarity-weighted mean;
    * ``sum``: Σ_j sim_ij · r_uj, not normalised (classic item-based top-N, as SAR): an item similar to many of the
      user's items outranks one similar to a single highly rated item.

    The two means predict a rating and tie often (a mean of few ratings); ties are broken by the summed similarity,
    added as Σ sim / (1 + Σ sim) · 10⁻³, which keeps the mean's order otherwise.
    """
    r = user_ratings(train)
    joined = neighbours.select("item_id", "neighbour_id", "similarity").join(
        r.select("user_id", F.col("item_id").alias("neighbour_id"), "r", "mu"), "neighbour_id")
    support = F.sum("similarity")
    if variant == "sum":
        score = F.sum(F.col("similarity") * F.col("r"))
    else:
        if variant == "weighted":
            num, den = F.sum(F.col("similarity") * F.col("r")), F.sum("similarity")
        else:
            w = 1 / (1 + F.abs(F.col("r") - F.col("mu")))
            num, den = F.sum(F.col("r") * w), F.sum(w)
        score = num / den + support / (1 + support) * 1e-3
    scores = joined.groupBy("user_id", "item_id").agg(score.alias("score"))
    return _drop_excluded(scores.where(F.col("score").isNotNull()), exclude)


def blocks_for(spark, conf: AlsConf) -> int:
    """ALS user/item blocks: the conf value, else the default parallelism (one block per core)."""
    return conf.blocks or max(1, spark.sparkContext.defaultParallelism)
