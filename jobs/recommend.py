"""recommend: baselines + ALS + item-CF on gold.interactions, evaluated side by side; the chosen model's top-N to
gold.recs_topn, item neighbours to gold.item_neighbours, metrics to ops.model_metrics."""

from __future__ import annotations

import logging
import sys

from shopmine.apps.feedback import data_cuts
from shopmine.io.tables import (
    GOLD_INTERACTIONS,
    GOLD_INTERACTIONS_DAILY,
    GOLD_ITEM_FEATURES,
    GOLD_RECS_TOPN,
    SILVER_EVENTS,
)
from shopmine.jobrun import RunContext, base_parser, run_job
from shopmine.recsys.base import Served
from shopmine.recsys.run import metrics_table, run_recommend

log = logging.getLogger("shopmine.recommend")


def body(ctx: RunContext, args) -> None:
    inter = ctx.read(GOLD_INTERACTIONS.name)
    daily = ctx.read(GOLD_INTERACTIONS_DAILY.name)
    items = ctx.read(GOLD_ITEM_FEATURES.name)
    if ctx.skip_if_unchanged(args.force, "the interactions"):
        return
    served = served_lists(ctx)
    checkpoints = f"{ctx.lake.root}/_checkpoints/recommend-{ctx.run_id}"
    ctx.spark.sparkContext.setCheckpointDir(checkpoints)  # ALS truncates its lineage every checkpoint_interval
    try:
        report = run_recommend(ctx.lake, ctx.settings, ctx.run_id, inter, daily, items, served)
    finally:
        ctx.lake.remove_folder(checkpoints)
    ctx.count(rows_written=report.rows_written, users_evaluated=report.users_evaluated)
    log.info("split %s, %s users evaluated; served model: %s (ALS %s)\n%s", report.split,
             f"{report.users_evaluated:,}", report.served, report.als_params, metrics_table(report))


def served_lists(ctx: RunContext) -> Served | None:
    """The lists served so far, when ``recommend.served_negatives`` is on. Read without recording them as inputs:
    they are this job's own output, and a rerun on unchanged interactions must stay a no-op."""
    if not ctx.settings.recommend.served_negatives.enabled:
        return None
    if not ctx.lake.exists(GOLD_RECS_TOPN.name):
        log.info("served_negatives: no lists served yet, ALS trains on interactions only")
        return None
    recs = ctx.lake.read(GOLD_RECS_TOPN.name)
    cuts = data_cuts(ctx.lake, recs)
    if not cuts:
        return None
    log.info("served_negatives: lists of %d run(s), data cuts %s", len(cuts), sorted({str(c) for _, c in cuts}))
    return Served(recs.select("user_id", "item_id", "run_id"),
                  ctx.spark.createDataFrame(cuts, "run_id string, cut date"),
                  ctx.lake.read(SILVER_EVENTS.name).select("user_id", "item_id", "event_type", "event_date", "is_bot"))


def parser():
    p = base_parser("recommend")
    p.add_argument("--force", action="store_true", help="retrain even when the interactions have not changed")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_job("recommend", argv, parser(), body)


if __name__ == "__main__":
    sys.exit(main())
