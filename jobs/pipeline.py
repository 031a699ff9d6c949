"""pipeline: every step of ``shopmine.registry.JOBS`` marked in_pipeline, in its order, on the embedded default
(generate, then ingest of its output, ... monitor, report), then a summary of the lake. A monitor breach (exit 4)
still lets the report be written, then fails the pipeline with exit 4."""

from __future__ import annotations

import sys

from shopmine.jobrun import ChecksFailed, RunContext, ShopmineError, base_parser, run_job
from shopmine.registry import pipeline_steps
from shopmine.surfaces.summary import lake_summary


def steps() -> list[tuple[str, object]]:
    """(name, job module) of every step, in the registry's order (databricks.yml mirrors it, tested)."""
    return [(j.name, j.entry()) for j in pipeline_steps()]


def body(ctx: RunContext, args) -> None:
    from jobs import generate

    shared = [f"--overlay={args.overlay}"] + [f"--conf={c}" for c in args.conf]
    out = generate.output_dir(ctx, None)
    extra = {"ingest": ["--format", "canonical", "--input", f"{out}/csv", f"{out}/json"]}
    breached = False
    for name, module in steps():
        code = module.main(shared + extra.get(name, []))
        if code == 4 and name == "monitor":  # results written; the report shows them
            breached = True
        elif code != 0:
            raise ShopmineError(f"step {name} failed (exit {code}); see the message above")
    sys.stdout.write("\n" + lake_summary(ctx.lake))
    sys.stdout.flush()
    if breached:
        raise ChecksFailed("monitor found threshold breaches (see its message above and the report's quality panel)")


def parser():
    return base_parser("pipeline")


def main(argv: list[str] | None = None) -> int:
    return run_job("pipeline", argv, parser(), body)


if __name__ == "__main__":
    sys.exit(main())
