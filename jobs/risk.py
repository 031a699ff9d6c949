"""risk: silver events + user features -> gold.risk_flags (bots, scrapers, click farming, abnormal purchases,
feature anomalies; a score and reasons per user and flag), evaluated against the generator's injected bots."""

from __future__ import annotations

import sys

from pyspark.sql import functions as F

from shopmine.io.tables import GOLD_USER_FEATURES, OPS_GENERATOR_TRUTH, SILVER_EVENTS
from shopmine.jobrun import RunContext, base_parser, run_job
from shopmine.governance.privacy import Privacy
from shopmine.apps.risk import run_risk


def body(ctx: RunContext, args) -> None:
    events = ctx.read(SILVER_EVENTS.name)
    features = ctx.read(GOLD_USER_FEATURES.name)
    truth = ctx.read(OPS_GENERATOR_TRUTH.name) if ctx.lake.exists(OPS_GENERATOR_TRUTH.name) else None
    if truth is not None:  # the generator's raw ids, in the pseudonyms silver uses when a key is set
        truth = truth.withColumn("user_id", Privacy.from_settings(ctx.settings).pseudonymise(F.col("user_id")))
    if ctx.skip_if_unchanged(args.force, "the events and features"):
        return
    ctx.count(**run_risk(ctx.lake, ctx.settings, ctx.run_id, events, features, truth))


def parser():
    p = base_parser("risk")
    p.add_argument("--force", action="store_true", help="recompute even when the input tables have not changed")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_job("risk", argv, parser(), body)


if __name__ == "__main__":
    sys.exit(main())
