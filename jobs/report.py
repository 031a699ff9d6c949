"""report: every table that exists -> one self-contained HTML report (plotly) under <lake.root>/reports/."""

from __future__ import annotations

import logging
import sys

from shopmine.io import fs
from shopmine.io.tables import OPS_RUNS, TABLES
from shopmine.jobrun import RunContext, base_parser, run_job
from shopmine.surfaces.report import build, render

log = logging.getLogger("shopmine.surfaces.report")


def body(ctx: RunContext, args) -> None:
    for name in TABLES:  # what the report shows; ops.runs (the lineage panel) changes with every run, no-ops too
        version = ctx.lake.version(name) if name != OPS_RUNS.name else None  # None: the table does not exist
        if version is not None:
            ctx.inputs[name] = version
    if ctx.skip_if_unchanged(args.force, "the tables"):
        return
    report = build(ctx.lake)
    page = render(report, ctx.lake.root, ctx.run_id)
    folder = args.out or f"{ctx.lake.root}/reports"
    path = f"{folder}/shopmine-report-{ctx.run_id}.html"
    fs.write_text(ctx.spark, path, page)
    fs.write_text(ctx.spark, f"{folder}/report.html", page)  # the latest, at a stable address
    ctx.count(charts=report.charts, panels_without_data=len(report.panels) - report.charts, bytes=len(page))
    for p in report.panels:
        if p.figure is None:
            log.info("  panel %-11s no chart: %s", p.key, p.missing)
    ctx.message = f"wrote {path} ({report.charts} charts, {len(page) / 1e6:.1f} MB); latest at {folder}/report.html"
    log.info(ctx.message)


def parser():
    p = base_parser("report")
    p.add_argument("--out", help="output folder (default <lake.root>/reports)")
    p.add_argument("--force", action="store_true", help="write a new report even when no table has changed")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_job("report", argv, parser(), body)


if __name__ == "__main__":
    sys.exit(main())
