"""Classification metrics for the behaviour predictors, on prediction frames with an integer ``label``, an integer
``prediction`` and either ``p`` (binary: the probability of class 1) or ``probs`` (multi-class: array of class
probabilities, index = class).

Definitions (TP/FP/FN counted per class c, N rows):

* accuracy = Σ_c TP_c / N;
* precision_c = TP_c / (TP_c + FP_c), recall_c = TP_c / (TP_c + FN_c), F1_c = 2·P·R / (P + R) (0 when undefined);
  macro = the unweighted mean over classes present in labels or predictions; for a binary task the reported
  precision / recall / F1 are those of class 1;
* log-loss = −(1/N) Σ ln p(true class), p clipped to [1e-15, 1 − 1e-15];
* ROC-AUC / PR-AUC (binary): Spark's ``BinaryClassificationEvaluator`` on ``p`` (area under ROC, and under the
  precision-recall curve);
* calibration (binary): rows in 10 equal-width bins of ``p``: rows, mean predicted p, observed positive rate.

Only counts bounded by the number of classes (confusion: classes² rows), thresholds or bins reach the driver.
"""

from __future__ import annotations

from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

EPS = 1e-15
THRESHOLDS = [round(0.01 * i, 2) for i in range(1, 100)]


def _safe(num: float, den: float) -> float:
    return num / den if den else 0.0


def _f1(p: float, r: float) -> float:
    return _safe(2 * p * r, p + r)


def confusion(pred: DataFrame) -> dict[tuple[int, int], int]:
    """(label, prediction) -> rows."""
    rows = pred.groupBy("label", "prediction").count().collect()  # at most classes² rows
    return {(int(r["label"]), int(r["prediction"])): int(r["count"]) for r in rows}


def per_class(conf: dict[tuple[int, int], int]) -> dict[int, dict[str, float]]:
    classes = sorted({c for pair in conf for c in pair})
    out = {}
    for c in classes:
        tp = conf.get((c, c), 0)
        fp = sum(v for (lab, p), v in conf.items() if p == c and lab != c)
        fn = sum(v for (lab, p), v in conf.items() if lab == c and p != c)
        prec, rec = _safe(tp, tp + fp), _safe(tp, tp + fn)
        out[c] = {"precision": prec, "recall": rec, "f1": _f1(prec, rec), "support": tp + fn}
    return out


def _counts_metrics(conf: dict[tuple[int, int], int]) -> dict[str, float]:
    n = sum(conf.values())
    pc = per_class(conf)
    out = {"accuracy": _safe(sum(v for (lab, p), v in conf.items() if lab == p), n), "rows": float(n)}
    for name in ("precision", "recall", "f1"):
        out[f"macro_{name}"] = sum(m[name] for m in pc.values()) / len(pc) if pc else 0.0
    return out


def binary_metrics(pred: DataFrame) -> dict[str, float]:
    """Metrics of a binary prediction frame (label, prediction, p)."""
    conf = confusion(pred)
    out = _counts_metrics(conf)
    one = per_class(conf).get(1, {"precision": 0.0, "recall": 0.0, "f1": 0.0})
    out.update(precision=one["precision"], recall=one["recall"], f1=one["f1"])
    p = F.least(F.greatest(F.col("p").cast("double"), F.lit(EPS)), F.lit(1 - EPS))
    agg = pred.agg(F.avg(-F.when(F.col("label") == 1, F.log(p)).otherwise(F.log(1 - p))).alias("log_loss"),
                   F.avg("label").alias("positive_rate")).first()
    out.update(log_loss=float(agg["log_loss"]), positive_rate=float(agg["positive_rate"]))
    scored = pred.select(F.col("label").cast("double").alias("label"), F.col("p").cast("double").alias("p"))
    if len({lab for lab, _ in conf}) == 2:  # AUCs need both classes
        for metric, name in (("areaUnderROC", "roc_auc"), ("areaUnderPR", "pr_auc")):
            out[name] = BinaryClassificationEvaluator(rawPredictionCol="p", labelCol="label", metricName=metric) \
                .evaluate(scored)
    return out


def multiclass_metrics(pred: DataFrame) -> dict[str, float]:
    """Metrics of a multi-class prediction frame (label, prediction, probs), plus f1 per class as ``f1_class_<c>``."""
    conf = confusion(pred)
    out = _counts_metrics(conf)
    for c, m in per_class(conf).items():
        out[f"f1_class_{c}"] = m["f1"]
        out[f"recall_class_{c}"] = m["recall"]
        out[f"precision_class_{c}"] = m["precision"]
    # A class the model never saw in training has no slot: probability 0, clipped to EPS.
    p_true = F.least(F.greatest(F.coalesce(F.try_element_at("probs", F.col("label") + 1), F.lit(0.0)), F.lit(EPS)),
                     F.lit(1 - EPS))
    out["log_loss"] = float(pred.agg(F.avg(-F.log(p_true))).first()[0])
    return out


def calibration(pred: DataFrame, bins: int = 10) -> list[dict[str, float]]:
    """Equal-width bins of p: rows, mean p, observed positive rate (bins without rows are left out)."""
    b = F.least(F.floor(F.col("p") * bins), F.lit(bins - 1)).cast("int")
    rows = (pred.groupBy(b.alias("bin")).agg(F.count(F.lit(1)).alias("rows"), F.avg("p").alias("mean_p"),
                                             F.avg("label").alias("observed"))
            .orderBy("bin").collect())  # at most `bins` rows
    return [{"bin": r["bin"], "low": r["bin"] / bins, "high": (r["bin"] + 1) / bins, "rows": r["rows"],
             "mean_p": round(r["mean_p"], 6), "observed": round(r["observed"], 6)} for r in rows]


def _threshold_counts(pred: DataFrame) -> tuple[list[tuple[float, int, int]], int, int]:
    """(threshold, true positives, false positives) at every threshold of ``THRESHOLDS``, positives, negatives: one
    aggregate pass over the predictions."""
    lab = F.col("label") == 1
    exprs = []
    for i, t in enumerate(THRESHOLDS):
        hit = F.col("p") >= t
        exprs += [F.sum((hit & lab).cast("long")).alias(f"tp{i}"), F.sum((hit & ~lab).cast("long")).alias(f"fp{i}")]
    exprs += [F.sum(lab.cast("long")).alias("pos"), F.sum((~lab).cast("long")).alias("neg")]
    r = pred.agg(*exprs).first()
    counts = [(t, r[f"tp{i}"] or 0, r[f"fp{i}"] or 0) for i, t in enumerate(THRESHOLDS)]
    return counts, r["pos"] or 0, r["neg"] or 0


def best_f1_threshold(pred: DataFrame) -> tuple[float, float]:
    """The threshold on p (0.01 steps) with the highest F1 of class 1, and that F1, from one aggregate pass."""
    counts, pos, _ = _threshold_counts(pred)
    best = (0.5, -1.0)
    for t, tp, fp in counts:
        f1 = _f1(_safe(tp, tp + fp), _safe(tp, pos))
        if f1 > best[1]:
            best = (t, f1)
    return best


def roc_curve(pred: DataFrame) -> list[dict[str, float]]:
    """ROC points (false and true positive rate) at the thresholds 0.01 … 0.99, plus the corners (0, 0), (1, 1): a
    curve the report can draw without the predictions reaching the driver."""
    counts, pos, neg = _threshold_counts(pred)
    points = [{"threshold": 1.0, "fpr": 0.0, "tpr": 0.0}]
    points += [{"threshold": t, "fpr": round(_safe(fp, neg), 6), "tpr": round(_safe(tp, pos), 6)}
               for t, tp, fp in reversed(counts)]
    return points + [{"threshold": 0.0, "fpr": 1.0, "tpr": 1.0}]
