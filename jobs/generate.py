"""generate: write a synthetic clickstream export (CSV + JSON lines) and its ground truth (ops.generator_truth)."""

from __future__ import annotations

import sys

from shopmine.etl.generate import generate, write_raw
from shopmine.io import fs
from shopmine.io.tables import OPS_GENERATOR_TRUTH
from shopmine.jobrun import RunContext, base_parser, run_job



def output_dir(ctx: RunContext, out: str | None) -> str:
    return out or f"{ctx.lake.root}/raw/generated"


def body(ctx: RunContext, args) -> None:
    conf = ctx.settings.generate
    out = output_dir(ctx, args.out)
    marker = f"{out}/_GENERATED"
    stamp = conf.model_dump_json()
    if fs.read_text(ctx.spark, marker) == stamp and ctx.lake.exists(OPS_GENERATOR_TRUTH.name):
        ctx.noop = True
        ctx.message = f"{out} already holds this generate config; nothing to do"
        return
    gen = generate(ctx.spark, conf)
    write_raw(gen, out, conf.files)
    ctx.lake.overwrite(gen.truth, OPS_GENERATOR_TRUTH.name)
    fs.write_text(ctx.spark, marker, stamp)
    written = ctx.lake.last_write_metrics(OPS_GENERATOR_TRUTH.name).get("numOutputRows", 0)
    ctx.count(truth_rows=written)
    ctx.message = f"wrote {out}/csv and {out}/json"


def parser():
    p = base_parser("generate")
    p.add_argument("--out", help="output folder (default <lake.root>/raw/generated)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_job("generate", argv, parser(), body)


if __name__ == "__main__":
    sys.exit(main())
