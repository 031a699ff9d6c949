"""Spark MLlib behaviour predictors: logistic regression (elastic net), naive Bayes (multinomial on counts,
Bernoulli on indicators) and gradient-boosted trees (binary tasks), each a Spark ML ``PipelineModel``: the feature
pipeline of ``features.pipeline`` (fitted on the training rows only, so no statistic of the test period leaks in),
the point-in-time extras (``extra_inputs``), then the model's own stages and, for binary tasks, an isotonic
calibration fitted on the validation users. The rules of ``predict.rules`` go through the same train / calibrate /
evaluate steps, so models and rules are compared on the same rows.

Users are hashed into fitting and validation parts (``split_validation``: reproducible, independent of row order and
partitioning). The conf grid is tuned on a second hashed split of the fitting users (``predict.train_ratio`` fit,
the rest scores each grid point; a random row split could leave a part with one class and fail the fit), and the best
point is refitted on every fitting user; the binary decision threshold is the one with the best F1 on the validation
users. Class weights (N / (K·n_c)) go in through ``weightCol``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import GBTClassifier, LogisticRegression, NaiveBayes
from pyspark.ml.evaluation import BinaryClassificationEvaluator, MulticlassClassificationEvaluator
from pyspark.ml.feature import Binarizer, SQLTransformer, StandardScaler, VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.ml.regression import IsotonicRegression, IsotonicRegressionModel
from pyspark.ml.tuning import ParamGridBuilder
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shopmine.conf import PredictConf
from shopmine.evaluation import classification as cm
from shopmine.features.aggregates import COUNTS
from shopmine.features.pipeline import ONEHOT_COLUMNS, build_feature_pipeline, numeric_names, vector_names
from shopmine.predict import rules
from shopmine.predict.datasets import BINARY, PAIR_INPUTS, USER_WINDOW_FEATURES, with_class_weights

COUNT_INPUTS = (*COUNTS, "frequency", "active_days", "sessions")
WINDOW_COUNTS = tuple(f for f in USER_WINDOW_FEATURES if f[0] == "w" or f in ("open_carts", "open_favourites"))
PAIR_COUNTS = tuple(f"p_{c}" for c in COUNTS)
TIE = 1e-6     # calibrated p = (1 - TIE) p_cal + TIE p_raw: isotonic steps keep the raw order inside each step
ONEHOT = "onehot_"   # the feature pipeline's one-hot slots: onehot_<column>_<value>
FLOOR = 1e-3   # ... mapped affinely into [FLOOR, 1 - FLOOR] (order kept; log-loss bounded)


def extra_inputs(task: str) -> list[str]:
    """Point-in-time columns beside the feature pipeline's vector: the user's windows, and the pair's features."""
    return [*USER_WINDOW_FEATURES, *(PAIR_INPUTS if task == "item_purchase" else ())]


def inputs_for(task: str, model: str) -> tuple[list[str], str]:
    """(columns assembled after the feature pipeline, the assembled column's name) for a task and model."""
    if model == "lr":
        return ["dense_std", *ONEHOT_COLUMNS], "x"
    if model == "gbt":
        return ["features", *extra_inputs(task)], "xg"
    return [f"c_{c}" for c in COUNT_INPUTS] + list(WINDOW_COUNTS) + list(
        PAIR_COUNTS if task == "item_purchase" else ()), "counts"


def model_stages(task: str, model: str, conf: PredictConf, multiclass: bool) -> tuple[list, list]:
    """The model's stages after the feature pipeline, and its tuning grid."""
    if rules.is_rule(task, model):
        return [SQLTransformer(statement=rules.score_sql(task, model))], [{}]
    cols, vec = inputs_for(task, model)
    weight = {"weightCol": "w"} if conf.class_weights else {}
    if model == "lr":
        # log1p of the non-negative extras; they and the pipeline's numeric slots standardised on the training rows;
        # the one-hot slots stay 0/1: standardising an indicator set on 0.1 % of the rows makes it worth 30 of its
        # sd, and a few hundred such slots let LR fit single rows (Taobao item level: ROC-AUC 0.784 -> 0.845)
        extras = extra_inputs(task)
        logs = SQLTransformer(statement="SELECT *, " + ", ".join(
            f"log1p(greatest(coalesce(CAST(`{c}` AS DOUBLE), 0D), 0D)) AS `l_{c}`" for c in extras) + " FROM __THIS__")
        raw = VectorAssembler(inputCols=[*numeric_names(), *[f"l_{c}" for c in extras]], outputCol="dense_raw",
                              handleInvalid="keep")
        std = StandardScaler(inputCol="dense_raw", outputCol="dense_std", withMean=True, withStd=True)
        assemble = VectorAssembler(inputCols=cols, outputCol=vec, handleInvalid="keep")
        lr = LogisticRegression(featuresCol=vec, labelCol="label", maxIter=conf.lr.max_iter,
                                family="multinomial" if multiclass else "binomial", standardization=False, **weight)
        grid = ParamGridBuilder().addGrid(lr.regParam, conf.lr.reg_param) \
            .addGrid(lr.elasticNetParam, conf.lr.elastic_net).build()
        return [logs, raw, std, assemble, lr], grid
    if model == "gbt":
        g = conf.gbt
        assemble = VectorAssembler(inputCols=cols, outputCol=vec, handleInvalid="keep")
        gbt = GBTClassifier(featuresCol=vec, labelCol="label", maxIter=g.max_iter, stepSize=g.step_size,
                            subsamplingRate=g.subsampling_rate, seed=conf.seed, **weight)
        return [assemble, gbt], ParamGridBuilder().addGrid(gbt.maxDepth, g.max_depth).build()
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
    """``probs`` (array) and ``p`` (class-1 probability) from Spark's probability vector (a rule: its squashed
    score ``p_raw``), calibrated by the pipeline's isotonic stage (``p_cal``) when it has one; binary predictions
    use ``threshold`` on p."""
    if "probability" in pred.columns:
        pred = pred.withColumn("probs", vector_to_array("probability"))
    if multiclass:
        return pred.withColumn("p", F.array_max("probs")).withColumn("prediction", F.col("prediction").cast("int"))
    raw = F.element_at("probs", 2) if "probability" in pred.columns else F.col("p_raw")
    if "p_cal" in pred.columns:  # kept inside [FLOOR, 1 - FLOOR]: an empty isotonic step is not a certainty
        p = F.lit(FLOOR) + F.lit(1 - 2 * FLOOR) * (F.lit(1 - TIE) * F.col("p_cal") + F.lit(TIE) * raw)
    else:
        p = raw
    out = pred.withColumn("p", F.least(F.greatest(p.cast("double"), F.lit(0.0)), F.lit(1.0)))
    out = out.withColumn("probs", F.array(1 - F.col("p"), F.col("p")))
    return out.withColumn("prediction", (F.col("p") >= threshold).cast("int"))


def calibrator(task: str, model: str, scored: DataFrame) -> IsotonicRegressionModel:
    """Isotonic regression of the label on the raw score of the validation users (a rule: its score)."""
    if rules.is_rule(task, model):
        iso = IsotonicRegression(featuresCol="rule_score", labelCol="label", predictionCol="p_cal")
    else:
        iso = IsotonicRegression(featuresCol="probability", featureIndex=1, labelCol="label", predictionCol="p_cal")
    return iso.fit(scored)


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
    """Fit the feature pipeline on the fitting users, tune (``tune``) and refit the model; for binary tasks, calibrate
    on the validation users (``predict.calibration``), choose the threshold there and record the validation metrics
    the served score is selected by. A rule (``rules.RULES``) goes through the same steps with nothing to fit."""
    multiclass = task not in BINARY
    fit_df, valid_df = split_validation(train_df, conf.validation_share, conf.seed)
    stages, grid = model_stages(task, model, conf, multiclass)
    params, tuned, metric = {}, None, "areaUnderPR"
    if rules.is_rule(task, model):
        pipeline = PipelineModel(stages=stages)
    else:
        if conf.class_weights:
            fit_df = with_class_weights(fit_df)
        features = build_feature_pipeline().fit(fit_df)
        fit_x = features.transform(fit_df).cache()
        evaluator = (MulticlassClassificationEvaluator(labelCol="label", metricName="f1") if multiclass else
                     BinaryClassificationEvaluator(labelCol="label", rawPredictionCol="probability",
                                                   metricName="areaUnderPR"))
        metric = evaluator.getMetricName()
        best_i, tuned = tune(Pipeline(stages=stages), grid, fit_x, evaluator, conf)
        best = Pipeline(stages=stages).fit(fit_x, grid[best_i])
        params = {p.name: v for p, v in grid[best_i].items()}
        fit_x.unpersist()
        pipeline = PipelineModel(stages=[*features.stages, *best.stages])
    threshold, valid = None, {}
    if not multiclass:
        valid_df = valid_df.persist()
        if conf.calibration == "isotonic":
            pipeline = PipelineModel(stages=[*pipeline.stages, calibrator(task, model, pipeline.transform(valid_df))])
        valid_pred = with_probabilities(pipeline.transform(valid_df), multiclass)
        threshold, f1 = cm.best_f1_threshold(valid_pred)
        scores = cm.binary_metrics(valid_pred)
        valid = {"f1_at_threshold": f1, "rows": valid_df.count(),
                 **{k: scores[k] for k in ("roc_auc", "pr_auc", "log_loss") if k in scores}}
        valid_df.unpersist()
    if tuned is not None:
        valid["tuning_" + metric] = tuned
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


def model_stage(pipeline: PipelineModel):
    """The model itself: the last stage before the calibration."""
    stages = [st for st in pipeline.stages if not isinstance(st, IsotonicRegressionModel)]
    return stages[-1]


def input_names(trained: Trained, scored: DataFrame) -> list[str]:
    """The name of each slot of the model's input vector; ``scored``: rows through the model's pipeline (one is
    enough: the names come from the vector's ML attributes)."""
    if trained.model == "lr":  # the standardised numeric slots and extras, then the 0/1 one-hot slots
        onehot = [n for n in vector_names(scored, "features") if n.startswith(ONEHOT)]
        return [*numeric_names(), *extra_inputs(trained.task), *onehot]
    if trained.model == "gbt":  # `features` keeps its slot names in the vector's ML attributes
        return vector_names(scored, "features") + extra_inputs(trained.task)
    cols, _ = inputs_for(trained.task, trained.model)
    return [c[2:] if c.startswith("c_") else c for c in cols]


def explain(trained: Trained, sample: DataFrame, class_names: list[str], top: int = 15) -> list[dict]:
    """LR: the ``top`` strongest coefficients per class; GBT: every feature importance; NB: every class-conditional
    log-probability, by feature name (from the assembled vector's ML attributes). Rules: nothing."""
    if rules.is_rule(trained.task, trained.model):
        return []
    last = model_stage(trained.pipeline)
    names = input_names(trained, trained.pipeline.transform(sample.limit(1)))
    rows = []
    if trained.model == "gbt":
        return [{"class_label": class_names[1], "feature": names[j], "value": float(v), "kind": "gbt_importance"}
                for j, v in enumerate(last.featureImportances.toArray())]
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


# -- per-row reasons ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reasons:
    """Why a row scores high: the inputs j of the vector ``column`` with the largest contribution
    (v_j − mean_j) · weight_j > 0, i.e. what lifts this row above the average training row.

    * LR: weight = the coefficient (on its inputs: standardised numbers, 0/1 one-hot slots): the exact split of the
      logit's difference from the average row;
    * naive Bayes: weight = the log-odds one unit of the input adds (multinomial: θ_yes − θ_no; Bernoulli: that
      minus the same for absence), again exact for the model's log-odds;
    * GBT: weight = importance × sign(mean among buyers − mean) / standard deviation: an approximation (trees have no
      per-row additive split in Spark ML), the important inputs on which the row is unusual in the buyers' direction.

    ``names``, ``means`` and ``weights`` hold one number per input (small; computed once per trained model)."""

    column: str
    names: tuple[str, ...]
    means: tuple[float, ...]
    weights: tuple[float, ...]

    def top(self, k: int = 3):
        """An array column of at most ``k`` input names, strongest first (empty when nothing lifts the row)."""
        means = F.array(*[F.lit(float(m)) for m in self.means])
        weights = F.array(*[F.lit(float(w)) for w in self.weights])
        names = F.array(*[F.lit(n) for n in self.names])
        # a one-hot slot is a reason only when set: "not in category c45" explains nothing to a reader
        onehot = F.array(*[F.lit(n.startswith(ONEHOT)) for n in self.names])
        parts = F.transform(vector_to_array(self.column), lambda x, i: F.struct(
            (-(x - F.element_at(means, i + 1)) * F.element_at(weights, i + 1)).alias("neg"),
            F.element_at(names, i + 1).alias("name"), (F.element_at(onehot, i + 1) & (x <= 0)).alias("unset")))
        # NaN (a null input kept by the assembler) compares as the largest double in Spark SQL: keep it out
        lifting = F.filter(parts, lambda s: (s["neg"] < 0) & ~F.isnan(s["neg"]) & ~s["unset"])
        return F.transform(F.slice(F.array_sort(lifting), 1, k), lambda s: s["name"])



def _finite(values) -> tuple[float, ...]:
    return tuple(0.0 if v != v or v in (float("inf"), float("-inf")) else float(v) for v in values)


def reasons_for(trained: Trained, train_df: DataFrame) -> Reasons | None:
    """The :class:`Reasons` of a binary model, from its training rows (one aggregate over them); None for a rule
    (its reason is the rule itself, see :func:`reason_column`) and for multi-class tasks."""
    import numpy as np
    from pyspark.ml.stat import Summarizer

    if trained.task not in BINARY or rules.is_rule(trained.task, trained.model):
        return None
    last = model_stage(trained.pipeline)
    _, column = inputs_for(trained.task, trained.model)
    if trained.model == "nb_bernoulli":
        column = "indicators"
    scored = trained.pipeline.transform(train_df)
    names = input_names(trained, scored)
    vec = F.col(column)
    stats = scored.select(Summarizer.mean(vec).alias("mean"), Summarizer.variance(vec).alias("var")).first()
    mean = np.nan_to_num(stats["mean"].toArray())
    if trained.model == "lr":
        weights = last.coefficientMatrix.toArray()[0]
    elif trained.model == "gbt":
        buyers = scored.where(F.col("label") == 1).select(Summarizer.mean(vec).alias("m")).first()["m"]
        sd = np.sqrt(np.nan_to_num(stats["var"].toArray()))
        direction = np.sign(np.nan_to_num(buyers.toArray()) - mean)
        weights = np.divide(last.featureImportances.toArray() * direction, sd, out=np.zeros_like(sd), where=sd > 0)
    else:
        theta = last.theta.toArray()
        weights = theta[1] - theta[0]
        if trained.model == "nb_bernoulli":
            weights = weights - (np.log1p(-np.exp(theta[1])) - np.log1p(-np.exp(theta[0])))
    if len(names) != len(mean):
        raise ValueError(f"{trained.task}/{trained.model}: {len(names)} input names for a vector of {len(mean)}")
    # readable: the feature's own name, not the pipeline's transformed slot (log1p_frequency -> frequency)
    names = [n.removeprefix("log1p_") for n in names]
    return Reasons(column, tuple(names), _finite(mean), _finite(weights))


def reason_column(trained: Trained, reasons: Reasons | None, k: int = 3):
    """The ``reasons`` column of a scored frame: the model's top inputs, or the rule's name where the rule fires."""
    if reasons is not None:
        return reasons.top(k)
    if rules.is_rule(trained.task, trained.model):
        return F.when(F.col("rule_score") > 0, F.array(F.lit(trained.model))).otherwise(F.array().cast("array<string>"))
    return F.lit(None).cast("array<string>")
