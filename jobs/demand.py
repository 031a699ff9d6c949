"""demand: silver purchases -> gold.purchase_patterns (weekday x hour per category) and gold.demand_forecast (daily
units per category for the next days), the forecast backtested on held-out days against a seasonal naive one."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timedelta, timezone

from pyspark.sql import functions as F

from shopmine.demand import daily_units, errors, fit, forecast, last_complete_day, purchase_patterns, seasonal_naive
from shopmine.io.tables import GOLD_DEMAND_FORECAST, GOLD_PURCHASE_PATTERNS, OPS_MODEL_METRICS, SILVER_EVENTS
from shopmine.jobrun import RunContext, ShopmineError, base_parser, run_job
from shopmine.logs import step

DESCRIPTION = ("silver purchases -> gold.purchase_patterns (weekday x hour per category) and gold.demand_forecast "
               "(seasonal baseline + damped trend, MAPE on held-out days vs a seasonal naive forecast)")
log = logging.getLogger("shopmine.demand")


def body(ctx: RunContext, args) -> None:
    conf = ctx.settings.demand
    events = ctx.read(SILVER_EVENTS.name)
    if ctx.skip_if_unchanged(args.force, "the events"):
        return
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
        held = forecast(ctx.spark, fit(daily, cut, conf), cut, conf.holdout_days, conf.damping)
        metrics = {"demand.seasonal_trend": errors(held, daily),
                   "demand.seasonal_naive": errors(seasonal_naive(daily, cut, conf.holdout_days), daily)}
        info.update({m: round(v["wape"], 4) for m, v in metrics.items()})
    split = f"holdout:{cut + timedelta(days=1)}..{last}"
    details = json.dumps({"categories": categories, "history_days": days - conf.holdout_days,
                          "conf": conf.model_dump()})
    rows = [(ctx.run_id, "demand", model, split, None, name, value, details, now)
            for model, values in metrics.items() for name, value in values.items()]
    ctx.lake.replace_where(ctx.spark.createDataFrame(rows, OPS_MODEL_METRICS.schema), OPS_MODEL_METRICS.name,
                           f"run_id = '{ctx.run_id}'")
    with step(log, f"forecast {conf.horizon_days} day(s) after {last} for {categories:,} categories") as info:
        future = forecast(ctx.spark, fit(daily, last, conf), last, conf.horizon_days, conf.damping)
        ctx.lake.overwrite(future.select("*", F.lit(last).alias("as_of"), F.lit(ctx.run_id).alias("run_id"),
                                         F.lit(now).cast("timestamp").alias("generated_at")),
                           GOLD_DEMAND_FORECAST.name)
        info["rows"] = ctx.lake.last_write_metrics(GOLD_DEMAND_FORECAST.name).get("numOutputRows", 0)
    with step(log, "purchase patterns (category x weekday x hour)") as info:
        ctx.lake.overwrite(purchase_patterns(events).select("*", F.lit(last).alias("as_of"),
                                                           F.lit(ctx.run_id).alias("run_id")),
                           GOLD_PURCHASE_PATTERNS.name)
        info["rows"] = ctx.lake.last_write_metrics(GOLD_PURCHASE_PATTERNS.name).get("numOutputRows", 0)
    daily.unpersist()
    for name in (OPS_MODEL_METRICS.name, GOLD_DEMAND_FORECAST.name, GOLD_PURCHASE_PATTERNS.name):
        ctx.wrote(name)
    for model, m in metrics.items():
        log.info("  %-22s MAPE %.3f  WAPE %.3f  (%d category-days)", model, m["mape"], m["wape"], m["category_days"])
    ctx.count(categories=categories, rows_written=ctx.lake.read(GOLD_DEMAND_FORECAST.name).count())


def parser():
    p = base_parser("demand", DESCRIPTION)
    p.add_argument("--force", action="store_true", help="recompute even when the events have not changed")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_job("demand", argv, parser(), body)


if __name__ == "__main__":
    sys.exit(main())
