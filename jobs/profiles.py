"""profile: gold features -> gold.user_profiles, MERGEd (a profile row is rewritten only when it changed)."""

from __future__ import annotations

import logging
import sys

from shopmine.features.build import run_profile
from shopmine.io.tables import GOLD_INTERACTIONS, GOLD_ITEM_FEATURES, GOLD_USER_FEATURES
from shopmine.jobrun import RunContext, base_parser, run_job

log = logging.getLogger("shopmine.profile")


def body(ctx: RunContext, args) -> None:
    features = ctx.read(GOLD_USER_FEATURES.name)
    inter = ctx.read(GOLD_INTERACTIONS.name)
    items = ctx.read(GOLD_ITEM_FEATURES.name)
    if ctx.skip_if_unchanged(args.force, "the features"):
        return
    counts = run_profile(ctx.lake, ctx.settings, features, inter, items, ctx.run_id)
    ctx.count(**counts)
    log.info("profiles: %s new, %s changed (unchanged profiles were not rewritten)",
             f"{counts['profiles_inserted']:,}", f"{counts['profiles_updated']:,}")


def parser():
    p = base_parser("profile")
    p.add_argument("--force", action="store_true", help="recompute even when the input tables have not changed")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_job("profile", argv, parser(), body)


if __name__ == "__main__":
    sys.exit(main())
