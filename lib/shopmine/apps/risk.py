"""Risk control: per-user flags from rules and a robust anomaly score, evaluated against the generator's bots.

Each flag is a DataFrame -> DataFrame transform returning ``(user_id, flag, score, reasons)``; nothing is collected
except the anomaly score's medians and MADs (two numbers per column) and the evaluation's 2 x 2 confusion counts.

- ``bot``: clean already flags inhuman events (rate, machine-regular gaps); a user with at least
  ``risk.bot_min_share`` of their events flagged is a bot, with clean's reasons.
- ``scraper``: browsing only (view share >= ``min_view_share``), many views, very long sessions, no cart, favourite
  or purchase: a crawler even when its timing is irregular enough to pass clean's rules.
- ``click_farming``: within one window of ``window_minutes``, at least ``min_accounts`` new accounts (first seen at
  most ``new_account_days`` before) cart or buy the same item, and they are at least ``min_new_share`` of that
  item's actors in the window; every new account of such a burst is flagged. Accounts first seen within
  ``new_account_days`` of the data's first day are not called new: everyone looks new at the start of the data.
- ``abnormal_purchase``: a purchase whose quantity or amount is at least ``min_ratio`` times the user's own median
  and more than ``z_threshold`` robust z-scores from it (spread 1.4826 x MAD, floored at 10 % of the median), given
  at least ``min_history`` purchases. (Prices outside their category's bounds are clean's data-quality flags in
  silver, not a behaviour of the buyer.)
- ``anomaly``: the largest robust z-score of the user's features against all users (log1p for counts); where a
  column's MAD is 0 (most users at one value) the spread is 1.2533 x the mean absolute deviation instead, and a
  column with both 0 says nothing. Users with fewer than ``min_events`` events are never flagged (their rates are
  noise).
"""

from __future__ import annotations

import logging
import math

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from shopmine.conf import ConfError, RiskConf, Settings
from shopmine.evaluation.record import write_model_metrics
from shopmine.io.delta import Lake
from shopmine.io.tables import GOLD_RISK_FLAGS
from shopmine.vocab import revenue, units

log = logging.getLogger("shopmine.apps.risk")

FLAGS = ("bot", "scraper", "click_farming", "abnormal_purchase", "anomaly")
BOT_LIKE = ("bot", "scraper", "anomaly")  # the flags the generator's ground truth (injected bots) can evaluate
MAX_REASONS = 5


def _out(df: DataFrame, flag: str, score, reasons) -> DataFrame:
    return df.select("user_id", F.lit(flag).alias("flag"), score.cast("double").alias("score"),
                     F.slice(reasons, 1, MAX_REASONS).alias("reasons"))


def bot_flags(features: DataFrame, events: DataFrame, conf: RiskConf) -> DataFrame:
    bots = features.where(F.col("bot_score") >= conf.bot_min_share).select("user_id", "bot_score")
    why = (events.where("is_bot").groupBy("user_id")
           .agg(F.array_sort(F.collect_set("bot_reason")).alias("why")))
    df = bots.join(why, "user_id", "left")
    share = F.format_string("%.0f%% of events bot-flagged by clean", F.col("bot_score") * 100)
    return _out(df, "bot", F.col("bot_score"),
                F.concat(F.array(share), F.coalesce(F.col("why"), F.array().cast("array<string>"))))


def scraper_flags(features: DataFrame, conf: RiskConf) -> DataFrame:
    c = conf.scraper
    df = features.where((F.col("n_view") >= c.min_views) & (F.col("rate_view") >= c.min_view_share)
                        & (F.col("avg_session_events") >= c.min_session_events)
                        & (F.col("n_cart") + F.col("n_favourite") + F.col("n_purchase") == 0))
    why = F.format_string("%d views in %d sessions (%.0f events per session), no cart, favourite or purchase",
                          "n_view", "sessions", "avg_session_events")
    return _out(df, "scraper", F.col("avg_session_events"), F.array(why))


def click_farming_flags(events: DataFrame, features: DataFrame, conf: RiskConf) -> DataFrame:
    c = conf.click_farming
    seconds = c.window_minutes * 60
    start = features.agg(F.min("first_seen")).first()[0]
    if start is None:
        return _out(features.limit(0), "click_farming", F.lit(0.0), F.array().cast("array<string>"))
    new = ((F.datediff("event_date", "first_seen") <= c.new_account_days)
           & (F.datediff("first_seen", F.lit(start)) > c.new_account_days))
    acts = (events.where(F.col("event_type").isin("cart", "purchase") & ~F.col("is_bot"))
            .join(features.select("user_id", "first_seen"), "user_id")
            .withColumn("new", new)
            .withColumn("window", F.floor(F.unix_timestamp("event_time") / seconds)))
    bursts = (acts.groupBy("item_id", "window")
              .agg(F.countDistinct(F.when(F.col("new"), F.col("user_id"))).alias("new_accounts"),
                   F.countDistinct("user_id").alias("accounts"))
              .where((F.col("new_accounts") >= c.min_accounts)
                     & (F.col("new_accounts") >= c.min_new_share * F.col("accounts"))))
    hits = (acts.where("new").select("user_id", "item_id", "window").distinct()
            .join(bursts, ["item_id", "window"])
            .withColumn("why", F.format_string(
                "item %s: %d new accounts of %d carted or bought it within %d min from %s", F.col("item_id"),
                F.col("new_accounts"), F.col("accounts"), F.lit(c.window_minutes),
                F.date_format(F.timestamp_seconds(F.col("window") * seconds), "yyyy-MM-dd HH:mm"))))
    df = hits.groupBy("user_id").agg(F.max("new_accounts").alias("score"),
                                     F.array_sort(F.collect_set("why")).alias("why"))
    return _out(df, "click_farming", F.col("score"), F.col("why"))


def _robust_z(x, median, mad):
    spread = F.greatest(F.lit(1.4826) * mad, F.lit(0.1) * F.abs(median), F.lit(1e-9))
    return F.abs(x - median) / spread


def abnormal_purchase_flags(events: DataFrame, conf: RiskConf) -> DataFrame:
    c = conf.abnormal_purchase
    buys = (events.where((F.col("event_type") == "purchase") & ~F.col("is_bot"))
            .select("user_id", "item_id", "event_time", units().cast("double").alias("qty"), revenue().alias("amount")))
    med = buys.groupBy("user_id").agg(F.count("*").alias("n"), F.percentile_approx("qty", 0.5).alias("q_med"),
                                      F.percentile_approx("amount", 0.5).alias("a_med"))
    mad = (buys.join(med, "user_id").groupBy("user_id")
           .agg(F.percentile_approx(F.abs(F.col("qty") - F.col("q_med")), 0.5).alias("q_mad"),
                F.percentile_approx(F.abs(F.col("amount") - F.col("a_med")), 0.5).alias("a_mad")))
    def z(x, median, mad):  # only upward: buying far more than usual, with enough history to know what is usual
        return F.when((F.col("n") >= c.min_history) & (x >= c.min_ratio * median), _robust_z(x, median, mad))

    scored = (buys.join(med, "user_id").join(mad, "user_id")
              .withColumn("zq", z(F.col("qty"), F.col("q_med"), F.col("q_mad")))
              .withColumn("za", z(F.col("amount"), F.col("a_med"), F.col("a_mad"))))
    when = F.date_format("event_time", "yyyy-MM-dd HH:mm")
    reasons = F.filter(F.array(
        F.when(F.col("zq") > c.z_threshold, F.format_string(
            "item %s at %s: quantity %.0f vs the user's median %.0f (robust z %.1f)", F.col("item_id"), when,
            F.col("qty"), F.col("q_med"), F.col("zq"))),
        F.when(F.col("za") > c.z_threshold, F.format_string(
            "item %s at %s: amount %.2f vs the user's median %.2f (robust z %.1f)", F.col("item_id"), when,
            F.col("amount"), F.col("a_med"), F.col("za"))),
    ), lambda r: r.isNotNull())
    hits = scored.withColumn("why", reasons).where(F.size("why") > 0)
    df = hits.groupBy("user_id").agg(
        F.max(F.greatest(F.coalesce("zq", F.lit(0.0)), F.coalesce("za", F.lit(0.0)))).alias("score"),
        F.array_sort(F.flatten(F.collect_list("why"))).alias("why"))
    return _out(df, "abnormal_purchase", F.col("score"), F.col("why"))


def anomaly_flags(features: DataFrame, conf: RiskConf) -> DataFrame:
    c = conf.anomaly
    missing = [col for col in c.columns if col not in features.columns]
    if missing:
        raise ConfError(f"config key 'risk.anomaly.columns': no column(s) {missing} in gold.user_features")

    def value(col):
        x = F.col(col).cast("double")
        return F.log1p(x) if col in c.log_columns else x

    meds = features.agg(*[F.percentile_approx(value(col), 0.5).alias(col) for col in c.columns]).first()
    cols = [col for col in c.columns if meds[col] is not None]  # a column null for every user says nothing
    if not cols:
        return _out(features.limit(0), "anomaly", F.lit(0.0), F.array().cast("array<string>"))
    dev = {col: F.abs(value(col) - F.lit(meds[col])) for col in cols}
    spread = features.agg(*[F.percentile_approx(dev[col], 0.5).alias(f"mad_{col}") for col in cols],
                          *[F.avg(dev[col]).alias(f"mean_{col}") for col in cols]).first()
    scale = {col: 1.4826 * spread[f"mad_{col}"] if spread[f"mad_{col}"] else 1.253314 * (spread[f"mean_{col}"] or 0.0)
             for col in cols}
    cols = [col for col in cols if scale[col] > 0]
    if not cols:
        return _out(features.limit(0), "anomaly", F.lit(0.0), F.array().cast("array<string>"))
    zs = {col: F.coalesce(dev[col] / F.lit(scale[col]), F.lit(0.0)) for col in cols}
    shown = {col: math.expm1(meds[col]) if col in c.log_columns else meds[col] for col in cols}
    score = F.greatest(*zs.values()) if len(zs) > 1 else zs[cols[0]]
    reasons = F.filter(F.array(*[
        F.when(z > c.z_threshold, F.format_string(f"{col} = %.4g (all users' median {shown[col]:.4g}, robust z %.1f)",
                                                  F.col(col).cast("double"), z))
        for col, z in zs.items()]), lambda r: r.isNotNull())
    df = (features.withColumn("_score", score)
          .where((F.col("_score") > c.z_threshold) & (F.col("n_events") >= c.min_events)).withColumn("_why", reasons))
    return _out(df, "anomaly", F.col("_score"), F.col("_why"))


def risk_flags(events: DataFrame, features: DataFrame, conf: RiskConf) -> DataFrame:
    """Every flag raised, one row per user and flag."""
    return (bot_flags(features, events, conf)
            .unionByName(scraper_flags(features, conf))
            .unionByName(click_farming_flags(events, features, conf))
            .unionByName(abnormal_purchase_flags(events, conf))
            .unionByName(anomaly_flags(features, conf)))


def evaluate(flags: DataFrame, users: DataFrame, truth: DataFrame) -> dict[str, dict[str, float]]:
    """Precision / recall / F1 of each bot-like flag and of any of them against the injected bots (``truth``: user
    ids), over ``users`` (every user with features). Returns flag -> metrics (counts included)."""
    from shopmine.evaluation.classification import confusion, per_class

    base = users.select("user_id").distinct().join(truth.select("user_id").distinct()
                                                   .withColumn("label", F.lit(1)), "user_id", "left")
    out = {}
    for name, which in [*[(f, [f]) for f in BOT_LIKE], ("any", list(BOT_LIKE))]:
        hit = flags.where(F.col("flag").isin(which)).select("user_id").distinct().withColumn("prediction", F.lit(1))
        pred = base.join(hit, "user_id", "left").fillna(0, ["label", "prediction"])
        counts = confusion(pred)
        m = per_class(counts).get(1, {"precision": 0.0, "recall": 0.0, "f1": 0.0})
        out[name] = {"precision": m["precision"], "recall": m["recall"], "f1": m["f1"],
                     "flagged": float(counts.get((0, 1), 0) + counts.get((1, 1), 0)),
                     "true_bots": float(counts.get((1, 0), 0) + counts.get((1, 1), 0))}
    return out


def top_reasons(flags: DataFrame, n: int = 3) -> DataFrame:
    """The first reasons of the highest-scoring users per flag (for the log)."""
    w = Window.partitionBy("flag").orderBy(F.desc("score"), "user_id")
    return flags.withColumn("_r", F.row_number().over(w)).where(F.col("_r") <= n).drop("_r")


def run_risk(lake: Lake, settings: Settings, run_id: str, events: DataFrame, features: DataFrame,
             truth: DataFrame | None) -> dict[str, int]:
    """gold.risk_flags from ``events`` and user ``features``; with the generator's ``truth`` (pseudonymised like
    silver), precision and recall per flag into ops.model_metrics. Returns the run's counts."""
    counts: dict[str, int] = {}
    as_of = features.agg(F.max("as_of")).first()[0]
    flags = risk_flags(events, features, settings.risk)
    out = flags.select("*", F.lit(as_of).alias("as_of"), F.lit(run_id).alias("run_id"),
                       F.current_timestamp().alias("generated_at"))
    lake.overwrite(out, GOLD_RISK_FLAGS.name)
    written = lake.read(GOLD_RISK_FLAGS.name)
    per_flag = {r[0]: r[1] for r in written.groupBy("flag").count().collect()}  # at most five rows
    users = features.count()
    counts.update(rows_read=users, rows_written=sum(per_flag.values()), **{f"flag_{k}": v for k, v in per_flag.items()})
    log.info("flags raised: %s", ", ".join(f"{k} {v:,}" for k, v in sorted(per_flag.items())) or "none")
    for r in top_reasons(written).collect():  # three per flag
        log.info("  %-17s user %-12s score %8.2f  %s", r["flag"], r["user_id"], r["score"], "; ".join(r["reasons"][:2]))
    if truth is not None:
        bots = truth.where(F.col("kind") == "bot").select("user_id")
        if bots.limit(1).count():
            metrics = evaluate(written, features, bots)
            write_model_metrics(lake, run_id, "risk", [
                (f"risk.{flag}", "generator_truth", None, name, value, {"users": users})
                for flag, values in metrics.items() for name, value in values.items()])
            for flag, m in metrics.items():
                log.info("against the injected bots: %-8s precision %.3f recall %.3f (%d flagged, %d bots)", flag,
                         m["precision"], m["recall"], m["flagged"], m["true_bots"])
    return counts
