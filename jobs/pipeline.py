"""pipeline: every job in order on the embedded default (generate -> ingest -> clean -> sessionize -> featurize ->
profile -> feedback -> recommend -> train-predict -> train-cnn -> risk -> campaigns -> demand -> publish -> monitor -> report), then a
summary of the lake. A monitor breach (exit 4) still lets the report be written, then fails the pipeline with exit 4."""

from __future__ import annotations

import sys

from jobs import (
    campaigns,
    clean,
    demand,
    feedback,
    featurize,
    generate,
    ingest,
    monitor,
    profiles,
    publish,
    recommend,
    report,
    risk,
    sessionize,
    train_cnn,
    train_predict,
)
from shopmine.jobrun import ChecksFailed, RunContext, ShopmineError, base_parser, run_job
from shopmine.summary import lake_summary

DESCRIPTION = "every job in order on generated data (generate ... train-cnn, risk, campaigns, demand, publish, monitor, report); then a summary"


# every step in order; feedback measures the lists now served before recommend replaces them (databricks.yml mirrors
# this order, tested)
STEPS = [("generate", generate), ("ingest", ingest), ("clean", clean), ("sessionize", sessionize),
         ("featurize", featurize), ("profile", profiles), ("feedback", feedback), ("recommend", recommend),
         ("train-predict", train_predict), ("train-cnn", train_cnn), ("risk", risk), ("campaigns", campaigns),
         ("demand", demand), ("publish", publish), ("monitor", monitor), ("report", report)]


def body(ctx: RunContext, args) -> None:
    shared = [f"--overlay={args.overlay}"] + [f"--conf={c}" for c in args.conf]
    out = generate.output_dir(ctx, None)
    extra = {"ingest": ["--format", "canonical", "--input", f"{out}/csv", f"{out}/json"]}
    steps = [(name, module.main, extra.get(name, [])) for name, module in STEPS]
    breached = False
    for name, main, extra in steps:
        code = main(shared + extra)
        if code == 4 and name == "monitor":  # results written; the report shows them
            breached = True
        elif code != 0:
            raise ShopmineError(f"step {name} failed (exit {code}); see the message above")
    sys.stdout.write("\n" + lake_summary(ctx.lake))
    sys.stdout.flush()
    if breached:
        raise ChecksFailed("monitor found threshold breaches (see its message above and the report's quality panel)")


def parser():
    return base_parser("pipeline", DESCRIPTION)


def main(argv: list[str] | None = None) -> int:
    return run_job("pipeline", argv, parser(), body)


if __name__ == "__main__":
    sys.exit(main())
