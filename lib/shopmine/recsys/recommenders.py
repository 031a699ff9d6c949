"""The built-in recommenders, one class each (registered by name in recsys/registry.py): the baselines, ALS and the
three item-CF variants. The scoring itself lives in recsys/models.py; the two-stage ranker in recsys/ranker.py."""

from __future__ import annotations

import itertools
import logging

from pyspark.ml.recommendation import ALSModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shopmine.evaluation import ranking as ev
from shopmine.logs import step
from shopmine.recsys import models as m
from shopmine.recsys.base import Context, Fitted, Recommender, Served, Training

log = logging.getLogger(__name__)


class _Scored(Fitted):
    """A fitted model whose candidate scores are a function of (n, exclude)."""

    def __init__(self, score, details: dict | None = None) -> None:
        super().__init__(details)
        self._score = score

    def scores(self, n: int, exclude: DataFrame | None) -> DataFrame:
        return self._score(n, exclude)


# -- baselines ---------------------------------------------------------------------------------------------------------


class Popularity(Recommender):
    """Items by distinct training users, the same list for everyone."""

    name = "popularity"

    def fit(self, train: Training, ctx: Context) -> Fitted:
        buffer = self.settings.recommend.candidate_buffer
        return _Scored(lambda n, exclude: m.popularity(train.inter, n + buffer, exclude))


class CategoryPopularity(Recommender):
    """The most popular items of the user's three strongest categories."""

    name = "category_popularity"

    def fit(self, train: Training, ctx: Context) -> Fitted:
        buffer = self.settings.recommend.candidate_buffer
        return _Scored(lambda n, exclude: m.category_popularity(train.inter, n + buffer, exclude))


class Revisit(Recommender):
    """Items the user touched and did not buy, most recent first."""

    name = "revisit"

    def fit(self, train: Training, ctx: Context) -> Fitted:
        return _Scored(lambda n, exclude: m.revisit(train.inter, exclude))


# -- ALS ---------------------------------------------------------------------------------------------------------------


def als_input(train: DataFrame, negatives: DataFrame | None, weight: float) -> DataFrame:
    """ALS ratings: the training strengths, plus strength -weight for each served-but-ignored pair the user has no
    positive interaction with. Spark's implicit ALS reads a negative rating as preference 0 with confidence
    1 + alpha·|r|: "shown, not wanted" counts more than an item never shown."""
    pairs = train.select("user_id", "item_id", "strength")
    if negatives is None:
        return pairs
    neg = negatives.join(pairs, ["user_id", "item_id"], "left_anti").select(
        "user_id", "item_id", F.lit(-weight).alias("strength"))
    return pairs.unionByName(neg)


def negatives_until(served: Served, settings, until) -> DataFrame:
    """Pairs served before ``until`` that the user came back and ignored (``recommend.served_negatives``)."""
    from shopmine.apps.feedback import ignored_pairs

    conf = settings.recommend.served_negatives
    return ignored_pairs(served.recs, served.events, served.cuts, conf.window_days, until).persist()


class AlsFitted(Fitted):
    def __init__(self, model: ALSModel, idx: m.Indexed, params: tuple[int, float, float], details: dict) -> None:
        super().__init__(details)
        self.model, self.idx, self.params = model, idx, params

    def scores(self, n: int, exclude: DataFrame | None) -> DataFrame:
        return m.als_scores(self.model, self.idx, n, exclude)


class Als(Recommender):
    """Spark ML ALS with implicit preferences on the decayed strength; (rank, regParam, alpha) tuned on a validation
    share of the training users' items; served-but-ignored pairs as negatives when ``recommend.served_negatives``."""

    name = "als"

    def grid(self) -> list[tuple[int, float, float]]:
        a = self.settings.recommend.als
        return list(itertools.product(a.rank, a.reg_param, a.alpha))

    def ratings(self, train: Training) -> tuple[DataFrame, int | None]:
        """The ALS input and the number of negatives in it (None: no served lists)."""
        if train.served is None:
            return train.inter, None
        weight = self.settings.recommend.served_negatives.weight
        with step(log, f"served-but-ignored negatives up to {train.last_day}") as info:
            ratings = als_input(train.inter, negatives_until(train.served, self.settings, train.last_day),
                                weight).persist()
            info["rows"] = negatives = ratings.where(F.col("strength") < 0).count()
        return ratings, negatives

    def tune(self, ctx: Context, ratings: DataFrame) -> tuple[tuple[int, float, float], dict]:
        """Pick (rank, regParam, alpha) on a validation split carved out of the training set (a random per-user
        share, so the test period is never used for tuning). A single-point grid skips the search."""
        grid = self.grid()
        if len(grid) == 1:
            return grid[0], {}
        conf = self.settings.recommend
        inner = ev.stratified_split(ratings, conf)
        k = conf.select_k
        exclude = m.excluded(inner.train, conf.exclude)
        scores = {}
        for params in grid:
            model, idx = m.fit_als(inner.train, conf.als, *params, m.blocks_for(ctx.spark, conf.als), conf.seed)
            recs = m.als_scores(model, idx, k, exclude)
            scores[params] = ev.ranking_metrics(recs, inner.truth, k)[conf.select_metric]
            log.info("  ALS rank=%s reg=%s alpha=%s: validation %s@%s = %.4f", *params, conf.select_metric, k,
                     scores[params])
        best = max(grid, key=lambda p: (scores[p], -grid.index(p)))
        return best, {f"rank={p[0]},reg={p[1]},alpha={p[2]}": v for p, v in scores.items()}

    def _fit(self, ctx: Context, ratings: DataFrame, params, details: dict) -> AlsFitted:
        conf = self.settings.recommend
        model, idx = m.fit_als(ratings, conf.als, *params, m.blocks_for(ctx.spark, conf.als), conf.seed)
        return AlsFitted(model, idx, params, details)

    def fit(self, train: Training, ctx: Context) -> Fitted:
        ratings, negatives = self.ratings(train)
        with step(log, f"tune ALS over {len(self.grid())} setting(s)"):
            params, validation = self.tune(ctx, ratings)
        details = {"params": dict(zip(("rank", "reg_param", "alpha"), params)), "validation": validation,
                   "served_negatives": negatives}
        return self._fit(ctx, ratings, params, details)

    def refit(self, fitted: Fitted, train: Training, ctx: Context) -> Fitted:
        """On all the data with the parameters tuned on the split."""
        assert isinstance(fitted, AlsFitted)
        ratings, _ = self.ratings(train)
        return self._fit(ctx, ratings, fitted.params, fitted.details)


# -- item-similarity CF ------------------------------------------------------------------------------------------------


class ItemCf(Recommender):
    """Item-similarity CF over each item's top-K neighbours (``recommend.item_cf``); the variants share one neighbour
    table per training set; ``variant`` names the score of ``models.cf_scores``."""

    variant = ""

    @staticmethod
    def neighbours(ctx: Context, train: Training) -> DataFrame:
        """The item neighbours of ``train`` (computed once per training set and run)."""
        return ctx.shared(("item_neighbours", train), lambda: m.item_neighbours(train.inter,
                                                                              ctx.settings.recommend.item_cf))

    def fit(self, train: Training, ctx: Context) -> Fitted:
        neighbours = self.neighbours(ctx, train)
        return _Scored(lambda n, exclude: m.cf_scores(train.inter, neighbours, exclude, self.variant))


class ItemCfFormula(ItemCf):
    """The product's seed formula: r̂_ui = Σ_j r_uj/(1+|r_uj−μ_u|) / Σ_j 1/(1+|r_uj−μ_u|)."""

    name, variant = "item_cf", "formula"


class ItemCfWeighted(ItemCf):
    """The similarity-weighted mean of the user's ratings of i's neighbours."""

    name, variant = "item_cf_sim", "weighted"


class ItemCfSum(ItemCf):
    """Σ_j sim_ij · r_uj, not normalised (classic item-based top-N)."""

    name, variant = "item_cf_sum", "sum"
