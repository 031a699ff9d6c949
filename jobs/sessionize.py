"""sessionize: silver.events -> gold.sessions, only the dates that received new events (or --dates / --full)."""

from __future__ import annotations

import logging
import sys

from shopmine.features.build import add_scope_arguments, mark_processed, plan, run_sessionize
from shopmine.io.tables import SILVER_EVENTS
from shopmine.jobrun import RunContext, base_parser, run_job

log = logging.getLogger("shopmine.sessionize")


def body(ctx: RunContext, args) -> None:
    events = ctx.read(SILVER_EVENTS.name)
    scope = plan(ctx.lake, ctx.settings, "sessionize", "features", events, args.full, args.dates)
    if scope.empty:
        mark_processed(ctx.lake, ctx.settings, "sessionize", "features", scope, ctx.run_id)
        ctx.noop = True
        ctx.message = "no new events since the last run (use --dates or --full to recompute)"
        return
    log.info("recomputing %s (%s)", "every date" if scope.full else ", ".join(map(str, scope.dates)), scope.reason)
    ctx.count(**run_sessionize(ctx.lake, ctx.settings, events, scope, ctx.run_id))


def parser():
    p = base_parser("sessionize")
    add_scope_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_job("sessionize", argv, parser(), body)


if __name__ == "__main__":
    sys.exit(main())
