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

from datetime import date, timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shopmine.conf import DemandConf


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
