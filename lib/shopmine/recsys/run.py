"""The ``recommend`` run: split, score every configured model, evaluate them side by side, pick the model to serve,
refit it on all interactions and write its top-N lists (and the item neighbours) to Delta."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shopmine.conf import Settings
from shopmine.io.delta import Lake
from shopmine.io.tables import GOLD_ITEM_NEIGHBOURS, GOLD_RECS_TOPN, OPS_MODEL_EXPLANATIONS
from shopmine.jobrun import ShopmineError
from shopmine.logs import step
from shopmine.evaluation import ranking as ev
from shopmine.evaluation.record import write_model_metrics
from shopmine.recsys import models as m
from shopmine.recsys import ranker as rk

log = logging.getLogger(__name__)


@dataclass
class RecommendReport:
    split: str
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> "ndcg@10" -> value
    served: str | None = None
    als_params: dict | None = None
    rows_written: int = 0
    users_evaluated: int = 0
    negatives: int | None = None  # served-but-ignored pairs given to ALS (None: recommend.served_negatives off)
    ranker: dict = field(default_factory=dict)  # the ranker's training rows, candidate recall, sources alone
    importances: dict[str, float] = field(default_factory=dict)  # the ranker's GBT feature importances


def make_split(settings: Settings, inter: DataFrame, daily: DataFrame) -> ev.Split:
    conf = settings.recommend
    if conf.split == "time":
        return ev.time_split(daily, conf, settings.features)
    if conf.split == "leave_last":
        return ev.leave_last_split(daily, conf, settings.features)
    return ev.stratified_split(inter, conf)


def _als_grid(settings: Settings) -> list[tuple[int, float, float]]:
    a = settings.recommend.als
    return list(itertools.product(a.rank, a.reg_param, a.alpha))


@dataclass(frozen=True)
class Served:
    """The lists served before this run, for ``recommend.served_negatives``: recs (user_id, item_id, run_id),
    cuts (run_id, cut) and the events (user_id, item_id, event_type, event_date, is_bot) after them."""

    recs: DataFrame
    cuts: DataFrame
    events: DataFrame


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


def tune_als(spark, settings: Settings, train: DataFrame) -> tuple[tuple[int, float, float], dict]:
    """Pick ALS (rank, regParam, alpha) on a validation split carved out of the training set (a random per-user
    share, so the test period is never used for tuning). A single-point grid skips the search."""
    grid = _als_grid(settings)
    if len(grid) == 1:
        return grid[0], {}
    conf = settings.recommend
    inner = ev.stratified_split(train, conf)
    k = conf.select_k
    exclude = m.excluded(inner.train, conf.exclude)
    scores = {}
    for params in grid:
        model, idx = m.fit_als(inner.train, conf.als, *params, m.blocks_for(spark, conf.als), conf.seed)
        recs = m.als_scores(model, idx, k, exclude)
        scores[params] = ev.ranking_metrics(recs, inner.truth, k)[conf.select_metric]
        log.info("  ALS rank=%s reg=%s alpha=%s: validation %s@%s = %.4f", *params, conf.select_metric, k,
                 scores[params])
    best = max(grid, key=lambda p: (scores[p], -grid.index(p)))
    return best, {f"rank={p[0]},reg={p[1]},alpha={p[2]}": v for p, v in scores.items()}


def score_model(spark, settings: Settings, name: str, train: DataFrame, n: int, exclude: DataFrame | None,
                als_params: tuple[int, float, float] | None = None, neighbours: DataFrame | None = None,
                als_train: DataFrame | None = None) -> DataFrame:
    """Candidate scores of model ``name`` for every user of ``train`` (excluded items removed); ALS fits on
    ``als_train`` when given (the training strengths with served negatives)."""
    conf = settings.recommend
    if name == "popularity":
        return m.popularity(train, n + conf.candidate_buffer, exclude)
    if name == "category_popularity":
        return m.category_popularity(train, n + conf.candidate_buffer, exclude)
    if name == "revisit":
        return m.revisit(train, exclude)
    if name == "als":
        model, idx = m.fit_als(als_train if als_train is not None else train, conf.als, *als_params, m.blocks_for(spark, conf.als), conf.seed)
        return m.als_scores(model, idx, n, exclude)
    if neighbours is None:
        neighbours = m.item_neighbours(train, conf.item_cf)
    return m.cf_scores(train, neighbours, exclude, m.CF_VARIANTS[name])


def evaluate(recs: DataFrame, split: ev.Split, ks: list[int], categories: DataFrame) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in ks:
        r = ev.ranking_metrics(recs, split.truth, k)
        out |= {f"{metric}@{k}": r[metric] for metric in ev.PER_USER}
        out["users"] = r["users"]
        out |= {f"{metric}@{k}": v for metric, v in ev.beyond_accuracy(recs, split.train, k, categories).items()}
    return out


def metrics_table(report: RecommendReport) -> str:
    """The side-by-side table the job prints (one line per model)."""
    if not report.metrics:
        return "(no model evaluated)"
    cols = [c for c in next(iter(report.metrics.values())) if c != "users"]
    head = f"{'model':<22}" + "".join(f"{c:>14}" for c in cols)
    lines = [head, "-" * len(head)]
    for model, values in report.metrics.items():
        mark = " *" if model == report.served else ""
        lines.append(f"{(model + mark):<22}" + "".join(
            f"{values[c]:>14.4f}" if values.get(c) is not None else f"{'-':>14}" for c in cols))
    return "\n".join(lines)


def negatives_until(served: Served | None, settings: Settings, until) -> DataFrame | None:
    if served is None:
        return None
    conf = settings.recommend.served_negatives
    from shopmine.apps.feedback import ignored_pairs

    return ignored_pairs(served.recs, served.events, served.cuts, conf.window_days, until).persist()


def run_recommend(lake: Lake, settings: Settings, run_id: str, inter: DataFrame, daily: DataFrame,
                  items: DataFrame, served: Served | None = None) -> RecommendReport:
    spark = lake.spark
    conf = settings.recommend
    kmax = max(conf.ks)
    categories = items.select("item_id", "category_id")
    with step(log, f"split ({conf.split})") as info:
        split = make_split(settings, inter, daily)
        split = ev.Split(split.name, split.train.persist(), split.truth.persist())
        info["train_pairs"] = split.train.count()
        info["test_pairs"] = split.truth.count()
    report = RecommendReport(split.name)
    if info["test_pairs"] == 0:
        raise ShopmineError(f"the {split.name} split holds out no relevant item of a known user: nothing to evaluate "
                            "(more days of data, or another recommend.split)")
    exclude = m.excluded(split.train, conf.exclude)
    if exclude is not None:
        exclude = exclude.persist()
    als_params = None
    grid_scores: dict = {}
    weight = conf.served_negatives.weight
    als_train = None
    if served is not None and "als" in conf.models:
        last = last_date(daily)
        train_end = last - timedelta(days=conf.holdout_days)  # the time split trains on days up to this one
        with step(log, f"served-but-ignored negatives up to {train_end}") as info:
            negatives = negatives_until(served, settings, train_end)
            als_train = als_input(split.train, negatives, weight).persist()
            report.negatives = info["rows"] = als_train.where(F.col("strength") < 0).count()
    if "als" in conf.models:
        with step(log, f"tune ALS over {len(_als_grid(settings))} setting(s)"):
            als_params, grid_scores = tune_als(spark, settings, als_train if als_train is not None else split.train)
        report.als_params = dict(zip(("rank", "reg_param", "alpha"), als_params))
    neighbours = None
    ranker = rk.RankerRun(daily, settings) if "ranker" in conf.models else None
    for name in conf.models:
        with step(log, f"evaluate {name}"):
            if name == "ranker":
                report.metrics[name] = evaluate_ranker(ranker, report, split, conf.ks, categories)
                continue
            if name.startswith("item_cf") and neighbours is None:
                neighbours = m.item_neighbours(split.train, conf.item_cf).persist()
            recs = ev.top_k(score_model(spark, settings, name, split.train, kmax, exclude, als_params, neighbours,
                                        als_train), kmax).persist()
            report.metrics[name] = evaluate(recs, split, conf.ks, categories)
            recs.unpersist()
    report.users_evaluated = int(next(iter(report.metrics.values()))["users"]) if report.metrics else 0
    key = f"{conf.select_metric}@{conf.select_k}"
    report.served = conf.serve_model or max(conf.models, key=lambda n: (report.metrics[n][key], -conf.models.index(n)))
    _write_metrics(lake, run_id, report, grid_scores, settings)
    if neighbours is not None:
        neighbours.unpersist()
    split.train.unpersist()
    split.truth.unpersist()

    full_exclude = m.excluded(inter, conf.exclude)
    full_neighbours = None
    if any(n.startswith("item_cf") for n in conf.models):
        with step(log, f"{GOLD_ITEM_NEIGHBOURS.name} on all interactions") as info:
            full_neighbours = m.item_neighbours(inter, conf.item_cf)
            lake.overwrite(full_neighbours.withColumn("similarity_kind", F.lit(conf.item_cf.similarity))
                           .withColumn("run_id", F.lit(run_id)), GOLD_ITEM_NEIGHBOURS.name)
            info["rows"] = lake.last_write_metrics(GOLD_ITEM_NEIGHBOURS.name).get("numOutputRows", 0)
            full_neighbours = lake.read(GOLD_ITEM_NEIGHBOURS.name)
    full_als_train = None
    if served is not None and report.served == "als":
        full_als_train = als_input(inter, negatives_until(served, settings, last_date(daily)),
                                   weight)
    with step(log, f"serve {report.served}: top {conf.top_n} for every user on all interactions") as info:
        if report.served == "ranker":
            scores = serve_ranker(ranker, daily)
        else:
            scores = score_model(spark, settings, report.served, inter, conf.top_n, full_exclude, als_params,
                                 full_neighbours, full_als_train)
        top = ev.top_k(scores, conf.top_n).select(
            "user_id", F.lit(report.served).alias("model"), F.col("rank").cast("int"), "item_id", "score",
            F.lit(run_id).alias("run_id"), F.lit(datetime.now(timezone.utc)).cast("timestamp").alias("generated_at"))
        written = lake.replace_where(top, GOLD_RECS_TOPN.name, f"model = '{report.served}'")
        report.rows_written = info["rows"] = written.get("numOutputRows", 0)
    if ranker is not None:
        ranker.release()
    return report


def last_date(daily: DataFrame):
    return daily.agg(F.max("event_date")).first()[0]


def evaluate_ranker(ranker: rk.RankerRun, report: RecommendReport, split: ev.Split, ks: list[int],
                    categories: DataFrame) -> dict[str, float]:
    """Fit the ranker on cutoffs whose label windows end the day before the held-out days, score the candidates at
    the first held-out day; also the candidate recall and every source alone on the same candidates."""
    h = ranker.settings.recommend.holdout_days
    cut = last_date(ranker.daily) - timedelta(days=h - 1)
    model = ranker.fit(cut - timedelta(days=1))
    out = evaluate(ev.top_k(ranker.recommend(model, cut), max(ks)), split, ks, categories)
    total = sum(ranker.conf.sources.values())
    recall = ranker.candidate_recall(cut, split.truth)
    out[f"candidate_recall@{total}"] = recall
    cands = ranker.scored_candidates(cut)
    alone = {}
    k = max(ks)
    for source in rk.SOURCES:
        recs = ev.top_k(cands.where(F.col(f"{source}_rank") < rk.NO_RANK)
                        .select("user_id", "item_id", (-F.col(f"{source}_rank")).alias("score")), k)
        got = ev.ranking_metrics(recs, split.truth, k)
        alone[source] = {f"recall@{k}": round(got["recall"], 6), f"ndcg@{k}": round(got["ndcg"], 6)}
    report.ranker = ranker.stats | {"candidate_recall": round(recall, 6), "candidates_per_user_at_most": total,
                                    "sources_alone": alone}
    report.importances = rk.importances(model)
    log.info("  ranker: candidate recall %.4f; sources alone %s", recall, alone)
    return out


def serve_ranker(ranker: rk.RankerRun, daily: DataFrame) -> DataFrame:
    """Refit on cutoffs moved forward to the end of the data, score the candidates of the day after it."""
    last = last_date(daily)
    return ranker.recommend(ranker.fit(last), last + timedelta(days=1))


def _write_metrics(lake: Lake, run_id: str, report: RecommendReport, grid: dict, settings: Settings) -> None:
    now = datetime.now(timezone.utc)
    rows = []
    for model, values in report.metrics.items():
        details = {"users": int(values["users"]), "served": model == report.served}
        if model == "als":
            details |= {"params": report.als_params, "validation": grid, "served_negatives": report.negatives}
        if model == "ranker":
            details |= report.ranker
        for name, value in values.items():
            if name == "users":
                continue
            metric, k = name.split("@")
            rows.append((model, report.split, int(k), metric, value, details))
    write_model_metrics(lake, run_id, "recommend", rows)
    if report.importances:
        explain = [(run_id, "recommend", "ranker", "relevant", feature, value, "gbt_importance", now)
                   for feature, value in sorted(report.importances.items(), key=lambda kv: -kv[1])]
        lake.replace_where(lake.spark.createDataFrame(explain, OPS_MODEL_EXPLANATIONS.schema),
                           OPS_MODEL_EXPLANATIONS.name, f"run_id = '{run_id}'")
