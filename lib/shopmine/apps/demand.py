"""Logistics: when purchases happen (weekday x hour per category) and a daily demand forecast per category.

Days are whole days: a last day the data covers only partly is left out (see ``last_complete_day``). The
forecast is a seasonal baseline with a damped trend, fitted per category on daily units (days without a
purchase count as 0):

- weekday index s_w = mean units on weekday w / mean units, shrunk towards 1 by ``shrinkage`` pseudo-weeks
  (s_w = (n_w x raw + k) / (n_w + k)), so two weeks of data cannot invent a strong weekly cycle;
- level = mean deseasonalised units (y / s_w) over the last ``level_days`` days;
  trend = (level - the mean of the ``level_days`` before) / ``level_days`` per day;
- forecast(h) = max(0, (level + trend x (phi + phi^2 + ... + phi^h)) x s_w(day)), phi = ``damping``.

It is evaluated by refitting without the last ``holdout_days`` days and forecasting them: MAPE (over category-days
that had purchases), WAPE (sum of absolute errors / sum of units) and the same for the seasonal naive forecast (the
same weekday a week earlier) as the baseline to beat. Every step is a Spark aggregate or join on category x day
rows; nothing is collected but the metrics.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta, timezone

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shopmine.conf import DemandConf, Settings
from shopmine.evaluation.record import write_model_metrics
from shopmine.io.delta import Lake
from shopmine.io.tables import GOLD_DEMAND_FORECAST, GOLD_PURCHASE_PATTERNS, SILVER_EVENTS
from shopmine.jobrun import ShopmineError
from shopmine.logs import step

log = logging.getLogger("shopmine.apps.demand")


def last_complete_day(events: DataFrame) -> date | None:
    """The last day the events cover to its end: a day counts as complete when events reach into its last hour,
    else the data stops mid-day (an export cut at 10:00) and that day's totals would look like a collapse."""
    last = events.agg(F.max("event_time")).first()[0]
    return None if last is None else (last + timedelta(hours=1)).date() - timedelta(days=1)


def daily_units(events: DataFrame, through: date | None = None) -> DataFrame:
    """(category_id, day, units, purchases) for every category and every day from the first event date to
    ``through`` (default: the last event date), zeros where nothing was bought. Bot purchases are left out."""
    if through is not None:
        events = events.where(F.col("event_date") <= F.lit(through))
    buys = events.where((F.col("event_type") == "purchase") & ~F.col("is_bot") & F.col("category_id").isNotNull())
    per_day = buys.groupBy("category_id", F.col("event_date").alias("day")).agg(
        F.sum(F.coalesce("quantity", F.lit(1))).cast("double").alias("units"), F.count("*").alias("purchases"))
    span = events.agg(F.min("event_date").alias("lo"), F.max("event_date").alias("hi"))
    days = span.select(F.explode(F.sequence("lo", "hi")).alias("day"))
    grid = buys.select("category_id").distinct().crossJoin(days)
    return (grid.join(per_day, ["category_id", "day"], "left")
            .fillna({"units": 0.0, "purchases": 0}))


def purchase_patterns(events: DataFrame) -> DataFrame:
    """(category_id, weekday 1 = Monday .. 7, hour 0-23 UTC, purchases, units, share of the category's purchases)."""
    buys = events.where((F.col("event_type") == "purchase") & ~F.col("is_bot") & F.col("category_id").isNotNull())
    cells = buys.groupBy("category_id", _weekday(F.col("event_time")).alias("weekday"),
                         F.hour("event_time").alias("hour")).agg(
        F.count("*").alias("purchases"), F.sum(F.coalesce("quantity", F.lit(1))).alias("units"))
    totals = cells.groupBy("category_id").agg(F.sum("purchases").alias("_total"))
    return (cells.join(totals, "category_id")
            .withColumn("share", F.round(F.col("purchases") / F.col("_total"), 6)).drop("_total"))


def _weekday(col) -> F.Column:
    return ((F.dayofweek(col) + 5) % 7 + 1).cast("int")  # Spark: 1 = Sunday; here 1 = Monday


def fit(daily: DataFrame, end: date, conf: DemandConf) -> DataFrame:
    """Per category, fitted on the days up to ``end``: (category_id, level, trend, s_1 .. s_7 as array index)."""
    train = daily.where(F.col("day") <= F.lit(end)).withColumn("wd", _weekday(F.col("day")))
    mean = train.groupBy("category_id").agg(F.avg("units").alias("mean"))
    k = float(conf.shrinkage)
    week = (train.groupBy("category_id", "wd").agg(F.avg("units").alias("mw"), F.count("*").alias("nw"))
            .join(mean, "category_id")
            .withColumn("s", F.when(F.col("mean") > 0, (F.col("nw") * F.col("mw") / F.col("mean") + k)
                                    / (F.col("nw") + k)).otherwise(F.lit(1.0))))
    seasonal = week.groupBy("category_id").agg(
        F.map_from_entries(F.collect_list(F.struct("wd", "s"))).alias("season"))
    recent_from = end - timedelta(days=conf.level_days - 1)
    before_from = recent_from - timedelta(days=conf.level_days)
    deseason = (train.join(seasonal, "category_id")
                .withColumn("y", F.col("units") / F.coalesce(F.element_at("season", F.col("wd")), F.lit(1.0))))
    levels = deseason.groupBy("category_id").agg(
        F.avg(F.when(F.col("day") >= F.lit(recent_from), F.col("y"))).alias("level"),
        F.avg(F.when((F.col("day") >= F.lit(before_from)) & (F.col("day") < F.lit(recent_from)), F.col("y")))
        .alias("previous"))
    return (levels.join(seasonal, "category_id")
            .withColumn("trend", F.coalesce((F.col("level") - F.col("previous")) / conf.level_days, F.lit(0.0)))
            .select("category_id", F.coalesce("level", F.lit(0.0)).alias("level"), "trend", "season"))


def forecast(spark: SparkSession, model: DataFrame, end: date, horizon: int, damping: float) -> DataFrame:
    """(category_id, forecast_date, horizon, units_forecast, level, trend, weekday_index) for days end+1..end+h."""
    steps = spark.createDataFrame(
        [(h, end + timedelta(days=h), sum(damping ** i for i in range(1, h + 1))) for h in range(1, horizon + 1)],
        "horizon int, forecast_date date, damped double")
    return (model.crossJoin(F.broadcast(steps))
            .withColumn("weekday_index", F.coalesce(F.element_at("season", _weekday(F.col("forecast_date"))),
                                                    F.lit(1.0)))
            .withColumn("units_forecast", F.round(F.greatest(
                F.lit(0.0), (F.col("level") + F.col("trend") * F.col("damped")) * F.col("weekday_index")), 6))
            .select("category_id", "forecast_date", "horizon", "units_forecast", "level", "trend", "weekday_index"))


def seasonal_naive(daily: DataFrame, end: date, horizon: int) -> DataFrame:
    """The baseline: each day's forecast is the units of the same weekday one week earlier (or of the last week
    before ``end`` for horizons beyond 7)."""
    out = []
    for h in range(1, horizon + 1):
        target = end + timedelta(days=h)
        source = target - timedelta(days=7 * ((h - 1) // 7 + 1))
        out.append(daily.where(F.col("day") == F.lit(source)).select(
            "category_id", F.lit(target).alias("forecast_date"), F.col("units").alias("units_forecast")))
    result = out[0]
    for part in out[1:]:
        result = result.unionByName(part)
    return result


def errors(pred: DataFrame, daily: DataFrame) -> dict[str, float]:
    """MAPE over category-days with units > 0, WAPE over all, and the number of category-days."""
    joined = pred.join(daily.select("category_id", F.col("day").alias("forecast_date"), "units"),
                       ["category_id", "forecast_date"])
    err = F.abs(F.col("units_forecast") - F.col("units"))
    r = joined.agg(F.avg(F.when(F.col("units") > 0, err / F.col("units"))).alias("mape"),
                   (F.sum(err) / F.sum("units")).alias("wape"), F.count("*").alias("n")).first()
    return {"mape": float(r["mape"]) if r["mape"] is not None else float("nan"),
            "wape": float(r["wape"]) if r["wape"] is not None else float("nan"), "category_days": float(r["n"])}


def run_demand(lake: Lake, settings: Settings, run_id: str, events: DataFrame) -> dict[str, int]:
    """Backtest on the held-out days and write ops.model_metrics, then gold.demand_forecast and
    gold.purchase_patterns from silver ``events``. Returns the run's counts."""
    conf = settings.demand
    counts: dict[str, int] = {}
    through = last_complete_day(events)
    last_date = events.agg(F.max("event_date")).first()[0]
    if through is not None and through < last_date:
        log.info("the events stop part-way through %s: forecasting from the last whole day, %s", last_date, through)
    daily = daily_units(events, through).persist()
    span = daily.agg(F.min("day"), F.max("day"), F.countDistinct("category_id")).first()
    first, last, categories = span[0], span[1], span[2]
    if last is None:
        raise ShopmineError(f"no purchases with a category in {SILVER_EVENTS.name}: nothing to forecast")
    days = (last - first).days + 1
    if days <= conf.holdout_days + conf.level_days:
        raise ShopmineError(f"{days} days of purchases: the backtest needs more than demand.holdout_days + "
                            f"demand.level_days = {conf.holdout_days + conf.level_days}")
    now = datetime.now(timezone.utc)
    cut = last - timedelta(days=conf.holdout_days)
    with step(log, f"backtest on {conf.holdout_days} held-out day(s) after {cut}") as info:
        held = forecast(lake.spark, fit(daily, cut, conf), cut, conf.holdout_days, conf.damping)
        metrics = {"demand.seasonal_trend": errors(held, daily),
                   "demand.seasonal_naive": errors(seasonal_naive(daily, cut, conf.holdout_days), daily)}
        info.update({m: round(v["wape"], 4) for m, v in metrics.items()})
    split = f"holdout:{cut + timedelta(days=1)}..{last}"
    details = {"categories": categories, "history_days": days - conf.holdout_days, "conf": conf.model_dump()}
    write_model_metrics(lake, run_id, "demand", [(model, split, None, name, value, details)
                                                 for model, values in metrics.items() for name, value in values.items()])
    with step(log, f"forecast {conf.horizon_days} day(s) after {last} for {categories:,} categories") as info:
        future = forecast(lake.spark, fit(daily, last, conf), last, conf.horizon_days, conf.damping)
        lake.overwrite(future.select("*", F.lit(last).alias("as_of"), F.lit(run_id).alias("run_id"),
                                     F.lit(now).cast("timestamp").alias("generated_at")),
                       GOLD_DEMAND_FORECAST.name)
        info["rows"] = lake.last_write_metrics(GOLD_DEMAND_FORECAST.name).get("numOutputRows", 0)
    with step(log, "purchase patterns (category x weekday x hour)") as info:
        lake.overwrite(purchase_patterns(events).select("*", F.lit(last).alias("as_of"), F.lit(run_id).alias("run_id")),
                       GOLD_PURCHASE_PATTERNS.name)
        info["rows"] = lake.last_write_metrics(GOLD_PURCHASE_PATTERNS.name).get("numOutputRows", 0)
    daily.unpersist()
    for model, m in metrics.items():
        log.info("  %-22s MAPE %.3f  WAPE %.3f  (%d category-days)", model, m["mape"], m["wape"], m["category_days"])
    counts.update(categories=categories, rows_written=lake.read(GOLD_DEMAND_FORECAST.name).count())
    return counts
