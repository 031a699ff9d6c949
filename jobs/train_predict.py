"""train-predict: silver events + gold daily tables -> MLlib logistic regression and naive Bayes behaviour predictors on
a time split, evaluated beside a majority baseline; scores for the next days to Delta."""

from __future__ import annotations

import logging
import sys

from shopmine.io.tables import GOLD_INTERACTIONS_DAILY, GOLD_SESSIONS, GOLD_USER_DAILY, SILVER_EVENTS
from shopmine.jobrun import RunContext, base_parser, run_job
from shopmine.predict.run import metrics_table, run_train_predict

log = logging.getLogger("shopmine.train_predict")


def body(ctx: RunContext, args) -> None:
    events = ctx.read(SILVER_EVENTS.name)
    user_day = ctx.read(GOLD_USER_DAILY.name)
    sessions = ctx.read(GOLD_SESSIONS.name)
    daily = ctx.read(GOLD_INTERACTIONS_DAILY.name)
    if ctx.skip_if_unchanged(args.force, "the events and features"):
        return
    report = run_train_predict(ctx.lake, ctx.settings, ctx.run_id, events, user_day, sessions, daily)
    ctx.count(rows_written=report.rows_written, **{f"{t}_train_rows": n for t, n in report.rows.items()})
    log.info("%s\n%s", report.windows.describe() if report.windows else "", metrics_table(report))


def parser():
    p = base_parser("train-predict")
    p.add_argument("--force", action="store_true", help="retrain even when the inputs have not changed")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_job("train-predict", argv, parser(), body)


if __name__ == "__main__":
    sys.exit(main())
