"""publish: silver events + gold profiles -> differentially private bi.* aggregates (Laplace mechanism).

Every release spends privacy budget, so an unchanged input is not republished (the rerun is a no-op), and the noise is
fresh each time the input changes (conf privacy.dp.seed stays null outside tests).
"""

from __future__ import annotations

import logging
import sys

from pyspark.sql import functions as F

from shopmine.features.profiles import SEGMENTS
from shopmine.io.tables import (
    BI_DAILY_CATEGORY_ACTIVITY,
    BI_SEGMENT_SUMMARY,
    GOLD_ITEM_FEATURES,
    GOLD_USER_PROFILES,
    SILVER_EVENTS,
)
from shopmine.jobrun import RunContext, base_parser, run_job
from shopmine.logs import step
from shopmine.privacy import dp_daily_category_activity, dp_segment_summary

DESCRIPTION = ("silver events + gold profiles -> differentially private bi.daily_category_activity and "
               "bi.segment_summary (Laplace noise, epsilon per table, contributions bounded per user)")
log = logging.getLogger("shopmine.publish")


def body(ctx: RunContext, args) -> None:
    dp = ctx.settings.privacy.dp
    events = ctx.read(SILVER_EVENTS.name)
    items = ctx.read(GOLD_ITEM_FEATURES.name)
    profiles = ctx.read(GOLD_USER_PROFILES.name)
    if ctx.skip_if_unchanged(args.force, "the events, items and profiles"):
        return
    stamp = [F.lit(ctx.run_id).alias("run_id"), F.current_timestamp().alias("generated_at")]
    written = 0
    conf = dp.daily_category_activity
    with step(log, f"{BI_DAILY_CATEGORY_ACTIVITY.name}: epsilon {conf.epsilon}, <= {conf.max_cells} cells per user, "
                   f"revenue clamped at {conf.max_revenue:g}") as info:
        activity = dp_daily_category_activity(events, items.where(F.col("category_id").isNotNull()), conf,
                                              dp.confidence, dp.seed)
        ctx.lake.overwrite(activity.select("*", *stamp), BI_DAILY_CATEGORY_ACTIVITY.name)
        info["rows"] = ctx.lake.last_write_metrics(BI_DAILY_CATEGORY_ACTIVITY.name).get("numOutputRows", 0)
        written += info["rows"]
    conf = dp.segment_summary
    with step(log, f"{BI_SEGMENT_SUMMARY.name}: epsilon {conf.epsilon}, spend clamped at {conf.max_spend:g}") as info:
        summary = dp_segment_summary(profiles, list(SEGMENTS), conf, dp.confidence, dp.seed)
        ctx.lake.overwrite(summary.select("*", *stamp), BI_SEGMENT_SUMMARY.name)
        info["rows"] = ctx.lake.last_write_metrics(BI_SEGMENT_SUMMARY.name).get("numOutputRows", 0)
        written += info["rows"]
    for name in (BI_DAILY_CATEGORY_ACTIVITY.name, BI_SEGMENT_SUMMARY.name):
        ctx.wrote(name)
    ctx.count(rows_written=written)


def parser():
    p = base_parser("publish", DESCRIPTION)
    p.add_argument("--force", action="store_true",
                   help="publish again with fresh noise even when the inputs have not changed (spends budget again)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_job("publish", argv, parser(), body)


if __name__ == "__main__":
    sys.exit(main())
