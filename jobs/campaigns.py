"""campaigns: purchase propensity x profiles (segment, spending power, lifecycle) -> gold.campaign_targets, one
list per campaign of conf with expected conversion and a fixed holdout group."""

from __future__ import annotations

import logging
import sys

from pyspark.sql import functions as F

from shopmine.campaigns import audience, calibration_map, targets
from shopmine.io.tables import (
    GOLD_CAMPAIGN_TARGETS,
    GOLD_PROPENSITY_SCORES,
    GOLD_RISK_FLAGS,
    GOLD_USER_FEATURES,
    GOLD_USER_PROFILES,
    OPS_MODEL_METRICS,
)
from shopmine.jobrun import RunContext, ShopmineError, base_parser, run_job

DESCRIPTION = ("purchase propensity x user profiles -> gold.campaign_targets (per campaign of conf: targets, "
               "expected conversion, holdout group)")
log = logging.getLogger("shopmine.campaigns")


def body(ctx: RunContext, args) -> None:
    conf = ctx.settings.campaigns
    profiles = ctx.read(GOLD_USER_PROFILES.name)
    features = ctx.read(GOLD_USER_FEATURES.name)
    scores = ctx.read(GOLD_PROPENSITY_SCORES.name).where((F.col("task") == "purchase") & (F.col("model") == conf.model))
    flags = ctx.read(GOLD_RISK_FLAGS.name) if ctx.lake.exists(GOLD_RISK_FLAGS.name) else None
    if ctx.skip_if_unchanged(args.force, "the profiles, scores and flags"):
        return
    if scores.limit(1).count() == 0:
        raise ShopmineError(f"no purchase scores of model {conf.model!r} in {GOLD_PROPENSITY_SCORES.name}: run "
                            f"train-predict with 'purchase' in predict.tasks and {conf.model!r} in predict.models")
    # the calibration of the very run that wrote these scores (ops.model_metrics is not an input: every training
    # job appends to it, and that must not make this job rerun)
    (score_run,) = scores.select("run_id").first()
    last = (ctx.lake.read(OPS_MODEL_METRICS.name)
            .where((F.col("run_id") == score_run) & (F.col("model") == f"purchase.{conf.model}"))
            .select("details").first())
    calibration = calibration_map(last[0] if last else None)
    if not calibration:
        log.warning("no calibration table for purchase.%s: expected conversion = the raw score", conf.model)
    as_of = scores.agg(F.max("as_of")).first()[0]
    out = targets(audience(profiles, features, scores, flags, conf), conf, calibration)
    out = out.select("*", F.lit(conf.model).alias("model"), F.lit(as_of).alias("as_of"),
                     F.lit(ctx.run_id).alias("run_id"), F.current_timestamp().alias("generated_at"))
    ctx.lake.overwrite(out, GOLD_CAMPAIGN_TARGETS.name)
    ctx.wrote(GOLD_CAMPAIGN_TARGETS.name)
    summary = (ctx.lake.read(GOLD_CAMPAIGN_TARGETS.name).groupBy("campaign")
               .agg(F.count("*").alias("targets"), F.sum(F.col("holdout").cast("int")).alias("holdout"),
                    F.avg("propensity").alias("propensity"),
                    F.sum(F.when(~F.col("holdout"), F.col("expected_conversion"))).alias("expected_buyers"))
               .orderBy("campaign").collect())  # one row per campaign of conf
    for r in summary:
        log.info("  %-28s %7s targets (%s holdout), mean propensity %.3f, expected buyers among contacted %.1f",
                 r["campaign"], f"{r['targets']:,}", f"{r['holdout']:,}", r["propensity"] or 0.0,
                 r["expected_buyers"] or 0.0)
    missing = sorted(set(conf.definitions) - {r["campaign"] for r in summary})
    if missing:
        log.info("  no targets for %s", ", ".join(missing))
    ctx.count(rows_written=sum(r["targets"] for r in summary),
              **{f"targets_{r['campaign']}": r["targets"] for r in summary})


def parser():
    p = base_parser("campaigns", DESCRIPTION)
    p.add_argument("--force", action="store_true", help="recompute even when the input tables have not changed")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_job("campaigns", argv, parser(), body)


if __name__ == "__main__":
    sys.exit(main())
