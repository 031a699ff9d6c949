"""Sessions from clean events: ``silver.events`` -> ``gold.sessions``.

An event keeps the session id its source gave it. Events without one are grouped per user: a new session starts
when the gap to the user's previous event exceeds ``features.session_gap_minutes``. Sessions are split at midnight
UTC (as Google Analytics does), so the sessions of a date depend on that date's events only and a daily run can
recompute exactly the dates that received new events.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from shopmine.vocab import EVENT_TYPES, FUNNEL


def count_by_type(type_col: str = "event_type", weight: F.Column | None = None) -> list[F.Column]:
    """``n_<type>`` aggregates for every event type (``weight`` summed instead of 1 when given)."""
    one = weight if weight is not None else F.lit(1)
    return [F.sum(F.when(F.col(type_col) == t, one).otherwise(0)).cast("long").alias(f"n_{t}") for t in EVENT_TYPES]


def funnel_step() -> F.Column:
    """The deepest funnel step reached, from ``n_view`` / ``n_favourite`` / ``n_cart`` / ``n_purchase`` columns."""
    step = F.lit("none")
    for name in FUNNEL:  # later steps win
        step = F.when(F.col(f"n_{name}") > 0, F.lit(name)).otherwise(step)
    return step


def assign_sessions(events: DataFrame, gap_minutes: int) -> DataFrame:
    """Add ``session_key`` and ``from_source`` to every event.

    Events without a source id are ordered per (user, date) by time then event id; the first one and every one that
    follows a gap of more than ``gap_minutes`` opens a session, named ``<user_id>:<epoch seconds of its first event>``.
    """
    derived = F.col("session_id").isNull()
    w = Window.partitionBy("user_id", "event_date", derived).orderBy("event_time", "event_id")
    prev = F.lag("event_time").over(w)
    gap = F.unix_micros("event_time") - F.unix_micros(prev)
    opens = prev.isNull() | (gap > F.lit(gap_minutes * 60 * 1_000_000))
    started = F.when(opens, F.unix_seconds("event_time"))
    # The start of the session an event belongs to = the last opening at or before it.
    start = F.last(started, ignorenulls=True).over(w.rowsBetween(Window.unboundedPreceding, 0))
    return (events
            .withColumn("_start", F.when(derived, start))
            .withColumn("from_source", ~derived)
            .withColumn("session_key", F.coalesce("session_id", F.concat_ws(":", "user_id", F.col("_start").cast("string"))))
            .drop("_start"))


def sessionize(events: DataFrame, gap_minutes: int) -> DataFrame:
    """``silver.events`` rows -> ``gold.sessions`` rows (one per user, session and date)."""
    tagged = assign_sessions(events.select("event_id", "user_id", "session_id", "item_id", "category_id",
                                           "event_type", "event_time", "event_date", "is_bot"), gap_minutes)
    grouped = tagged.groupBy("user_id", F.col("event_date").alias("session_date"), "session_key", "from_source").agg(
        F.min("event_time").alias("start_time"),
        F.max("event_time").alias("end_time"),
        F.count(F.lit(1)).alias("n_events"),
        *count_by_type(),
        # a session's sets are small; two countDistinct would make Spark expand every row three times
        F.size(F.collect_set("item_id")).alias("n_items"),
        F.size(F.collect_set("category_id")).alias("n_categories"),
        F.max(F.col("is_bot").cast("int")).alias("_bot"),
    )
    return grouped.select(
        F.col("session_key").alias("session_id"), "user_id", "session_date", "start_time", "end_time",
        (F.unix_seconds("end_time") - F.unix_seconds("start_time")).alias("duration_seconds"),
        "n_events", *[f"n_{t}" for t in EVENT_TYPES], "n_items", "n_categories",
        (F.col("n_purchase") > 0).alias("converted"), funnel_step().alias("funnel_step"),
        (F.col("_bot") == 1).alias("is_bot"), "from_source",
    )
