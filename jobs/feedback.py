"""feedback: served gold.recs_topn x behaviour after each list's data cut -> ops.rec_feedback (view / cart / purchase
rates of recommended items per model and rank). Run it before recommend replaces the lists."""

from __future__ import annotations

import logging
import sys

from pyspark.sql import functions as F

from shopmine.feedback import data_cuts, outcomes
from shopmine.io.tables import GOLD_RECS_TOPN, OPS_REC_FEEDBACK, SILVER_EVENTS
from shopmine.jobrun import RunContext, base_parser, run_job

DESCRIPTION = ("served recommendations x behaviour after their data cut -> ops.rec_feedback (view / cart / purchase "
               "rates per model and rank)")
log = logging.getLogger("shopmine.feedback")


def body(ctx: RunContext, args) -> None:
    if not ctx.lake.exists(GOLD_RECS_TOPN.name):
        ctx.noop, ctx.message = True, "no served recommendations yet (gold.recs_topn): run recommend first"
        log.info(ctx.message)
        return
    recs = ctx.read(GOLD_RECS_TOPN.name)
    events = ctx.read(SILVER_EVENTS.name)
    if ctx.skip_if_unchanged(args.force, "the served lists and the events"):
        return
    cuts = data_cuts(ctx.lake, recs)
    last = events.agg(F.max("event_date")).first()[0]
    measurable = [(r, c) for r, c in cuts if c is not None and last is not None and last > c]
    if not measurable:
        ctx.noop = True
        ctx.message = (f"no behaviour after the lists' data cut yet (cuts {sorted({str(c) for _, c in cuts})}, "
                       f"events up to {last}): feedback needs events newer than the lists")
        log.info(ctx.message)
        return
    conf = ctx.settings.feedback
    cut_df = ctx.spark.createDataFrame(measurable, "run_id string, cut date")
    out = outcomes(recs, events, cut_df, conf.window_days).select(
        F.lit(ctx.run_id).alias("run_id"), "*", F.current_timestamp().alias("created_at"))
    ctx.lake.append(out, OPS_REC_FEEDBACK.name)
    ctx.wrote(OPS_REC_FEEDBACK.name)
    summary = (ctx.lake.read(OPS_REC_FEEDBACK.name).where(F.col("run_id") == ctx.run_id).groupBy("model", "cut")
               .agg(*[F.sum(c).alias(c) for c in ("served", "served_to_returning", "viewed", "carted", "purchased")],
                    F.max("rank").alias("ranks"))
               .collect())  # one row per served model
    for r in summary:
        back = r["served_to_returning"] or 0
        log.info("  %-14s cut %s: %s served (%s to returning users): viewed %.2f%%, carted %.2f%%, bought %.2f%%",
                 r["model"], r["cut"], f"{r['served']:,}", f"{back:,}",
                 *[100 * (r[c] or 0) / back if back else 0.0 for c in ("viewed", "carted", "purchased")])
    ctx.count(rows_written=sum(r["ranks"] for r in summary), served=sum(r["served"] for r in summary),
              viewed=sum(r["viewed"] for r in summary), purchased=sum(r["purchased"] for r in summary))


def parser():
    p = base_parser("feedback", DESCRIPTION)
    p.add_argument("--force", action="store_true", help="measure again even when nothing changed")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_job("feedback", argv, parser(), body)


if __name__ == "__main__":
    sys.exit(main())
