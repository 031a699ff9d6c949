"""train-predict: labelled train / test sets on a time split, MLlib models tuned and evaluated side by side with a
majority-class baseline, explained, saved, and applied to the latest features for serving."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import reduce
from datetime import date, datetime, timedelta, timezone

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shopmine.conf import Settings
from shopmine.evaluation import classification as cm
from shopmine.evaluation.record import write_model_metrics
from shopmine.features import point_in_time as pit
from shopmine.io import artifacts
from shopmine.io.delta import Lake
from shopmine.io.tables import (
    GOLD_BEHAVIOUR_IMAGES,
    GOLD_BEHAVIOUR_PREDICTIONS,
    GOLD_PROPENSITY_SCORES,
    OPS_MODEL_EXPLANATIONS,
)
from shopmine.jobrun import ShopmineError
from shopmine.logs import step
from shopmine.predict import datasets as ds
from shopmine.predict import cnn, mllib, rules

log = logging.getLogger(__name__)


@dataclass
class AsOf:
    """Everything known at the start of one cutoff: the history, user features, and (item task) the pair rows."""

    history: pit.History
    users: DataFrame               # persisted
    pairs: DataFrame | None = None  # ds.item_rows, built (and persisted) on first use


@dataclass
class Prepared:
    """What every behaviour model shares: the windows, features at each cutoff, the category groups."""

    windows: ds.Windows
    last_date: date
    at: dict[date, AsOf]
    groups: DataFrame             # category_id, group
    group_names: list[str]

    def cutoff(self, split: str) -> date:
        """train: the latest training cutoff; test; serve: the day after the last event date."""
        return {"train": self.windows.train_cutoff, "test": self.windows.test_cutoff,
                "serve": self.last_date + timedelta(days=1)}[split]

    def cutoffs(self, split: str) -> list[date]:
        return sorted(self.windows.train_cutoffs) if split == "train" else [self.cutoff(split)]

    @property
    def users(self) -> dict[str, DataFrame]:
        return {s: self.at[self.cutoff(s)].users for s in ("train", "test", "serve")}

    def rows(self, task: str, cutoff: date) -> DataFrame:
        """The unlabelled rows of a task at a cutoff: users, or (item task) every touched pair."""
        a = self.at[cutoff]
        if task != "item_purchase":
            return a.users
        if a.pairs is None:
            a.pairs = ds.item_rows(a.users, a.history).persist()
        return a.pairs

    def release(self) -> None:
        for a in self.at.values():
            for df in (a.users, a.history.inter, a.pairs):
                if df is not None:
                    df.unpersist()


def prepare(settings: Settings, events: DataFrame, user_day: DataFrame, sessions: DataFrame,
            daily: DataFrame, train_cutoffs: int | None = None) -> Prepared:
    conf = settings.predict
    bounds = user_day.agg(F.min("event_date").alias("lo"), F.max("event_date").alias("hi")).first()
    if bounds["hi"] is None:
        raise ShopmineError("gold.user_daily is empty: run ingest, clean, sessionize and featurize first")
    try:
        win = ds.windows(bounds["lo"], bounds["hi"], conf.horizon_days, conf.test_cutoff,
                         train_cutoffs or conf.train_cutoffs)
    except ValueError as e:
        raise ShopmineError(str(e)) from None
    log.info("time split (horizon %d days): %s", conf.horizon_days, win.describe())
    at = {}
    for cutoff in (*win.train_cutoffs, win.test_cutoff, bounds["hi"] + timedelta(days=1)):
        h = pit.history(daily, cutoff, settings.features)
        h = pit.History(cutoff, h.rows, h.inter.persist())
        at[cutoff] = AsOf(h, ds.features_as_of(user_day, sessions, h, settings.features).persist())
    groups = ds.category_groups(events, min(win.train_cutoffs), conf.category_groups).persist()
    names = [r["category_id"] for r in groups.orderBy("group").collect()]  # at most category_groups rows
    return Prepared(win, bounds["hi"], at, groups, names)


def labelled(p: Prepared, settings: Settings, events: DataFrame, task: str, split: str) -> DataFrame:
    """Labelled rows of a split (train: every training cutoff's, with its ``cutoff`` column)."""
    c = settings.predict
    parts = []
    for cutoff in p.cutoffs(split):
        users = p.at[cutoff].users
        pairs = p.rows(task, cutoff) if task == "item_purchase" else None
        df = ds.labelled(task, users, pairs, events, p.groups, c.category_groups, cutoff, c.horizon_days)
        parts.append(df.withColumn("cutoff", F.lit(cutoff)))
    return reduce(DataFrame.unionByName, parts)


@dataclass
class PredictReport:
    windows: ds.Windows | None = None
    metrics: dict[str, dict[str, dict]] = field(default_factory=dict)  # task -> model -> metrics
    rows: dict[str, int] = field(default_factory=dict)                 # task -> labelled training rows
    skipped: dict[str, str] = field(default_factory=dict)
    served: dict[str, str] = field(default_factory=dict)               # binary task -> the served model or rule
    rows_written: int = 0


def candidates(task: str, models: list[str]) -> list[str]:
    """What a task trains: the configured models (GBT on binary tasks only) and, for binary tasks, the rules."""
    if task not in ds.BINARY:
        return [m for m in models if m != "gbt"]
    return [*models, *rules.names(task)]


def choose_served(validation: dict[str, dict], metric: str) -> str:
    """The model or rule with the best validation ``metric`` (ties: the first listed); one without it ranks last."""
    order = list(validation)
    return max(order, key=lambda m: (validation[m].get(metric, float("-inf")), -order.index(m)))


def run_train_predict(lake: Lake, settings: Settings, run_id: str, events: DataFrame, user_day: DataFrame,
                      sessions: DataFrame, daily: DataFrame) -> PredictReport:
    conf = settings.predict
    p = prepare(settings, events, user_day, sessions, daily)
    report = PredictReport(p.windows)
    metric_rows, explain_rows = [], []
    now = datetime.now(timezone.utc)
    for task in conf.tasks:
        multiclass = task not in ds.BINARY
        k = ds.n_classes(task, conf.category_groups)
        names = ds.class_names(task, p.group_names)
        # Materialised with their lineage cut: every fit iteration and grid point then ships a small plan.
        train_df = labelled(p, settings, events, task, "train").localCheckpoint()
        test_df = labelled(p, settings, events, task, "test").localCheckpoint()
        sizes = train_df.groupBy("label").count().collect()  # at most k rows
        n_train, n_test = sum(r["count"] for r in sizes), test_df.count()
        report.rows[task] = n_train
        if len(sizes) < 2 or n_test == 0:
            report.skipped[task] = f"{n_train} training rows in {len(sizes)} class(es), {n_test} test rows"
            log.warning("task %s skipped: %s", task, report.skipped[task])
            continue
        split = f"time:{p.windows.test_cutoff}+{conf.horizon_days}d"
        results = report.metrics.setdefault(task, {})
        base = mllib.majority(train_df, test_df, k, multiclass)
        results["majority"] = mllib.evaluate(base, multiclass)
        trained_by, reasons_by = {}, {}
        for model in candidates(task, conf.models):
            kind = "rule" if rules.is_rule(task, model) else "model"
            with step(log, f"{task} / {model}: {'calibrate' if kind == 'rule' else 'tune, fit'}, evaluate on "
                           f"{n_test:,} test rows") as info:
                trained = trained_by[model] = mllib.train(task, model, train_df, conf)
                why = reasons_by[model] = mllib.reasons_for(trained, train_df)
                pred = mllib.predict(trained, test_df).persist()
                values = mllib.evaluate(pred, multiclass)
                details = {"kind": kind, "params": trained.params, "threshold": trained.threshold,
                           "validation": trained.validation, "train_rows": n_train, "test_rows": n_test,
                           "train_cutoffs": [str(c) for c in p.cutoffs("train")], "classes": names,
                           "confusion": {f"{a},{b}": v for (a, b), v in cm.confusion(pred).items()}}
                if kind == "rule":
                    details["rule"] = rules.RULES[task][model][1]
                if not multiclass:
                    details["calibration"] = cm.calibration(pred)
                    details["roc"] = cm.roc_curve(pred)
                pred.unpersist()
                results[model] = values | {"details": details}
                info.update({m: round(values[m], 4) for m in ("roc_auc", "macro_f1") if m in values})
                _save(lake, run_id, p, task, model, trained, names)
                explain_rows += [(run_id, task, model, r["class_label"], r["feature"], r["value"], r["kind"], now)
                                 for r in mllib.explain(trained, train_df, names)]
                report.rows_written += _serve(lake, settings, p, task, model, trained, names, run_id, now, why)
        if not multiclass:
            chosen = report.served[task] = choose_served({m: t.validation for m, t in trained_by.items()},
                                                         conf.select_by)
            log.info("%s: serving %s (best validation %s %.4f)", task, chosen, conf.select_by,
                     trained_by[chosen].validation.get(conf.select_by, float("nan")))
            served = dict(results[chosen])
            served["details"] = {**served["details"], "served": chosen, "select_by": conf.select_by,
                                 "candidates": {m: t.validation.get(conf.select_by) for m, t in trained_by.items()}}
            results["served"] = served
            _save(lake, run_id, p, task, "served", trained_by[chosen], names, {"served": chosen})
            report.rows_written += _serve(lake, settings, p, task, "served", trained_by[chosen], names, run_id, now,
                                          reasons_by[chosen])
        for model, values in results.items():
            details = values.pop("details", {"train_rows": n_train, "test_rows": n_test})
            metric_rows += [(f"{task}.{model}", split, None, name, v, details) for name, v in values.items()]
        train_df.unpersist()
        test_df.unpersist()
    p.release()
    write_model_metrics(lake, run_id, "train-predict", metric_rows)
    if explain_rows:
        lake.replace_where(lake.spark.createDataFrame(explain_rows, OPS_MODEL_EXPLANATIONS.schema),
                           OPS_MODEL_EXPLANATIONS.name, f"run_id = '{run_id}'")
    return report


def _save(lake: Lake, run_id: str, p: Prepared, task: str, model: str, trained: mllib.Trained, names: list[str],
          extra: dict | None = None) -> None:
    """Save the pipeline under the lake's models folder and register it in ops.artifacts as ``<task>_<model>``."""
    path = artifacts.model_path(lake, f"{task}_{model}", run_id)
    trained.pipeline.write().overwrite().save(path)
    artifacts.register(lake, run_id, "train-predict", f"{task}_{model}", path, p.last_date,
                       {"task": task, "model": trained.model, "params": trained.params,
                        "threshold": trained.threshold, "classes": names, **(extra or {})})


def _serve(lake: Lake, settings: Settings, p: Prepared, task: str, model: str, trained: mllib.Trained,
           names: list[str], run_id: str, now: datetime, reasons: mllib.Reasons | None = None) -> int:
    """Score the rows as of the last date and replace this task and model's rows in the serving table (binary
    tasks: with each row's top three reasons, ``mllib.reason_column``)."""
    rows = p.rows(task, p.cutoff("serve"))
    pred = mllib.predict(trained, rows)
    common = [F.lit(task).alias("task"), F.lit(model).alias("model")]
    stamp = [F.lit(p.last_date).alias("as_of"), F.lit(run_id).alias("run_id"),
             F.lit(now).cast("timestamp").alias("generated_at")]
    if task in ds.BINARY:
        item = F.col("item_id") if "item_id" in rows.columns else F.lit(None).cast("string")
        out = pred.select("user_id", item.alias("item_id"), *common, F.col("p").alias("score"),
                          (F.col("prediction") == 1).alias("predicted"), F.lit(trained.threshold).alias("threshold"),
                          F.lit(settings.predict.horizon_days).alias("horizon_days"), *stamp,
                          mllib.reason_column(trained, reasons).alias("reasons"))
        table = GOLD_PROPENSITY_SCORES.name
    else:
        label = F.element_at(F.array(*[F.lit(n) for n in names]), F.col("prediction") + 1)
        out = pred.select("user_id", *common, F.col("prediction").alias("predicted_class"),
                          F.coalesce(label, F.col("prediction").cast("string")).alias("predicted_label"),
                          F.col("p").alias("probability"), F.col("probs").alias("probabilities"), *stamp)
        table = GOLD_BEHAVIOUR_PREDICTIONS.name
    written = lake.replace_where(out, table, f"task = '{task}' AND model = '{model}'")
    return written.get("numOutputRows", 0)


def metrics_table(report: PredictReport) -> str:
    """One line per task and model: the headline metrics the job prints."""
    lines = [f"{'task':<15}{'model':<16}{'roc_auc':>8}{'pr_auc':>8}{'acc':>7}{'prec':>7}{'recall':>7}{'f1':>7}"
             f"{'logloss':>8}"]
    for task, models in report.metrics.items():
        for model, v in models.items():
            def f(name: str) -> str:
                x = v.get(name)
                return f"{x:>.4f}" if isinstance(x, float) else "-"
            binary = task in ds.BINARY
            prec, rec, f1 = ("precision", "recall", "f1") if binary else ("macro_precision", "macro_recall", "macro_f1")
            lines.append(f"{task:<15}{model:<16}{f('roc_auc'):>8}{f('pr_auc'):>8}{f('accuracy'):>7}{f(prec):>7}"
                         f"{f(rec):>7}{f(f1):>7}{f('log_loss'):>8}")
    for task, why in report.skipped.items():
        lines.append(f"{task:<15}skipped: {why}")
    return "\n".join(lines)


# -- train-cnn ------------------------------------------------------------------------------------------------------


@dataclass
class CnnReport:
    windows: ds.Windows | None = None
    rows: dict[str, int] = field(default_factory=dict)                 # image split -> rows
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> metrics on the test split
    training: dict[str, dict] = field(default_factory=dict)            # variant -> rank 0's result
    served: str | None = None
    rows_written: int = 0


def image_files(lake: Lake, split: str) -> list[str]:
    """The Parquet files of one split of gold.behaviour_images at the current version (delta-rs lists them)."""
    from deltalake import DeltaTable

    uris = DeltaTable(lake.path(GOLD_BEHAVIOUR_IMAGES.name)).file_uris(partition_filters=[("split", "=", split)])
    return sorted(u[len("file://"):] if u.startswith("file://") else u for u in uris)


def write_images(lake: Lake, settings: Settings, p: Prepared, events: DataFrame, run_id: str) -> dict[str, int]:
    """gold.behaviour_images: labelled train (split into train / valid users) and test, unlabelled serve."""
    conf = settings.predict
    n = conf.category_groups
    parts = max(2, conf.cnn.workers)  # at least one file per Horovod rank
    counts = {}
    for split in ("train", "test", "serve"):
        if split == "serve":
            rows = p.users["serve"].select("user_id", F.lit(None).cast("int").alias("label"))
        else:
            rows = labelled(p, settings, events, "next_category", split).select("user_id", "label")
        img = cnn.images(events, rows, p.groups, n, p.cutoff(split), conf.cnn).join(rows, "user_id")
        img = img.select("user_id", F.lit(p.cutoff(split)).alias("cutoff"), "image", "label")
        if split == "train":
            fit, valid = mllib.split_validation(img, conf.validation_share, conf.seed)
            outs = {"train": fit, "valid": valid}
        else:
            outs = {split: img}
        for name, df in outs.items():
            m = lake.replace_where(df.withColumn("split", F.lit(name)).repartition(parts), GOLD_BEHAVIOUR_IMAGES.name,
                                   f"split = '{name}'")
            counts[name] = int(m.get("numOutputRows", 0)) if m else lake.read(GOLD_BEHAVIOUR_IMAGES.name) \
                .where(F.col("split") == name).count()
    return counts


def run_train_cnn(lake: Lake, settings: Settings, run_id: str, events: DataFrame, user_day: DataFrame,
                  sessions: DataFrame, daily: DataFrame) -> CnnReport:
    conf = settings.predict
    c = conf.cnn
    p = prepare(settings, events, user_day, sessions, daily, train_cutoffs=1)  # images of one cutoff per split
    report = CnnReport(p.windows)
    with step(log, f"{GOLD_BEHAVIOUR_IMAGES.name}: images for train / valid / test / serve") as info:
        report.rows = write_images(lake, settings, p, events, run_id)
        info.update(report.rows)
    p.release()
    if min(report.rows.get("train", 0), report.rows.get("test", 0)) == 0:
        raise ShopmineError(f"not enough users with a purchase after the cutoffs to train the CNN ({report.rows}); "
                            "lower predict.horizon_days or add history")
    n_classes = conf.category_groups + 1
    shape = cnn.image_shape(conf.category_groups, c)
    names = ds.class_names("next_category", p.group_names)
    images = lake.read(GOLD_BEHAVIOUR_IMAGES.name)
    test = images.where(F.col("split") == "test")
    split_name = f"time:{p.windows.test_cutoff}+{conf.horizon_days}d"
    now = datetime.now(timezone.utc)
    train_labels = images.where(F.col("split").isin("train", "valid")).select("label")
    base = mllib.majority(train_labels, test.select("user_id", "label"), n_classes, True)
    report.metrics["majority"] = mllib.evaluate(base, True)
    train_files, valid_files = image_files(lake, "train"), image_files(lake, "valid")
    counts = {"train": report.rows["train"], "valid": max(1, report.rows.get("valid", 0))}
    for variant in dict.fromkeys([c.variant, *c.compare]):
        model_dir = artifacts.model_path(lake, f"cnn_{variant}", run_id)
        with step(log, f"CNN {variant}: Horovod training on {c.workers} worker(s), {counts['train']:,} images") as info:
            result = cnn.train_with_horovod(lake.spark, train_files, valid_files, counts, shape, n_classes, c,
                                            variant, model_dir)
            report.training[variant] = result
            info.update(val_accuracy=round(result["history"].get("val_accuracy", [0.0])[-1], 4))
        model_file = f"{model_dir}/model.keras"
        pred = cnn.score(test, model_file, shape).join(test.select("user_id", "label"), "user_id") \
            .select("label", F.col("predicted_class").alias("prediction"), F.col("probabilities").alias("probs"))
        report.metrics[f"cnn_{variant}"] = mllib.evaluate(pred, True)
        artifacts.register(lake, run_id, "train-cnn", f"cnn_{variant}", model_file, p.last_date,
                           {"variant": variant, "shape": shape, "classes": names, "conf": c.model_dump(),
                            "history": result["history"], "workers": result["size"], "gpu": result["gpu"]})
    report.served = f"cnn_{c.variant}"
    serve = images.where(F.col("split") == "serve")
    label = F.element_at(F.array(*[F.lit(n) for n in names]), F.col("predicted_class") + 1)
    out = cnn.score(serve, f"{artifacts.model_path(lake, report.served, run_id)}/model.keras", shape).select(
        "user_id", F.lit("next_category").alias("task"), F.lit(report.served).alias("model"), "predicted_class",
        label.alias("predicted_label"), "probability", "probabilities", F.lit(p.last_date).alias("as_of"),
        F.lit(run_id).alias("run_id"), F.lit(now).cast("timestamp").alias("generated_at"))
    written = lake.replace_where(out, GOLD_BEHAVIOUR_PREDICTIONS.name,
                                 f"task = 'next_category' AND model = '{report.served}'")
    report.rows_written = int(written.get("numOutputRows", 0))
    rows = []
    for model, values in report.metrics.items():
        details = {"test_rows": report.rows["test"], "train_rows": report.rows["train"], "classes": names}
        if model.startswith("cnn_"):
            details["training"] = report.training[model[4:]]
        rows += [(f"next_category.{model}", split_name, None, name, v, details) for name, v in values.items()]
    write_model_metrics(lake, run_id, "train-cnn", rows)
    return report


def cnn_table(report: CnnReport) -> str:
    lines = [f"{'model':<16}{'accuracy':>9}{'macro_p':>9}{'macro_r':>9}{'macro_f1':>9}{'logloss':>9}"]
    for model, v in report.metrics.items():
        lines.append(f"{model:<16}{v['accuracy']:>9.4f}{v['macro_precision']:>9.4f}{v['macro_recall']:>9.4f}"
                     f"{v['macro_f1']:>9.4f}{v['log_loss']:>9.4f}")
    return "\n".join(lines)
