"""Spark MLlib behaviour predictors: logistic regression (elastic net) and naive Bayes (multinomial on counts,
Bernoulli on indicators), each a Spark ML ``PipelineModel``: the feature pipeline of ``features.pipeline`` (fitted on
the training window only, so no statistic of the test period leaks in) followed by the model's own stages.

Users are hashed into fitting and validation parts (``split_validation``: reproducible, independent of row order and
partitioning). The conf grid is tuned on a second hashed split of the fitting users (``predict.train_ratio`` fit,
the rest scores each grid point; a random row split could leave a part with one class and fail the fit), and the best
point is refitted on every fitting user; the binary decision threshold is the one with the best F1 on the validation
users. Class weights (N / (K·n_c))
go in through ``weightCol``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import LogisticRegression, NaiveBayes
from pyspark.ml.evaluation import BinaryClassificationEvaluator, MulticlassClassificationEvaluator
from pyspark.ml.feature import Binarizer, SQLTransformer, VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.ml.tuning import ParamGridBuilder
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shopmine.conf import PredictConf
from shopmine.evaluation import classification as cm
from shopmine.features.aggregates import COUNTS
from shopmine.features.pipeline import build_feature_pipeline, vector_names
from shopmine.predict.datasets import BINARY, ITEM_COLUMNS, with_class_weights

COUNT_INPUTS = (*COUNTS, "frequency", "active_days", "sessions")
ITEM_COUNT_INPUTS = ("i_n_view", "i_n_favourite", "i_n_cart")


def inputs_for(task: str, model: str) -> tuple[list[str], str]:
    """(columns assembled after the feature pipeline, the assembled column's name) for a task and model."""
    if model == "lr":
        return ["features_std", *(ITEM_COLUMNS if task == "item_purchase" else ())], "x"
    return [f"c_{c}" for c in COUNT_INPUTS] + list(ITEM_COUNT_INPUTS if task == "item_purchase" else ()), "counts"


def model_stages(task: str, model: str, conf: PredictConf, multiclass: bool) -> tuple[list, list]:
    """The model's stages after the feature pipeline, and its tuning grid."""
    cols, vec = inputs_for(task, model)
    weight = {"weightCol": "w"} if conf.class_weights else {}
    if model == "lr":
        assemble = VectorAssembler(inputCols=cols, outputCol=vec, handleInvalid="keep")
        lr = LogisticRegression(featuresCol=vec, labelCol="label", maxIter=conf.lr.max_iter,
                                family="multinomial" if multiclass else "binomial", standardization=False, **weight)
        grid = ParamGridBuilder().addGrid(lr.regParam, conf.lr.reg_param) \
            .addGrid(lr.elasticNetParam, conf.lr.elastic_net).build()
        return [assemble, lr], grid
    # Naive Bayes: raw non-negative counts (nulls -> 0), as counts (multinomial) or 0/1 indicators (Bernoulli).
    prepare = SQLTransformer(statement="SELECT *, " + ", ".join(
        f"greatest(coalesce(CAST(`{c}` AS DOUBLE), 0D), 0D) AS `c_{c}`" for c in COUNT_INPUTS) + " FROM __THIS__")
    assemble = VectorAssembler(inputCols=cols, outputCol=vec, handleInvalid="keep")
    stages = [prepare, assemble]
    nb_input = vec
    if model == "nb_bernoulli":
        stages.append(Binarizer(threshold=0.0, inputCol=vec, outputCol="indicators"))
        nb_input = "indicators"
    nb = NaiveBayes(featuresCol=nb_input, labelCol="label",
                    modelType="bernoulli" if model == "nb_bernoulli" else "multinomial", **weight)
    stages.append(nb)
    return stages, ParamGridBuilder().addGrid(nb.smoothing, conf.nb.smoothing).build()


def with_probabilities(pred: DataFrame, multiclass: bool, threshold: float = 0.5) -> DataFrame:
    """``probs`` (array) and ``p`` (class-1 probability) from Spark's probability vector; binary predictions use
    ``threshold`` on p."""
    out = pred.withColumn("probs", vector_to_array("probability"))
    if multiclass:
        return out.withColumn("p", F.array_max("probs")).withColumn("prediction", F.col("prediction").cast("int"))
    out = out.withColumn("p", F.element_at("probs", 2))
    return out.withColumn("prediction", (F.col("p") >= threshold).cast("int"))


@dataclass
class Trained:
    task: str
    model: str
    pipeline: PipelineModel
    params: dict
    threshold: float | None
    validation: dict = field(default_factory=dict)


def split_validation(df: DataFrame, share: float, seed: int) -> tuple[DataFrame, DataFrame]:
    """Users (all of a user's rows) hashed into fit / validation parts: reproducible, independent of partitioning."""
    h = F.pmod(F.xxhash64(F.lit(seed), "user_id"), F.lit(10_000)) / 10_000.0
    return df.where(h >= share), df.where(h < share)


def _classes(df: DataFrame) -> int:
    return df.select("label").distinct().count()


def tune(estimator: Pipeline, grid: list, fit_x: DataFrame, evaluator, conf: PredictConf) -> tuple[int, float | None]:
    """Index of the best grid point and its tuning metric, from a hashed split of the fitting users. One grid point,
    or a split without both classes in each part, needs no tuning (index 0, no metric)."""
    if len(grid) == 1:
        return 0, None
    part, held = split_validation(fit_x, 1 - conf.train_ratio, conf.seed + 1)
    if _classes(part) < 2 or _classes(held) < 2:
        return 0, None
    metrics = [evaluator.evaluate(m.transform(held)) for m in estimator.fit(part, grid)]
    best = max(range(len(grid)), key=lambda i: (metrics[i], -i))
    return best, float(metrics[best])


def train(task: str, model: str, train_df: DataFrame, conf: PredictConf) -> Trained:
    """Fit the feature pipeline on the fitting users, tune (``tune``) and refit the model, choose the binary
    threshold on the validation users."""
    multiclass = task not in BINARY
    fit_df, valid_df = split_validation(train_df, conf.validation_share, conf.seed)
    if conf.class_weights:
        fit_df = with_class_weights(fit_df)
    features = build_feature_pipeline().fit(fit_df)
    fit_x = features.transform(fit_df).cache()
    stages, grid = model_stages(task, model, conf, multiclass)
    evaluator = (MulticlassClassificationEvaluator(labelCol="label", metricName="f1") if multiclass else
                 BinaryClassificationEvaluator(labelCol="label", rawPredictionCol="probability",
                                               metricName="areaUnderPR"))
    best_i, tuned = tune(Pipeline(stages=stages), grid, fit_x, evaluator, conf)
    best = Pipeline(stages=stages).fit(fit_x, grid[best_i])
    params = {p.name: v for p, v in grid[best_i].items()}
    fit_x.unpersist()
    pipeline = PipelineModel(stages=[*features.stages, *best.stages])
    valid_pred = with_probabilities(pipeline.transform(valid_df), multiclass)
    threshold, valid = None, {}
    if not multiclass:
        threshold, f1 = cm.best_f1_threshold(valid_pred)
        valid = {"f1_at_threshold": f1}
    if tuned is not None:
        valid["tuning_" + evaluator.getMetricName()] = tuned
    return Trained(task, model, pipeline, params, threshold, valid)


def predict(trained: Trained, df: DataFrame) -> DataFrame:
    return with_probabilities(trained.pipeline.transform(df), trained.task not in BINARY,
                              trained.threshold if trained.threshold is not None else 0.5)


def majority(train_df: DataFrame, test_df: DataFrame, n_classes: int, multiclass: bool) -> DataFrame:
    """The majority-class baseline: the training window's most frequent label, with its training share as p."""
    top = train_df.groupBy("label").count().orderBy(F.desc("count"), F.asc("label")).first()  # one row
    total = train_df.count()
    share = top["count"] / total
    probs = [share if c == top["label"] else (1 - share) / max(1, n_classes - 1) for c in range(n_classes)]
    out = test_df.withColumn("prediction", F.lit(int(top["label"]))) \
        .withColumn("probs", F.array(*[F.lit(float(p)) for p in probs]))
    return out.withColumn("p", F.lit(float(probs[1] if not multiclass else max(probs))))


def evaluate(pred: DataFrame, multiclass: bool) -> dict[str, float]:
    return cm.multiclass_metrics(pred) if multiclass else cm.binary_metrics(pred)


def explain(trained: Trained, sample: DataFrame, class_names: list[str], top: int = 15) -> list[dict]:
    """LR: the ``top`` strongest coefficients per class; NB: every class-conditional log-probability, by feature
    name (from the assembled vector's ML attributes)."""
    last = trained.pipeline.stages[-1]
    cols, _ = inputs_for(trained.task, trained.model)
    if trained.model == "lr":  # features_std keeps the slot order of `features`, whose slots carry names
        names = vector_names(trained.pipeline.transform(sample.limit(1)), "features") + cols[1:]
    else:
        names = [c[2:] if c.startswith("c_") else c for c in cols]
    rows = []
    if trained.model == "lr":
        matrix = last.coefficientMatrix.toArray()
        for ci, coefs in enumerate(matrix):
            cls = class_names[1] if matrix.shape[0] == 1 else class_names[ci]
            order = sorted(range(len(coefs)), key=lambda j: -abs(coefs[j]))[:top]
            rows += [{"class_label": cls, "feature": names[j], "value": float(coefs[j]), "kind": "lr_coefficient"}
                     for j in order]
    else:
        theta = last.theta.toArray()
        for ci, logps in enumerate(theta):
            cls = class_names[ci] if ci < len(class_names) else str(ci)
            rows += [{"class_label": cls, "feature": names[j], "value": float(v), "kind": "nb_log_prob"}
                     for j, v in enumerate(logps)]
    return rows
