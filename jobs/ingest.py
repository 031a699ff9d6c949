"""ingest: raw files of one format -> bronze.events_raw (each file once; lines verbatim with file and line number)."""

from __future__ import annotations

import sys

from shopmine.etl.ingest import ingest
from shopmine.conf import ConfError
from shopmine.io.sources import FORMATS, get_format
from shopmine.jobrun import RunContext, base_parser, run_job



def body(ctx: RunContext, args) -> None:
    try:
        fmt = get_format(args.format, ctx.settings)
    except ValueError as exc:
        raise ConfError(f"--format: {exc} (declare your own under sources.<name>: docs/sources.md)") from None
    result = ingest(ctx.spark, ctx.lake, args.input, fmt, ctx.settings.ingest.max_bad_width_share)
    ctx.count(files_seen=result.files_seen, files_new=result.files_new, rows_read=result.rows, rows_written=result.rows)
    if result.batch is None:
        ctx.noop = True
        ctx.message = f"all {result.files_seen} files were ingested before; nothing to do"
        return
    ctx.message = f"batch {result.batch}: {result.files_new} files, {result.rows:,} lines"


def parser():
    p = base_parser("ingest")
    p.add_argument("--input", nargs="+", required=True, metavar="PATH", help="files, folders or globs")
    p.add_argument("--format", required=True, metavar="NAME",
                   help=f"the source's layout: a built-in ({', '.join(FORMATS)}) or one declared under sources.<name>")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_job("ingest", argv, parser(), body)


if __name__ == "__main__":
    sys.exit(main())
