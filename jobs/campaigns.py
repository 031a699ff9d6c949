"""campaigns: purchase propensity x profiles (segment, spending power, lifecycle) -> gold.campaign_targets, one
list per campaign of conf with expected conversion and a fixed holdout group."""

from __future__ import annotations

import sys

from pyspark.sql import functions as F

from shopmine.apps.campaigns import run_campaigns
from shopmine.io.tables import GOLD_PROPENSITY_SCORES, GOLD_RISK_FLAGS, GOLD_USER_FEATURES, GOLD_USER_PROFILES
from shopmine.jobrun import RunContext, base_parser, run_job


def body(ctx: RunContext, args) -> None:
    conf = ctx.settings.campaigns
    profiles = ctx.read(GOLD_USER_PROFILES.name)
    features = ctx.read(GOLD_USER_FEATURES.name)
    scores = ctx.read(GOLD_PROPENSITY_SCORES.name).where((F.col("task") == "purchase") & (F.col("model") == conf.model))
    flags = ctx.read(GOLD_RISK_FLAGS.name) if ctx.lake.exists(GOLD_RISK_FLAGS.name) else None
    if ctx.skip_if_unchanged(args.force, "the profiles, scores and flags"):
        return
    ctx.count(**run_campaigns(ctx.lake, ctx.settings, ctx.run_id, profiles, features, scores, flags))


def parser():
    p = base_parser("campaigns")
    p.add_argument("--force", action="store_true", help="recompute even when the input tables have not changed")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_job("campaigns", argv, parser(), body)


if __name__ == "__main__":
    sys.exit(main())
