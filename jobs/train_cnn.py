"""train-cnn: per-user behaviour images -> a Keras CNN trained with Horovod on the Spark cluster (GPU per worker when
present, CPU + Gloo otherwise), evaluated on the time split, distributed scoring to Delta."""

from __future__ import annotations

import logging
import sys

from shopmine.io.tables import GOLD_INTERACTIONS_DAILY, GOLD_SESSIONS, GOLD_USER_DAILY, SILVER_EVENTS
from shopmine.jobrun import RunContext, base_parser, run_job
from shopmine.predict.run import cnn_table, run_train_cnn

log = logging.getLogger("shopmine.train_cnn")


def body(ctx: RunContext, args) -> None:
    events = ctx.read(SILVER_EVENTS.name)
    user_day = ctx.read(GOLD_USER_DAILY.name)
    sessions = ctx.read(GOLD_SESSIONS.name)
    daily = ctx.read(GOLD_INTERACTIONS_DAILY.name)
    if ctx.skip_if_unchanged(args.force, "the events and features"):
        return
    report = run_train_cnn(ctx.lake, ctx.settings, ctx.run_id, events, user_day, sessions, daily)
    ctx.count(rows_written=report.rows_written, **{f"images_{k}": v for k, v in report.rows.items()})
    log.info("%s\nserved: %s\n%s", report.windows.describe() if report.windows else "", report.served,
             cnn_table(report))


def parser():
    p = base_parser("train-cnn")
    p.add_argument("--force", action="store_true", help="retrain even when the inputs have not changed")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_job("train-cnn", argv, parser(), body)


if __name__ == "__main__":
    sys.exit(main())
