"""The ``recommend`` run: split, score every configured model, evaluate them side by side, pick the model to serve,
refit it on all interactions and write its top-N lists (and the item neighbours) to Delta."""

from __future__ import annotations

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
from shopmine.recsys import registry
from shopmine.recsys.base import Context, Served, Training
from shopmine.recsys.recommenders import ItemCf

log = logging.getLogger(__name__)


@dataclass
class RecommendReport:
    split: str
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> "ndcg@10" -> value
    details: dict[str, dict] = field(default_factory=dict)              # model -> its ops.model_metrics details
    explanations: dict[str, list] = field(default_factory=dict)         # model -> [(feature, value, kind)]
    served: str | None = None
    rows_written: int = 0
    users_evaluated: int = 0

    @property
    def als_params(self) -> dict | None:
        return self.details.get("als", {}).get("params")


def make_split(settings: Settings, inter: DataFrame, daily: DataFrame) -> ev.Split:
    conf = settings.recommend
    if conf.split == "time":
        return ev.time_split(daily, conf, settings.features)
    if conf.split == "leave_last":
        return ev.leave_last_split(daily, conf, settings.features)
    return ev.stratified_split(inter, conf)


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


def run_recommend(lake: Lake, settings: Settings, run_id: str, inter: DataFrame, daily: DataFrame,
                  items: DataFrame, served: Served | None = None) -> RecommendReport:
    """Split; fit and evaluate every model of ``recommend.models`` on it; select the served one; refit it on all
    interactions and write its top-N lists (and, when an item-CF model is configured, the item neighbours)."""
    conf = settings.recommend
    kmax = max(conf.ks)
    categories = items.select("item_id", "category_id")
    ctx = Context(lake.spark, settings)
    with step(log, f"split ({conf.split})") as info:
        split = make_split(settings, inter, daily)
        split = ev.Split(split.name, split.train.persist(), split.truth.persist(), split.cutoff)
        info["train_pairs"] = split.train.count()
        info["test_pairs"] = split.truth.count()
    report = RecommendReport(split.name)
    if info["test_pairs"] == 0:
        raise ShopmineError(f"the {split.name} split holds out no relevant item of a known user: nothing to evaluate "
                            "(more days of data, or another recommend.split)")
    train = Training.before(split.train, daily, split.cutoff, served)
    exclude = m.excluded(split.train, conf.exclude)
    if exclude is not None:
        exclude = exclude.persist()
    models = {name: registry.create(name, settings) for name in conf.models}
    fitted = {}
    for name, model in models.items():
        with step(log, f"evaluate {name}"):
            fitted[name] = f = model.fit(train, ctx)
            recs = f.recommend(None, kmax, exclude).persist()
            report.metrics[name] = evaluate(recs, split, conf.ks, categories) | f.diagnostics(split.truth, kmax)
            report.details[name] = f.details
            report.explanations[name] = f.explanations
            recs.unpersist()
    report.users_evaluated = int(next(iter(report.metrics.values()))["users"]) if report.metrics else 0
    key = f"{conf.select_metric}@{conf.select_k}"
    report.served = conf.serve_model or max(conf.models, key=lambda n: (report.metrics[n][key], -conf.models.index(n)))
    _write_metrics(lake, run_id, report)
    split.train.unpersist()
    split.truth.unpersist()

    everything = Training.before(inter, daily, last_date(daily) + timedelta(days=1), served)
    if any(isinstance(model, ItemCf) for model in models.values()):
        with step(log, f"{GOLD_ITEM_NEIGHBOURS.name} on all interactions") as info:
            neighbours = ItemCf.neighbours(ctx, everything)
            lake.overwrite(neighbours.withColumn("similarity_kind", F.lit(conf.item_cf.similarity))
                           .withColumn("run_id", F.lit(run_id)), GOLD_ITEM_NEIGHBOURS.name)
            info["rows"] = lake.last_write_metrics(GOLD_ITEM_NEIGHBOURS.name).get("numOutputRows", 0)
    with step(log, f"serve {report.served}: top {conf.top_n} for every user on all interactions") as info:
        final = models[report.served].refit(fitted[report.served], everything, ctx)
        top = final.recommend(None, conf.top_n, m.excluded(inter, conf.exclude)).select(
            "user_id", F.lit(report.served).alias("model"), F.col("rank").cast("int"), "item_id", "score",
            F.lit(run_id).alias("run_id"), F.lit(datetime.now(timezone.utc)).cast("timestamp").alias("generated_at"))
        written = lake.replace_where(top, GOLD_RECS_TOPN.name, f"model = '{report.served}'")
        report.rows_written = info["rows"] = written.get("numOutputRows", 0)
    ctx.release()
    return report


def last_date(daily: DataFrame):
    return daily.agg(F.max("event_date")).first()[0]


def _write_metrics(lake: Lake, run_id: str, report: RecommendReport) -> None:
    now = datetime.now(timezone.utc)
    rows, explain = [], []
    for model, values in report.metrics.items():
        details = {"users": int(values["users"]), "served": model == report.served} | report.details.get(model, {})
        for name, value in values.items():
            if name == "users":
                continue
            metric, k = name.split("@")
            rows.append((model, report.split, int(k), metric, value, details))
        explain += [(run_id, "recommend", model, "relevant", feature, value, kind, now)
                    for feature, value, kind in sorted(report.explanations.get(model, []), key=lambda r: -r[1])]
    write_model_metrics(lake, run_id, "recommend", rows)
    if explain:
        lake.replace_where(lake.spark.createDataFrame(explain, OPS_MODEL_EXPLANATIONS.schema),
                           OPS_MODEL_EXPLANATIONS.name, f"run_id = '{run_id}'")
