"""featurize: silver.events -> per-day tables -> gold interactions / user / item / category features, and the
fitted feature pipeline saved with the run."""

from __future__ import annotations

import logging
import sys

from shopmine.features.build import add_scope_arguments, mark_processed, plan, run_featurize
from shopmine.io.tables import GOLD_SESSIONS, SILVER_EVENTS
from shopmine.jobrun import RunContext, base_parser, run_job

log = logging.getLogger("shopmine.featurize")


def body(ctx: RunContext, args) -> None:
    events = ctx.read(SILVER_EVENTS.name)
    ctx.read(GOLD_SESSIONS.name)  # a missing table stops the run, naming the job that writes it
    scope = plan(ctx.lake, ctx.settings, "featurize", "features", events, args.full, args.dates)
    if scope.empty:
        mark_processed(ctx.lake, ctx.settings, "featurize", "features", scope, ctx.run_id)
        ctx.noop = True
        ctx.message = "no new events since the last run (use --dates or --full to recompute)"
        return
    log.info("recomputing %s (%s)", "every date" if scope.full else ", ".join(map(str, scope.dates)), scope.reason)
    report = run_featurize(ctx.lake, ctx.settings, events, scope, ctx.run_id)
    ctx.count(**report.counts)
    if report.as_of is None:
        ctx.message = "silver.events is empty: nothing to featurize"
        return
    for table in ("interactions", "user_features", "item_features", "category_features"):
        log.info("  %-18s inserted %s, updated %s, deleted %s", table,
                 *(f"{report.counts.get(f'{table}_{k}', 0):,}" for k in ("inserted", "updated", "deleted")))
    log.info("features as of %s; feature pipeline saved to %s", report.as_of, report.pipeline_path)


def parser():
    p = base_parser("featurize")
    add_scope_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_job("featurize", argv, parser(), body)


if __name__ == "__main__":
    sys.exit(main())
