"""risk: silver events + user features -> gold.risk_flags (bots, scrapers, click farming, abnormal purchases,
feature anomalies; a score and reasons per user and flag), evaluated against the generator's injected bots."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from pyspark.sql import functions as F

from shopmine.io.tables import (
    GOLD_RISK_FLAGS,
    GOLD_USER_FEATURES,
    OPS_GENERATOR_TRUTH,
    OPS_MODEL_METRICS,
    SILVER_EVENTS,
)
from shopmine.jobrun import RunContext, base_parser, run_job
from shopmine.privacy import Privacy
from shopmine.risk import evaluate, risk_flags, top_reasons

DESCRIPTION = ("silver events + user features -> gold.risk_flags: bot, scraper, click_farming, abnormal_purchase, "
               "anomaly (score + reasons); precision / recall against the generator's bots")
log = logging.getLogger("shopmine.risk")


def body(ctx: RunContext, args) -> None:
    events = ctx.read(SILVER_EVENTS.name)
    features = ctx.read(GOLD_USER_FEATURES.name)
    truth = ctx.read(OPS_GENERATOR_TRUTH.name) if ctx.lake.exists(OPS_GENERATOR_TRUTH.name) else None
    if truth is not None:  # the generator's raw ids, in the pseudonyms silver uses when a key is set
        truth = truth.withColumn("user_id", Privacy.from_settings(ctx.settings).pseudonymise(F.col("user_id")))
    if ctx.skip_if_unchanged(args.force, "the events and features"):
        return
    as_of = features.agg(F.max("as_of")).first()[0]
    flags = risk_flags(events, features, ctx.settings.risk)
    out = flags.select("*", F.lit(as_of).alias("as_of"), F.lit(ctx.run_id).alias("run_id"),
                       F.current_timestamp().alias("generated_at"))
    ctx.lake.overwrite(out, GOLD_RISK_FLAGS.name)
    ctx.wrote(GOLD_RISK_FLAGS.name)
    written = ctx.lake.read(GOLD_RISK_FLAGS.name)
    per_flag = {r[0]: r[1] for r in written.groupBy("flag").count().collect()}  # at most five rows
    users = features.count()
    ctx.count(rows_read=users, rows_written=sum(per_flag.values()),
              **{f"flag_{k}": v for k, v in per_flag.items()})
    log.info("flags raised: %s", ", ".join(f"{k} {v:,}" for k, v in sorted(per_flag.items())) or "none")
    for r in top_reasons(written).collect():  # three per flag
        log.info("  %-17s user %-12s score %8.2f  %s", r["flag"], r["user_id"], r["score"], "; ".join(r["reasons"][:2]))
    if truth is not None:
        bots = truth.where(F.col("kind") == "bot").select("user_id")
        if bots.limit(1).count():
            metrics = evaluate(written, features, bots)
            now = datetime.now(timezone.utc)
            rows = [(ctx.run_id, "risk", f"risk.{flag}", "generator_truth", None, name, float(value),
                     json.dumps({"users": users}), now)
                    for flag, values in metrics.items() for name, value in values.items()]
            ctx.lake.replace_where(ctx.spark.createDataFrame(rows, OPS_MODEL_METRICS.schema), OPS_MODEL_METRICS.name,
                                   f"run_id = '{ctx.run_id}'")
            ctx.wrote(OPS_MODEL_METRICS.name)
            for flag, m in metrics.items():
                log.info("against the injected bots: %-8s precision %.3f recall %.3f (%d flagged, %d bots)", flag,
                         m["precision"], m["recall"], m["flagged"], m["true_bots"])


def parser():
    p = base_parser("risk", DESCRIPTION)
    p.add_argument("--force", action="store_true", help="recompute even when the input tables have not changed")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_job("risk", argv, parser(), body)


if __name__ == "__main__":
    sys.exit(main())
