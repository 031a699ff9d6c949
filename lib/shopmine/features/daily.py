"""Per-day building blocks: ``silver.events`` of one or more dates -> ``gold.interactions_daily`` and
``gold.user_daily``.

Each output row depends on the events of its own date only, so a daily run recomputes exactly the dates that
received events and replaces those partitions; every as-of aggregate (``aggregates.py``) is then a cheap fold over
these tables instead of a pass over raw events.

Time decay is exact under this split: an event of weight w at time t contributes w·2^-(T - t)/h at the as-of
instant T. ``decayed_weight`` stores Σ w·2^-(E - t)/h with E the end of the event's day; multiplying by
2^-(T - E)/h later gives the same sum for any T ≥ E.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shopmine.conf import FeaturesConf
from shopmine.features.sessions import count_by_type
from shopmine.vocab import EVENT_TYPES, revenue, units

SECONDS_PER_DAY = 86_400


def end_of_day_seconds(date_col: str | F.Column) -> F.Column:
    """Epoch seconds of the midnight (UTC) that ends the given date."""
    col = F.col(date_col) if isinstance(date_col, str) else date_col
    return F.unix_seconds(F.date_add(col, 1).cast("timestamp"))


def event_weight(weights: dict[str, float]) -> F.Column:
    """The configured weight of each event's type (0 for types without one)."""
    expr = F.lit(0.0)
    for event_type in EVENT_TYPES:
        expr = F.when(F.col("event_type") == event_type, F.lit(float(weights.get(event_type, 0.0)))).otherwise(expr)
    return expr


def _latest(value: str) -> F.Column:
    """The value of the latest event (ties broken by event id), ignoring events where it is null."""
    return F.max_by(F.col(value), F.when(F.col(value).isNotNull(), F.struct("event_time", "event_id")))


def interactions_daily(events: DataFrame, conf: FeaturesConf) -> DataFrame:
    """One row per (user, item, date) with counts, weighted and decayed strength, the day's rating and prices."""
    ev = events.where(F.col("item_id").isNotNull())
    if conf.exclude_bots:
        ev = ev.where(~F.col("is_bot"))
    w = event_weight(conf.event_weights)
    age_days = (end_of_day_seconds("event_date") - F.unix_micros("event_time") / 1e6) / SECONDS_PER_DAY
    decayed = w * F.pow(F.lit(2.0), -age_days / F.lit(conf.half_life_days))
    purchase = F.col("event_type") == "purchase"
    return ev.groupBy("user_id", "item_id", "event_date").agg(
        _latest("category_id").alias("category_id"),
        _latest("brand").alias("brand"),
        F.count(F.lit(1)).alias("n_events"),
        *count_by_type(),
        F.round(F.sum(w), 9).alias("weight"),
        F.round(F.sum(decayed), 9).alias("decayed_weight"),
        _latest("rating").alias("rating"),
        F.min("event_time").alias("first_event_time"),
        F.max("event_time").alias("last_event_time"),
        F.coalesce(F.sum(F.when(purchase, revenue())), F.lit(0.0)).alias("revenue"),
        F.coalesce(F.sum("price"), F.lit(0.0)).alias("price_sum"),
        F.count("price").alias("price_n"),
        F.min("price").alias("price_min"),
        F.max("price").alias("price_max"),
        F.coalesce(F.sum(F.col("price") * F.col("price")), F.lit(0.0)).alias("price_sumsq"),
    )


def user_daily(events: DataFrame) -> DataFrame:
    """One row per (user, date): counts, bot events, money, prices seen and paid, events per hour of day."""
    t = F.col("event_type")
    hour = F.hour("event_time")
    viewed = (t == "view") & F.col("price").isNotNull()
    bought = (t == "purchase") & F.col("price").isNotNull()
    return events.groupBy("user_id", "event_date").agg(
        F.count(F.lit(1)).alias("n_events"),
        *count_by_type(),
        F.sum(F.col("is_bot").cast("long")).alias("bot_events"),
        F.coalesce(F.sum(F.when(t == "purchase", revenue())), F.lit(0.0)).alias("revenue"),
        F.coalesce(F.sum(F.when(t == "purchase", units())), F.lit(0)).cast("long").alias("units"),
        F.coalesce(F.sum(F.when(viewed, F.col("price"))), F.lit(0.0)).alias("viewed_price_sum"),
        F.count(F.when(viewed, 1)).alias("viewed_price_n"),
        F.coalesce(F.sum(F.when(bought, F.col("price"))), F.lit(0.0)).alias("bought_price_sum"),
        F.count(F.when(bought, 1)).alias("bought_price_n"),
        F.array(*[F.count(F.when(hour == h, 1)) for h in range(24)]).alias("hour_counts"),
        F.min("event_time").alias("first_event_time"),
        F.max("event_time").alias("last_event_time"),
    )
