"""pipeline: every job in order on the embedded default (generate -> ingest -> clean -> sessionize -> featurize ->
profile -> recommend -> train-predict -> train-cnn -> report), then a summary of the lake."""

from __future__ import annotations

import sys

from jobs import (
    clean,
    featurize,
    generate,
    ingest,
    profiles,
    recommend,
    report,
    sessionize,
    train_cnn,
    train_predict,
)
from shopmine.jobrun import RunContext, ShopmineError, base_parser, run_job
from shopmine.summary import lake_summary

DESCRIPTION = "every job in order on generated data (generate ... train-predict, train-cnn, report); then a summary"


def body(ctx: RunContext, args) -> None:
    shared = [f"--overlay={args.overlay}"] + [f"--conf={c}" for c in args.conf]
    out = generate.output_dir(ctx, None)
    steps = [
        ("generate", generate.main, []),
        ("ingest", ingest.main, ["--format", "canonical", "--input", f"{out}/csv", f"{out}/json"]),
        ("clean", clean.main, []),
        ("sessionize", sessionize.main, []),
        ("featurize", featurize.main, []),
        ("profile", profiles.main, []),
        ("recommend", recommend.main, []),
        ("train-predict", train_predict.main, []),
        ("train-cnn", train_cnn.main, []),
        ("report", report.main, []),
    ]
    for name, main, extra in steps:
        code = main(shared + extra)
        if code != 0:
            raise ShopmineError(f"step {name} failed (exit {code}); see the message above")
    sys.stdout.write("\n" + lake_summary(ctx.lake))
    sys.stdout.flush()


def parser():
    return base_parser("pipeline", DESCRIPTION)


def main(argv: list[str] | None = None) -> int:
    return run_job("pipeline", argv, parser(), body)


if __name__ == "__main__":
    sys.exit(main())
