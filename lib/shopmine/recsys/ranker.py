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
* ``als`` (off unless given a count): ALS's best items, fitted on the interactions before the cutoff;
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
from shopmine.features import point_in_time as pit
from shopmine.evaluation import ranking as ev
from shopmine.recsys import models as m
from shopmine.recsys.base import Context, Fitted, Recommender, Training

log = logging.getLogger(__name__)

SOURCES = RANKER_SOURCES
NO_RANK = 1_000.0      # the rank of a candidate a source did not propose

# One definition of the ranker's features, in the order of the model's vector: name -> what it is. The pair
# features are the point-in-time builder's (features.point_in_time), shared with the item-level purchase predictor.
FEATURES: dict[str, str] = {
    **{f"{s}_rank": f"rank of the item in the {s} source (1 = best; {NO_RANK:.0f} when not proposed)" for s in SOURCES},
    **{f"{s}_score": f"the {s} source's score (0 when not proposed)" for s in ("covisit", "category_popularity", "als")},
    "sources": "how many sources proposed the item",
    **pit.PAIR_FEATURES,
}


@dataclass(frozen=True)
class Snapshot:
    """What is known at the start of ``cutoff``: the per-day rows before it, folded into interactions."""

    cutoff: date
    history: DataFrame   # gold.interactions_daily rows with event_date < cutoff
    inter: DataFrame     # gold.interactions-like rows as of cutoff - 1
    exclude: DataFrame | None


def snapshot(daily: DataFrame, cutoff: date, settings: Settings) -> Snapshot:
    h = pit.history(daily, cutoff, settings.features)
    history, inter = h.rows, h.inter.persist()
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


def als_candidates(snap: Snapshot, settings: Settings, n: int) -> DataFrame:
    """The ``n`` best items by ALS (implicit; the first point of each ``recommend.als`` grid list, no tuning per
    cutoff) fitted on the interactions before the cutoff."""
    rec = settings.recommend
    a = rec.als
    blocks = m.blocks_for(snap.inter.sparkSession, a)
    model, idx = m.fit_als(snap.inter, a, a.rank[0], a.reg_param[0], a.alpha[0], blocks, rec.seed)
    return m.als_scores(model, idx, n, snap.exclude)


def candidates(snap: Snapshot, settings: Settings) -> DataFrame:
    """(user_id, item_id, <source>_score, <source>_rank for every source, sources): the union of the sources. The
    popularity source proposes at least ``top_n`` items, so that every user can get a full list."""
    rec = settings.recommend
    conf, buffer, top_n = rec.ranker, rec.candidate_buffer, rec.top_n
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
    if n.get("als"):
        parts.append(_ranked(als_candidates(snap, settings, n["als"]), n["als"], "als"))
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


def _history(snap: Snapshot) -> pit.History:
    return pit.History(snap.cutoff, snap.history, snap.inter)


def fold_pairs(snap: Snapshot) -> DataFrame:
    return pit.fold_pairs(_history(snap))


def features(cands: DataFrame, snap: Snapshot, pairs: DataFrame | None = None) -> DataFrame:
    """The candidates with every feature of ``FEATURES``: the sources' ranks and scores (never null, ``candidates``
    fills them) and the point-in-time pair features of the snapshot."""
    rows = pit.pair_features(cands, _history(snap), pairs)
    return rows.select("user_id", "item_id", *[F.col(f).cast("double").alias(f) for f in FEATURES])


def labels(daily: DataFrame, cutoff: date, days: int, types: list[str]) -> DataFrame:
    """(user_id, item_id, label = 1.0): a relevant event in [cutoff, cutoff + days)."""
    window = (F.col("event_date") >= F.lit(cutoff)) & (F.col("event_date") < F.lit(cutoff + timedelta(days=days)))
    return daily.where(window & ev._relevant(daily, types)).select("user_id", "item_id").distinct().withColumn("label", F.lit(1.0))


# -- training and scoring ----------------------------------------------------------------------------------------------


@dataclass
class RankerRun:
    """The ranker's moving parts on one per-day history. Candidate frames with their features are built once per
    cutoff and kept in ``cache``; evaluation and serving share it (their cutoffs overlap). Sharing is sound because a
    cutoff's rows depend only on the days before it (tests/test_ranker.py checks that), whichever history they come
    from."""

    daily: DataFrame
    settings: Settings
    cache: dict[date, DataFrame] = field(default_factory=dict)
    stats: dict = field(default_factory=dict)

    @property
    def conf(self) -> RankerConf:
        return self.settings.recommend.ranker

    def scored_candidates(self, cutoff: date) -> DataFrame:
        """Candidates with features at ``cutoff`` (persisted; reused)."""
        if cutoff not in self.cache:
            snap = snapshot(self.daily, cutoff, self.settings)
            pairs = fold_pairs(snap).persist()
            rows = features(candidates(snap, self.settings), snap, pairs).persist()
            rows.count()  # materialise, then the snapshot's cached folds can go
            for df in (snap.inter, snap.exclude, pairs):
                if df is not None:
                    df.unpersist()
            self.cache[cutoff] = rows
        return self.cache[cutoff]

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
        return Pipeline(stages=[VectorAssembler(inputCols=feature_names(c), outputCol="features"), gbt])

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
        for rows in self.cache.values():
            rows.unpersist()
        self.cache.clear()


def feature_names(conf: RankerConf) -> list[str]:
    """The model's inputs: ``FEATURES``, without the ALS ones unless the ALS source is on (one ALS fit per cutoff)."""
    return [f for f in FEATURES if not f.startswith("als_") or conf.sources.get("als")]


def importances(model: PipelineModel) -> dict[str, float]:
    names = model.stages[0].getInputCols()
    return {name: float(v) for name, v in zip(names, model.stages[-1].featureImportances.toArray())}


# -- the recommender ---------------------------------------------------------------------------------------------------


class RankerFitted(Fitted):
    """A GBT fitted on the cutoffs before ``cutoff``; it ranks the candidates at ``cutoff``."""

    def __init__(self, run: RankerRun, model: PipelineModel, cutoff: date) -> None:
        super().__init__(dict(run.stats))
        self.run, self.model, self.cutoff = run, model, cutoff
        self.explanations = [(f, v, "gbt_importance") for f, v in importances(model).items()]

    def scores(self, n: int, exclude: DataFrame | None) -> DataFrame:
        return m._drop_excluded(self.run.recommend(self.model, self.cutoff), exclude)

    def diagnostics(self, truth: DataFrame, k: int) -> dict[str, float]:
        """The candidate recall (the share of held-out pairs among the candidates at all, which bounds what the ranker
        can reach) as a metric; every source alone on the same candidates into the details."""
        total = sum(self.run.conf.sources.values())
        recall = self.run.candidate_recall(self.cutoff, truth)
        cands = self.run.scored_candidates(self.cutoff)
        alone = {}
        for source in (s for s in SOURCES if self.run.conf.sources.get(s)):
            recs = cands.where(F.col(f"{source}_rank") < NO_RANK).select(
                "user_id", "item_id", (-F.col(f"{source}_rank")).alias("score"))
            got = ev.ranking_metrics(recs, truth, k)
            alone[source] = {f"recall@{k}": round(got["recall"], 6), f"ndcg@{k}": round(got["ndcg"], 6)}
        self.details |= {"candidate_recall": round(recall, 6), "candidates_per_user_at_most": total,
                         "sources_alone": alone}
        log.info("  ranker: candidate recall %.4f; sources alone %s", recall, alone)
        return {f"candidate_recall@{total}": recall}


class Ranker(Recommender):
    """Two stages: candidates from several sources, ranked by a GBT over point-in-time features (this module)."""

    name = "ranker"
    needs_time_split = True

    def fit(self, train: Training, ctx: Context) -> Fitted:
        """Training rows from cutoffs whose label windows end on the last day before ``train.cutoff``; the fitted
        model ranks the candidates at ``train.cutoff``."""
        if train.daily is None or train.cutoff is None:
            raise ValueError("the ranker needs per-day history before a cutoff (recommend.split: time)")
        run = RankerRun(train.daily, self.settings, ctx.shared("ranker.candidates", dict))
        return RankerFitted(run, run.fit(train.last_day), train.cutoff)
