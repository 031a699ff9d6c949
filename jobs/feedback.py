"""feedback: served gold.recs_topn x behaviour after each list's data cut -> ops.rec_feedback (view / cart / purchase
rates of recommended items per model and rank). Run it before recommend replaces the lists."""

from __future__ import annotations

import logging
import sys

from shopmine.apps.feedback import run_feedback
from shopmine.io.tables import GOLD_RECS_TOPN, SILVER_EVENTS
from shopmine.jobrun import RunContext, base_parser, run_job

log = logging.getLogger("shopmine.apps.feedback")


def body(ctx: RunContext, args) -> None:
    if not ctx.lake.exists(GOLD_RECS_TOPN.name):
        ctx.noop, ctx.message = True, "no served recommendations yet (gold.recs_topn): run recommend first"
        log.info(ctx.message)
        return
    recs = ctx.read(GOLD_RECS_TOPN.name)
    events = ctx.read(SILVER_EVENTS.name)
    if ctx.skip_if_unchanged(args.force, "the served lists and the events"):
        return
    counts, nothing = run_feedback(ctx.lake, ctx.settings, ctx.run_id, recs, events)
    if nothing:
        ctx.noop, ctx.message = True, nothing
        log.info(nothing)
        return
    ctx.count(**counts)


def parser():
    p = base_parser("feedback")
    p.add_argument("--force", action="store_true", help="measure again even when nothing changed")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_job("feedback", argv, parser(), body)


if __name__ == "__main__":
    sys.exit(main())
