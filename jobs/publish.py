"""publish: silver events + gold profiles -> differentially private bi.* aggregates (Laplace mechanism).

Every release spends privacy budget, so an unchanged input is not republished (the rerun is a no-op), and the noise is
fresh each time the input changes (conf privacy.dp.seed stays null outside tests).
"""

from __future__ import annotations

import sys

from shopmine.io.tables import GOLD_ITEM_FEATURES, GOLD_USER_PROFILES, SILVER_EVENTS
from shopmine.jobrun import RunContext, base_parser, run_job
from shopmine.governance.privacy import run_publish


def body(ctx: RunContext, args) -> None:
    events = ctx.read(SILVER_EVENTS.name)
    items = ctx.read(GOLD_ITEM_FEATURES.name)
    profiles = ctx.read(GOLD_USER_PROFILES.name)
    if ctx.skip_if_unchanged(args.force, "the events, items and profiles"):
        return
    ctx.count(**run_publish(ctx.lake, ctx.settings, ctx.run_id, events, items, profiles))


def parser():
    p = base_parser("publish")
    p.add_argument("--force", action="store_true",
                   help="publish again with fresh noise even when the inputs have not changed (spends budget again)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_job("publish", argv, parser(), body)


if __name__ == "__main__":
    sys.exit(main())
