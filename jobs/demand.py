"""demand: silver purchases -> gold.purchase_patterns (weekday x hour per category) and gold.demand_forecast (daily
units per category for the next days), the forecast backtested on held-out days against a seasonal naive one."""

from __future__ import annotations

import sys

from shopmine.apps.demand import run_demand
from shopmine.io.tables import SILVER_EVENTS
from shopmine.jobrun import RunContext, base_parser, run_job


def body(ctx: RunContext, args) -> None:
    events = ctx.read(SILVER_EVENTS.name)
    if ctx.skip_if_unchanged(args.force, "the events"):
        return
    ctx.count(**run_demand(ctx.lake, ctx.settings, ctx.run_id, events))


def parser():
    p = base_parser("demand")
    p.add_argument("--force", action="store_true", help="recompute even when the events have not changed")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_job("demand", argv, parser(), body)


if __name__ == "__main__":
    sys.exit(main())
