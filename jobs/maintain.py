"""maintain: OPTIMIZE (compaction, Z-order) and VACUUM every table, file statistics to ops.maintenance."""

from __future__ import annotations

import logging
import sys

from shopmine.jobrun import RunContext, base_parser, run_job
from shopmine.governance.maintenance import run_maintain

log = logging.getLogger("shopmine.maintain")


def body(ctx: RunContext, args) -> None:
    rows = run_maintain(ctx.lake, ctx.settings, ctx.run_id)
    files_before, files_after = sum(r[3] for r in rows), sum(r[5] for r in rows)
    ctx.count(tables=len(rows), files_before=files_before, files_after=files_after,
              files_vacuumed=sum(r[9] for r in rows))
    ctx.message = (f"{len(rows)} tables: {files_before:,} -> {files_after:,} files, "
                   f"{sum(r[9] for r in rows):,} unreferenced files vacuumed")
    log.info(ctx.message)


def parser():
    return base_parser("maintain")


def main(argv: list[str] | None = None) -> int:
    return run_job("maintain", argv, parser(), body)


if __name__ == "__main__":
    sys.exit(main())
