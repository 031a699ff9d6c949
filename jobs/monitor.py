"""monitor: data-quality checks on the latest clean run and drift (PSI) of features and scores since the last
monitor run -> ops.data_quality, ops.drift. Exits 4 with the breaches listed when a threshold in conf is crossed."""

from __future__ import annotations

import logging
import sys

from pyspark.sql import functions as F

from shopmine.io.tables import OPS_CLEAN_BATCHES, OPS_DATA_QUALITY, OPS_DRIFT, OPS_RUNS, SILVER_EVENTS
from shopmine.jobrun import ChecksFailed, RunContext, base_parser, run_job
from shopmine.governance.monitoring import drift_plan, run_monitor

log = logging.getLogger("shopmine.monitor")


def previous_inputs(ctx: RunContext) -> dict[str, int]:
    """The table versions the last monitor run that wrote its results read: the reference for drift."""
    if not ctx.lake.exists(OPS_RUNS.name):
        return {}
    last = (ctx.lake.read(OPS_RUNS.name)
            .where((F.col("job") == "monitor") & (F.map_contains_key("output_versions", OPS_DATA_QUALITY.name)
                                                  | F.map_contains_key("output_versions", OPS_DRIFT.name)))
            .orderBy(F.desc("started_at")).select("input_versions").first())
    return dict(last[0]) if last else {}


def body(ctx: RunContext, args) -> None:
    plan = drift_plan(ctx.settings)  # configuration mistakes stop here, before any reading
    for name in [SILVER_EVENTS.name, OPS_CLEAN_BATCHES.name, *plan]:
        if ctx.lake.exists(name):
            ctx.read(name)
    if not ctx.inputs:
        ctx.message = "nothing to monitor yet: run clean (and the feature and model jobs) first"
        ctx.noop = True
        log.info(ctx.message)
        return
    if ctx.skip_if_unchanged(args.force, "the monitored tables"):
        return
    result = run_monitor(ctx.lake, ctx.settings, ctx.run_id, dict(ctx.inputs), previous_inputs(ctx))
    statuses = [c.status for c in result.checks] + [d.status for d in result.drift]
    ctx.count(checks=len(result.checks), drift_columns=len(result.drift), rows_written=len(statuses),
              **{f"status_{s}": statuses.count(s) for s in sorted(set(statuses))})
    for c in result.checks:
        log.info("  %-7s %-16s %-40s %s", c.status, c.check_name, c.subject[:40], c.value)
    if result.baseline:
        log.info("baseline recorded for %s: drift is measured from the next run on", ", ".join(result.baseline))
    breaches = result.breaches(ctx.settings.monitor.fail_on)
    summary = f"{len(result.checks)} checks, {len(result.drift)} drift columns, worst status {result.worst()}"
    if breaches:
        shown = "; ".join(breaches[:5]) + (f"; and {len(breaches) - 5} more" if len(breaches) > 5 else "")
        raise ChecksFailed(f"{len(breaches)} monitor threshold(s) crossed (monitor.fail_on={ctx.settings.monitor.fail_on}): "
                           f"{shown}. Results are in {OPS_DATA_QUALITY.name} / {OPS_DRIFT.name} (run {ctx.run_id}).")
    ctx.message = summary
    log.info(summary)


def parser():
    p = base_parser("monitor")
    p.add_argument("--force", action="store_true", help="check again even when no monitored table has changed")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_job("monitor", argv, parser(), body)


if __name__ == "__main__":
    sys.exit(main())
