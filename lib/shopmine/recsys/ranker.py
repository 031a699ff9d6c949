"""The two-stage recommender (model ``ranker``): candidates from several sources, ranked by a gradient-boosted tree
over point-in-time features.

Everything is computed at a *cutoff* date c from the per-day interactions strictly before c (``Snapshot``): the
candidates, their features and, for training, a label = "the user had a relevant event (``recommend.relevant_types``)
with the item in [c, c + holdout_days)". Training rows come from ``recommend.ranker.cutoffs`` cutoffs one day apart,
the latest one ending its label window exactly where the evaluated window starts, so no training row sees the
evaluated days and no row sees anything at or after its own cutoff. Serving refits on the same number of cutoffs
moved forward to the end of the data and scores at the day after the last date.

Candidate sources (per user, ``recommend.ranker.sources`` candidates each; the user's excluded items removed):

* ``revisit``: items the user touched and did not buy, most recent first;
* ``covisit``: neighbours of the user's most recent items by co-occurrence within the same user-day (a session
  proxy), cosine over baskets, weighted by 1/√(recency rank of the seed item);
* ``category_popularity``: the most popular items of the user's strongest categories;
* ``popularity``: items with the most distinct users over the last ``popularity_days`` before the cutoff (also the
  list of a user with no other candidate).

Nothing is collected to the driver except the feature importances (one number per feature).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, timedelta

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import GBTClassifier
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from shopmine.conf import RANKER_SOURCES, ItemCfConf, RankerConf, Settings
from shopmine.features import aggregates
from shopmine.evaluation import ranking as ev
from shopmine.recsys import models as m

log = logging.getLogger(__name__)

SOURCES = RANKER_SOURCES
NO_RANK = 1_000.0      # the rank of a candidate a source did not propose
NEVER_HOURS = 10_000.0  # "hours since" for something that never happened
COUNTS = aggregates.COUNTS

# One definition of the ranker's features, in the order of the model's vector: name -> what it is.
FEATURES: dict[str, str] = {
    **{f"{s}_rank": f"rank of the item in the {s} source (1 = best; {NO_RANK:.0f} when not proposed)" for s in SOURCES},
    **{f"{s}_score": f"the {s} source's score (0 when not proposed)" for s in ("covisit", "category_popularity")},
    "sources": "how many sources proposed the item",
    **{c: f"the user's {c[2:].replace('_', ' ')} events on the item" for c in COUNTS},
    "strength": "the user-item strength decayed to the cutoff (features.half_life_days)",
    "ui_hours_last": "hours from the user's last event on the item to the cutoff",
    "ui_hours_first": "hours from the user's first event on the item to the cutoff",
    "ui_days": "distinct days the user touched the item",
    "ui_events_1d": "the user's events on the item on the last day before the cutoff",
    "ui_events_3d": "the user's events on the item in the last 3 days",
    "carted_not_bought": "1 when the user carted the item and never bought it",
    "u_events": "the user's events (all items)",
    "u_items": "distinct items the user touched",
    "u_days": "distinct days the user was active",
    "u_purchases": "the user's purchases",
    "u_hours_last": "hours from the user's last event to the cutoff",
    "u_events_1d": "the user's events on the last day before the cutoff",
    "i_users": "distinct users of the item",
    "i_users_1d": "distinct users of the item on the last day",
    "i_users_3d": "distinct users of the item in the last 3 days",
    "i_trend": "i_users_1d / (1 + i_users_3d)",
    "i_buy_rate": "purchases of the item / (1 + its users)",
    "uc_share": "share of the user's events in the item's category",
    "uc_items": "distinct items the user touched in the item's category",
    "uc_hours_last": "hours from the user's last event in the item's category to the cutoff",
    "ub_share": "share of the user's events on the item's brand",
    "price_ratio": "the item's mean price / the mean price of the user's items (-1 when unknown)",
}


@dataclass(frozen=True)
class Snapshot:
    """What is known at the start of ``cutoff``: the per-day rows before it, folded into interactions."""

    cutoff: date
    history: DataFrame   # gold.interactions_daily rows with event_date < cutoff
    inter: DataFrame     # gold.interactions-like rows as of cutoff - 1
    exclude: DataFrame | None


def snapshot(daily: DataFrame, cutoff: date, settings: Settings) -> Snapshot:
    history = daily.where(F.col("event_date") < F.lit(cutoff))
    inter = aggregates.interactions(history, cutoff - timedelta(days=1), settings.features).persist()
    exclude = m.excluded(inter, settings.recommend.exclude)
    return Snapshot(cutoff, history, inter, exclude.persist() if exclude is not None else None)


# -- candidates --------------------------------------------------------------------------------------------------------


def _ranked(scores: DataFrame, n: int, source: str) -> DataFrame:
    w = Window.partitionBy("user_id").orderBy(F.desc("score"), F.asc("item_id"))
    return (scores.withColumn("r", F.row_number().over(w)).where(F.col("r") <= n)
            .select("user_id", "item_id", F.col("score").alias(f"{source}_score"),
                    F.col("r").cast("double").alias(f"{source}_rank")))


def covisit_neighbours(history: DataFrame, conf: RankerConf) -> DataFrame:
    """Item neighbours by co-occurrence in the same user-day (each user-day is one basket), cosine similarity."""
    baskets = history.select(F.concat_ws("|", "user_id", F.col("event_date").cast("string")).alias("user_id"),
                             "item_id", F.col("weight").alias("strength"))
    cf = ItemCfConf(similarity="cosine", neighbours=conf.covisit_neighbours, max_items_per_user=conf.basket_items,
                    min_co_users=1)
    return m.item_neighbours(baskets, cf)


def covisit(snap: Snapshot, neighbours: DataFrame, conf: RankerConf) -> DataFrame:
    """Σ over the user's ``seed_items`` most recent items j of sim(i, j) / √(recency rank of j)."""
    w = Window.partitionBy("user_id").orderBy(F.desc("last_event_time"), F.asc("item_id"))
    seeds = (snap.inter.withColumn("r", F.row_number().over(w)).where(F.col("r") <= conf.seed_items)
             .select("user_id", F.col("item_id").alias("seed"), (1 / F.sqrt("r")).alias("wt")))
    nb = neighbours.select(F.col("item_id").alias("seed"), F.col("neighbour_id").alias("item_id"), "similarity")
    scores = seeds.join(nb, "seed").groupBy("user_id", "item_id").agg(
        F.sum(F.col("similarity") * F.col("wt")).alias("score"))
    return m._drop_excluded(scores, snap.exclude)


def recent_popularity(snap: Snapshot, n: int, days: int) -> DataFrame:
    recent = snap.history.where(F.col("event_date") >= F.lit(snap.cutoff - timedelta(days=days)))
    top = (recent.groupBy("item_id").agg(F.countDistinct("user_id").cast("double").alias("score"))
           .orderBy(F.desc("score"), F.asc("item_id")).limit(n))  # a distributed top-n
    users = snap.inter.select("user_id").distinct()
    return m._drop_excluded(users.crossJoin(F.broadcast(top)), snap.exclude)


def candidates(snap: Snapshot, conf: RankerConf, buffer: int, top_n: int = 0) -> DataFrame:
    """(user_id, item_id, <source>_score, <source>_rank for every source, sources): the union of the sources. The
    popularity source proposes at least ``top_n`` items, so that every user can get a full list."""
    n = dict(conf.sources)
    if n.get("popularity"):
        n["popularity"] = max(n["popularity"], top_n)
    parts = []
    if n.get("revisit"):
        parts.append(_ranked(m.revisit(snap.inter, snap.exclude), n["revisit"], "revisit"))
    if n.get("covisit"):
        nb = covisit_neighbours(snap.history, conf)
        parts.append(_ranked(covisit(snap, nb, conf), n["covisit"], "covisit"))
    if n.get("category_popularity"):
        parts.append(_ranked(m.category_popularity(snap.inter, n["category_popularity"], snap.exclude),
                             n["category_popularity"], "category_popularity"))
    if n.get("popularity"):
        parts.append(_ranked(recent_popularity(snap, n["popularity"] + buffer, conf.popularity_days),
                             n["popularity"], "popularity"))
    union = parts[0]
    for p in parts[1:]:
        union = union.unionByName(p, allowMissingColumns=True)
    aggs = []
    for s in SOURCES:
        rank = f"{s}_rank"
        aggs += [F.coalesce(F.min(rank) if rank in union.columns else F.lit(None), F.lit(NO_RANK)).alias(rank),
                 F.coalesce(F.max(f"{s}_score") if rank in union.columns else F.lit(None), F.lit(0.0))
                 .cast("double").alias(f"{s}_score")]
    out = union.groupBy("user_id", "item_id").agg(*aggs)
    return out.withColumn("sources", sum((F.col(f"{s}_rank") < NO_RANK).cast("double") for s in SOURCES))


# -- features and labels -----------------------------------------------------------------------------------------------


def _since(c: date, days: int) -> F.Column:
    return F.lit(c - timedelta(days=days))


def fold_pairs(snap: Snapshot) -> DataFrame:
    """The history folded per (user, item), with what the user / item / category / brand features need."""
    since = lambda days: _since(snap.cutoff, days)  # noqa: E731
    return snap.history.groupBy("user_id", "item_id").agg(
        F.count(F.lit(1)).alias("ui_days"),  # one per-day row per (user, item, day)
        F.sum(F.when(F.col("event_date") >= since(1), F.col("n_events"))).alias("ui_events_1d"),
        F.sum(F.when(F.col("event_date") >= since(3), F.col("n_events"))).alias("ui_events_3d"),
        F.max("event_date").alias("last_date"), F.sum("n_events").alias("events"),
        F.sum("n_purchase").alias("purchases"), F.max("last_event_time").alias("last_time"),
        F.max("category_id").alias("category_id"), F.max("brand").alias("brand"),
        F.sum("price_sum").alias("price_sum"), F.sum("price_n").alias("price_n"))


def features(cands: DataFrame, snap: Snapshot, pairs: DataFrame | None = None) -> DataFrame:
    """The candidates with every feature of ``FEATURES`` (nulls filled), from the snapshot only.

    One pass folds the history per (user, item) (``fold_pairs``; pass it persisted); the user, item, user-category
    and user-brand aggregates are folded from that, not from the raw rows (no distinct counts that would expand
    them once per distinct column)."""
    c = snap.cutoff
    t0 = F.unix_seconds(F.lit(c).cast("timestamp"))
    hours = lambda col: ((t0 - F.unix_seconds(col)) / 3600.0)  # noqa: E731
    since = lambda days: _since(c, days)  # noqa: E731
    h = snap.history
    pairs = fold_pairs(snap) if pairs is None else pairs
    price = F.try_divide(F.sum("price_sum"), F.sum("price_n"))
    user = pairs.groupBy("user_id").agg(
        F.sum("events").alias("u_events"), F.count(F.lit(1)).alias("u_items"),
        F.sum("purchases").alias("u_purchases"), hours(F.max("last_time")).alias("u_hours_last"),
        F.sum("ui_events_1d").alias("u_events_1d"), price.alias("u_price"))
    days = h.groupBy("user_id").agg(F.countDistinct("event_date").alias("u_days"))
    item = pairs.groupBy("item_id").agg(
        F.count(F.lit(1)).alias("i_users"), F.sum("purchases").alias("i_purchases"),
        F.count(F.when(F.col("last_date") >= since(1), 1)).alias("i_users_1d"),
        F.count(F.when(F.col("last_date") >= since(3), 1)).alias("i_users_3d"),
        F.max("category_id").alias("category_id"), F.max("brand").alias("brand"), price.alias("i_price"))
    ucat = pairs.where(F.col("category_id").isNotNull()).groupBy("user_id", "category_id").agg(
        F.sum("events").alias("uc_events"), F.count(F.lit(1)).alias("uc_items"),
        hours(F.max("last_time")).alias("uc_hours_last"))
    ubrand = pairs.where(F.col("brand").isNotNull()).groupBy("user_id", "brand").agg(F.sum("events").alias("ub_events"))
    ui = snap.inter.select("user_id", "item_id", *COUNTS, "strength",
                           hours("last_event_time").alias("ui_hours_last"),
                           hours("first_event_time").alias("ui_hours_first"))
    ui_win = pairs.select("user_id", "item_id", "ui_days", "ui_events_1d", "ui_events_3d")
    rows = (cands.join(ui, ["user_id", "item_id"], "left").join(ui_win, ["user_id", "item_id"], "left")
            .join(user, "user_id", "left").join(days, "user_id", "left").join(item, "item_id", "left")
            .join(ucat, ["user_id", "category_id"], "left").join(ubrand, ["user_id", "brand"], "left"))
    rows = rows.select(
        "*",
        ((F.col("n_cart") > 0) & (F.col("n_purchase") == 0)).cast("double").alias("carted_not_bought"),
        (F.col("i_users_1d") / (1 + F.col("i_users_3d"))).alias("i_trend"),
        (F.col("i_purchases") / (1 + F.col("i_users"))).alias("i_buy_rate"),
        F.try_divide(F.col("uc_events"), F.col("u_events")).alias("uc_share"),
        F.try_divide(F.col("ub_events"), F.col("u_events")).alias("ub_share"),
        F.coalesce(F.try_divide(F.col("i_price"), F.col("u_price")), F.lit(-1.0)).alias("price_ratio"))
    hours_cols = [f for f in FEATURES if "hours" in f]
    rows = rows.fillna(NEVER_HOURS, subset=hours_cols).fillna(0.0, subset=[f for f in FEATURES if f not in hours_cols])
    return rows.select("user_id", "item_id", *[F.col(f).cast("double").alias(f) for f in FEATURES])


def labels(daily: DataFrame, cutoff: date, days: int, types: list[str]) -> DataFrame:
    """(user_id, item_id, label = 1.0): a relevant event in [cutoff, cutoff + days)."""
    window = (F.col("event_date") >= F.lit(cutoff)) & (F.col("event_date") < F.lit(cutoff + timedelta(days=days)))
    return daily.where(window & ev._relevant(daily, types)).select("user_id", "item_id").distinct().withColumn("label", F.lit(1.0))


# -- training and scoring ----------------------------------------------------------------------------------------------


@dataclass
class RankerRun:
    """The ranker's moving parts for one ``recommend`` run: per-cutoff candidate frames are built once and reused by
    evaluation and serving (their cutoffs overlap)."""

    daily: DataFrame
    settings: Settings
    _rows: dict[date, DataFrame] = field(default_factory=dict)
    stats: dict = field(default_factory=dict)

    @property
    def conf(self) -> RankerConf:
        return self.settings.recommend.ranker

    def scored_candidates(self, cutoff: date) -> DataFrame:
        """Candidates with features at ``cutoff`` (persisted; reused)."""
        if cutoff not in self._rows:
            snap = snapshot(self.daily, cutoff, self.settings)
            rec = self.settings.recommend
            pairs = fold_pairs(snap).persist()
            rows = features(candidates(snap, self.conf, rec.candidate_buffer, rec.top_n), snap, pairs).persist()
            rows.count()  # materialise, then the snapshot's cached folds can go
            for df in (snap.inter, snap.exclude, pairs):
                if df is not None:
                    df.unpersist()
            self._rows[cutoff] = rows
        return self._rows[cutoff]

    def training_rows(self, cutoff: date) -> DataFrame:
        """Labelled rows at ``cutoff``: users with at least one positive candidate; at most ``negatives_per_user``
        negatives per user, drawn by a hash of (seed, user, item, cutoff)."""
        rec = self.settings.recommend
        rows = self.scored_candidates(cutoff).join(labels(self.daily, cutoff, rec.holdout_days, rec.relevant_types),
                                                   ["user_id", "item_id"], "left").fillna(0.0, subset=["label"])
        with_pos = rows.groupBy("user_id").agg(F.max("label").alias("p")).where(F.col("p") > 0).select("user_id")
        key = F.xxhash64(F.lit(rec.seed), "user_id", "item_id", F.lit(str(cutoff)))
        w = Window.partitionBy("user_id", "label").orderBy(key)
        return (rows.join(with_pos, "user_id", "left_semi").withColumn("r", F.row_number().over(w))
                .where((F.col("label") > 0) | (F.col("r") <= self.conf.negatives_per_user)).drop("r")
                .withColumn("cutoff", F.lit(cutoff)))

    def fit(self, last_label_day: date) -> PipelineModel:
        """A GBT on rows from ``cutoffs`` cutoffs whose label windows end at ``last_label_day`` at the latest."""
        h = self.settings.recommend.holdout_days
        latest = last_label_day - timedelta(days=h - 1)
        cutoffs = [latest - timedelta(days=i) for i in range(self.conf.cutoffs)]
        first = self.daily.agg(F.min("event_date")).first()[0]
        cutoffs = [c for c in cutoffs if c > first] or [latest]
        rows = None
        for c in cutoffs:
            part = self.training_rows(c)
            rows = part if rows is None else rows.unionByName(part)
        rows = rows.persist()
        counts = rows.groupBy().agg(F.count(F.lit(1)).alias("n"), F.sum("label").alias("pos")).first()
        log.info("  ranker: %s training rows (%s positive) from cutoffs %s", f"{counts['n']:,}",
                 f"{int(counts['pos'] or 0):,}", ", ".join(str(c) for c in sorted(cutoffs)))
        self.stats = {"cutoffs": [str(c) for c in sorted(cutoffs)], "training_rows": int(counts["n"]),
                      "positives": int(counts["pos"] or 0)}
        model = self.estimator().fit(rows)
        rows.unpersist()
        return model

    def estimator(self) -> Pipeline:
        c = self.conf
        gbt = GBTClassifier(labelCol="label", featuresCol="features", maxIter=c.max_iter, maxDepth=c.max_depth,
                            stepSize=c.step_size, subsamplingRate=c.subsampling_rate, seed=self.settings.recommend.seed)
        return Pipeline(stages=[VectorAssembler(inputCols=list(FEATURES), outputCol="features"), gbt])

    def recommend(self, model: PipelineModel, cutoff: date) -> DataFrame:
        """(user_id, item_id, score = P(relevant)) for every candidate at ``cutoff``."""
        scored = model.transform(self.scored_candidates(cutoff))
        return scored.select("user_id", "item_id", vector_to_array("probability")[1].alias("score"))

    def candidate_recall(self, cutoff: date, truth: DataFrame) -> float:
        """Share of the held-out (user, item) pairs that are among the candidates at all."""
        cands = self.scored_candidates(cutoff).select("user_id", "item_id", F.lit(1).alias("hit"))
        row = truth.join(cands, ["user_id", "item_id"], "left").agg(
            F.count(F.lit(1)).alias("n"), F.count("hit").alias("hits")).first()
        return float(row["hits"] / row["n"]) if row["n"] else 0.0

    def release(self) -> None:
        for rows in self._rows.values():
            rows.unpersist()
        self._rows.clear()


def importances(model: PipelineModel) -> dict[str, float]:
    gbt = model.stages[-1]
    return {name: float(v) for name, v in zip(FEATURES, gbt.featureImportances.toArray())}
