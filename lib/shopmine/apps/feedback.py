"""The feedback loop: what users did with the recommendations they were served.

Each list in ``gold.recs_topn`` was computed from the interactions up to a data cut: the ``as_of`` of the
``gold.interactions`` version its recommend run read (found through ``ops.runs`` and Delta time travel, so nothing
has to be stamped on the lists). Behaviour after that cut, within ``window_days``, is joined back to the served
(user, item, rank): per model and rank, how many served items were viewed, carted or bought afterwards, among all
served items and among those of users who came back at all (a user who never returns could not have clicked).
"""

from __future__ import annotations

import logging
from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shopmine.conf import Settings
from shopmine.io.delta import Lake
from shopmine.io.tables import OPS_REC_FEEDBACK

log = logging.getLogger(__name__)

BEHAVIOUR = ("view", "cart", "purchase")


def data_cuts(lake, recs: DataFrame) -> list[tuple[str, date]]:
    """(recs run id, data cut) per recommend run that served lists now in ``recs`` (one per served model)."""
    from shopmine.io.tables import GOLD_INTERACTIONS, OPS_RUNS

    out = []
    runs = lake.read(OPS_RUNS.name)
    for (run_id,) in recs.select("run_id").distinct().collect():  # one row per served model
        row = runs.where(F.col("run_id") == run_id).select("input_versions").first()
        version = (row[0] or {}).get(GOLD_INTERACTIONS.name) if row else None
        if version is None:
            log.warning("recs of run %s: no ops.runs record of the interactions it read; skipped", run_id)
            continue
        try:
            cut = lake.read(GOLD_INTERACTIONS.name, version).agg(F.max("as_of")).first()[0]
        except Exception as exc:  # noqa: BLE001 - an old version whose files were vacuumed
            log.warning("recs of run %s: interactions v%s no longer readable (%s); skipped", run_id, version,
                        type(exc).__name__)
            continue
        out.append((run_id, cut))
    return out


def ignored_pairs(recs: DataFrame, events: DataFrame, cuts: DataFrame, window_days: int, until: date) -> DataFrame:
    """(user_id, item_id) that were served, whose user came back within ``window_days`` after the list's data cut
    (and no later than ``until``) and did not view, cart or buy the item: served but ignored.

    ``until`` keeps the evaluation honest: negatives for a model evaluated on days after ``until`` come only from
    behaviour up to it, so a list whose cut is at or after ``until`` yields nothing."""
    served = recs.join(F.broadcast(cuts), "run_id").select("user_id", "item_id", "cut")
    end = F.least(F.date_add("cut", window_days), F.lit(until))
    after = (events.where(~F.col("is_bot")).join(F.broadcast(cuts.select("cut").distinct()), how="cross")
             .where((F.col("event_date") > F.col("cut")) & (F.col("event_date") <= end))
             .select("cut", "user_id", "item_id", "event_type"))
    returning = after.select("cut", "user_id").distinct()
    acted = after.where(F.col("event_type").isin(*BEHAVIOUR)).select("cut", "user_id", "item_id").distinct()
    return (served.join(returning, ["cut", "user_id"]).join(acted, ["cut", "user_id", "item_id"], "left_anti")
            .select("user_id", "item_id").distinct())


def outcomes(recs: DataFrame, events: DataFrame, cuts: DataFrame, window_days: int) -> DataFrame:
    """Per (recs run, model, rank): served, served_to_returning, viewed, carted, purchased and the rates.

    ``cuts``: (run_id, cut) - the data cut of each recs run; events after the cut and up to ``window_days``
    later count."""
    served = recs.join(F.broadcast(cuts), "run_id")
    window = (F.col("event_date") > F.col("cut")) & (F.col("event_date") <= F.date_add("cut", window_days))
    after = (events.where(~F.col("is_bot")).join(F.broadcast(cuts.select("cut").distinct()), how="cross")
             .where(window).select("cut", "user_id", "item_id", "event_type"))
    returning = after.select("cut", "user_id").distinct().withColumn("returned", F.lit(True))
    acted = (after.where(F.col("event_type").isin(*BEHAVIOUR)).groupBy("cut", "user_id", "item_id")
             .agg(*[F.max(F.col("event_type") == t).alias(f"did_{t}") for t in BEHAVIOUR]))
    joined = (served.join(returning, ["cut", "user_id"], "left").join(acted, ["cut", "user_id", "item_id"], "left")
              .fillna(False, ["returned", *[f"did_{t}" for t in BEHAVIOUR]]))
    counts = joined.groupBy(F.col("run_id").alias("recs_run_id"), "model", "rank", "cut").agg(
        F.count("*").alias("served"), F.sum(F.col("returned").cast("long")).alias("served_to_returning"),
        *[F.sum(F.col(f"did_{t}").cast("long")).alias(n) for t, n in zip(BEHAVIOUR, ("viewed", "carted", "purchased"))])
    rates = {f"{n}_rate": F.when(F.col("served_to_returning") > 0, F.col(n) / F.col("served_to_returning"))
             for n in ("viewed", "carted", "purchased")}
    return counts.withColumns(rates).withColumn("window_end", F.date_add("cut", window_days))


def run_feedback(lake: Lake, settings: Settings, run_id: str, recs: DataFrame,
                 events: DataFrame) -> tuple[dict[str, int] | None, str | None]:
    """Append to ops.rec_feedback what users did after each served list's data cut. Returns the run's counts, or
    (None, why) when no list has behaviour after its cut yet (nothing is written)."""
    cuts = data_cuts(lake, recs)
    last = events.agg(F.max("event_date")).first()[0]
    measurable = [(r, c) for r, c in cuts if c is not None and last is not None and last > c]
    if not measurable:
        return None, (f"no behaviour after the lists' data cut yet (cuts {sorted({str(c) for _, c in cuts})}, "
                      f"events up to {last}): feedback needs events newer than the lists")
    conf = settings.feedback
    cut_df = lake.spark.createDataFrame(measurable, "run_id string, cut date")
    out = outcomes(recs, events, cut_df, conf.window_days).select(
        F.lit(run_id).alias("run_id"), "*", F.current_timestamp().alias("created_at"))
    lake.append(out, OPS_REC_FEEDBACK.name)
    summary = (lake.read(OPS_REC_FEEDBACK.name).where(F.col("run_id") == run_id).groupBy("model", "cut")
               .agg(*[F.sum(c).alias(c) for c in ("served", "served_to_returning", "viewed", "carted", "purchased")],
                    F.max("rank").alias("ranks"))
               .collect())  # one row per served model
    for r in summary:
        back = r["served_to_returning"] or 0
        log.info("  %-14s cut %s: %s served (%s to returning users): viewed %.2f%%, carted %.2f%%, bought %.2f%%",
                 r["model"], r["cut"], f"{r['served']:,}", f"{back:,}",
                 *[100 * (r[c] or 0) / back if back else 0.0 for c in ("viewed", "carted", "purchased")])
    return {"rows_written": sum(r["ranks"] for r in summary), "served": sum(r["served"] for r in summary),
            "viewed": sum(r["viewed"] for r in summary), "purchased": sum(r["purchased"] for r in summary)}, None
