"""clean: bronze.events_raw -> silver.events + silver.quarantine, reconciled per batch in ops.clean_batches."""

from __future__ import annotations

import logging
import sys

from shopmine.etl.clean import run_clean
from shopmine.jobrun import RunContext, base_parser, run_job

log = logging.getLogger("shopmine.clean")


def body(ctx: RunContext, args) -> None:
    ctx.read("bronze.events_raw")
    report = run_clean(ctx.lake, ctx.settings, ctx.run_id, reprocess=args.all)
    if not report.batches:
        ctx.noop = True
        ctx.message = "every bronze batch is cleaned already (use --all to redo them)"
        return
    t = report.totals
    ctx.count(rows_read=t["rows_in"], rows_written=t["accepted"], rows_rejected=t["quarantine"],
              duplicates_exact=t["duplicate_exact"], duplicates_near=t["duplicate_near"],
              **{f"reason_{k}": v for k, v in report.reasons.items()})
    log.info("batches %s: in %s = accepted %s + quarantined %s + exact duplicates %s + near duplicates %s",
             ", ".join(report.batches), *(f"{t[k]:,}" for k in ("rows_in", "accepted", "quarantine",
                                                                  "duplicate_exact", "duplicate_near")))
    for reason, n in sorted(report.reasons.items(), key=lambda kv: -kv[1]):
        log.info("  quarantined %-24s %s", reason, f"{n:,}")


def parser():
    p = base_parser("clean")
    p.add_argument("--all", action="store_true", help="re-clean every bronze batch, not only new ones")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_job("clean", argv, parser(), body)


if __name__ == "__main__":
    sys.exit(main())
