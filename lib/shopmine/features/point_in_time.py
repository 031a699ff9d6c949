"""Point-in-time (user, item) features: what was known at the start of a cutoff date c, folded from the per-day
interactions strictly before c (``gold.interactions_daily`` rows with ``event_date < c``). One builder for every
model that scores pairs: the recommender's ranker (beside its candidate-source features) and the item-level purchase
predictor (``item_purchase``), in training (several cutoffs) and in serving (the day after the last date) alike.

Nothing here reads a row on or after the cutoff, so adding events on or after c never changes a feature row of c
(tested on hand-made logs). Nulls are filled: hours-since columns with ``NEVER_HOURS``, everything else with 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shopmine.conf import FeaturesConf
from shopmine.features import aggregates

NEVER_HOURS = 10_000.0  # "hours since" for something that never happened
COUNTS = aggregates.COUNTS

# One definition of the pair features: name -> what it is (docs/ and the models' vectors follow this order).
PAIR_FEATURES: dict[str, str] = {
    **{c: f"the user's {c[2:].replace('_', ' ')} events on the item" for c in COUNTS},
    "strength": "the user-item strength decayed to the cutoff (features.half_life_days)",
    "ui_hours_last": "hours from the user's last event on the item to the cutoff",
    "ui_hours_first": "hours from the user's first event on the item to the cutoff",
    "ui_days": "distinct days the user touched the item",
    "ui_events_1d": "the user's events on the item on the last day before the cutoff",
    "ui_events_3d": "the user's events on the item in the last 3 days",
    "carted_not_bought": "1 when the user carted the item and never bought it",
    "u_events": "the user's events (all items)",
    "u_items": "distinct items the user touched",
    "u_days": "distinct days the user was active",
    "u_purchases": "the user's purchases",
    "u_hours_last": "hours from the user's last event to the cutoff",
    "u_events_1d": "the user's events on the last day before the cutoff",
    "i_users": "distinct users of the item",
    "i_users_1d": "distinct users of the item on the last day",
    "i_users_3d": "distinct users of the item in the last 3 days",
    "i_trend": "i_users_1d / (1 + i_users_3d)",
    "i_buy_rate": "purchases of the item / (1 + its users)",
    "uc_share": "share of the user's events in the item's category",
    "uc_items": "distinct items the user touched in the item's category",
    "uc_hours_last": "hours from the user's last event in the item's category to the cutoff",
    "ub_share": "share of the user's events on the item's brand",
    "price_ratio": "the item's mean price / the mean price of the user's items (-1 when unknown)",
}


@dataclass(frozen=True)
class History:
    """What is known at the start of ``cutoff``: the per-day rows before it, and those folded into interactions."""

    cutoff: date
    rows: DataFrame    # gold.interactions_daily rows with event_date < cutoff
    inter: DataFrame   # gold.interactions-like rows as of cutoff - 1 (persist it when it is reused)


def history(daily: DataFrame, cutoff: date, conf: FeaturesConf) -> History:
    rows = daily.where(F.col("event_date") < F.lit(cutoff))
    return History(cutoff, rows, aggregates.interactions(rows, cutoff - timedelta(days=1), conf))


def _since(c: date, days: int) -> F.Column:
    return F.lit(c - timedelta(days=days))


def fold_pairs(h: History) -> DataFrame:
    """The history folded per (user, item), with what the user / item / category / brand features need."""
    since = lambda days: _since(h.cutoff, days)  # noqa: E731
    return h.rows.groupBy("user_id", "item_id").agg(
        F.count(F.lit(1)).alias("ui_days"),  # one per-day row per (user, item, day)
        F.sum(F.when(F.col("event_date") >= since(1), F.col("n_events"))).alias("ui_events_1d"),
        F.sum(F.when(F.col("event_date") >= since(3), F.col("n_events"))).alias("ui_events_3d"),
        F.max("event_date").alias("last_date"), F.sum("n_events").alias("events"),
        F.sum("n_purchase").alias("purchases"), F.max("last_event_time").alias("last_time"),
        F.max("category_id").alias("category_id"), F.max("brand").alias("brand"),
        F.sum("price_sum").alias("price_sum"), F.sum("price_n").alias("price_n"))


def pair_features(rows: DataFrame, h: History, pairs: DataFrame | None = None) -> DataFrame:
    """``rows`` (user_id, item_id, anything else) with every feature of ``PAIR_FEATURES`` as a filled double.

    One pass folds the history per (user, item) (``fold_pairs``; pass it persisted when it is reused); the user,
    item, user-category and user-brand aggregates are folded from that, not from the raw rows (no distinct counts
    that would expand them once per distinct column)."""
    c = h.cutoff
    t0 = F.unix_seconds(F.lit(c).cast("timestamp"))
    hours = lambda col: ((t0 - F.unix_seconds(col)) / 3600.0)  # noqa: E731
    since = lambda days: _since(c, days)  # noqa: E731
    pairs = fold_pairs(h) if pairs is None else pairs
    price = F.try_divide(F.sum("price_sum"), F.sum("price_n"))
    user = pairs.groupBy("user_id").agg(
        F.sum("events").alias("u_events"), F.count(F.lit(1)).alias("u_items"),
        F.sum("purchases").alias("u_purchases"), hours(F.max("last_time")).alias("u_hours_last"),
        F.sum("ui_events_1d").alias("u_events_1d"), price.alias("u_price"))
    days = h.rows.groupBy("user_id").agg(F.countDistinct("event_date").alias("u_days"))
    item = pairs.groupBy("item_id").agg(
        F.count(F.lit(1)).alias("i_users"), F.sum("purchases").alias("i_purchases"),
        F.count(F.when(F.col("last_date") >= since(1), 1)).alias("i_users_1d"),
        F.count(F.when(F.col("last_date") >= since(3), 1)).alias("i_users_3d"),
        F.max("category_id").alias("category_id"), F.max("brand").alias("brand"), price.alias("i_price"))
    ucat = pairs.where(F.col("category_id").isNotNull()).groupBy("user_id", "category_id").agg(
        F.sum("events").alias("uc_events"), F.count(F.lit(1)).alias("uc_items"),
        hours(F.max("last_time")).alias("uc_hours_last"))
    ubrand = pairs.where(F.col("brand").isNotNull()).groupBy("user_id", "brand").agg(F.sum("events").alias("ub_events"))
    ui = h.inter.select("user_id", "item_id", *COUNTS, "strength",
                        hours("last_event_time").alias("ui_hours_last"),
                        hours("first_event_time").alias("ui_hours_first"))
    ui_win = pairs.select("user_id", "item_id", "ui_days", "ui_events_1d", "ui_events_3d")
    out = (rows.join(ui, ["user_id", "item_id"], "left").join(ui_win, ["user_id", "item_id"], "left")
           .join(user, "user_id", "left").join(days, "user_id", "left").join(item, "item_id", "left")
           .join(ucat, ["user_id", "category_id"], "left").join(ubrand, ["user_id", "brand"], "left"))
    out = out.select(
        "*",
        ((F.col("n_cart") > 0) & (F.col("n_purchase") == 0)).cast("double").alias("carted_not_bought"),
        (F.col("i_users_1d") / (1 + F.col("i_users_3d"))).alias("i_trend"),
        (F.col("i_purchases") / (1 + F.col("i_users"))).alias("i_buy_rate"),
        F.try_divide(F.col("uc_events"), F.col("u_events")).alias("uc_share"),
        F.try_divide(F.col("ub_events"), F.col("u_events")).alias("ub_share"),
        F.coalesce(F.try_divide(F.col("i_price"), F.col("u_price")), F.lit(-1.0)).alias("price_ratio"))
    hours_cols = [f for f in PAIR_FEATURES if "hours" in f]
    out = out.fillna(NEVER_HOURS, subset=hours_cols).fillna(0.0, subset=[f for f in PAIR_FEATURES if f not in hours_cols])
    keep = [c for c in rows.columns if c not in PAIR_FEATURES]
    return out.select(*keep, *[F.col(f).cast("double").alias(f) for f in PAIR_FEATURES])
