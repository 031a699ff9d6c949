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
