"""As-of aggregates folded from the per-day tables: ``gold.interactions``, ``gold.user_features``,
``gold.item_features`` and ``gold.category_features``.

``as_of`` is a date: features use the events of that day and before (never later ones, so a model trained with
features as of T and labels after T has no leak), within ``features.window_days`` when it is set. Doubles are
rounded to 6 decimals so that a rebuild and an incremental run agree exactly whatever the summation order.
"""

from __future__ import annotations

from datetime import date, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from shopmine.conf import FeaturesConf
from shopmine.vocab import EVENT_TYPES

COUNTS = [f"n_{t}" for t in EVENT_TYPES]
DIGITS = 6


def window_bounds(as_of: date, window_days: int | None) -> tuple[date | None, date]:
    """The first and last event dates the features of ``as_of`` use (first is None: all history)."""
    return (as_of - timedelta(days=window_days - 1) if window_days else None), as_of


def in_window(df: DataFrame, as_of: date, window_days: int | None, column: str = "event_date") -> DataFrame:
    first, last = window_bounds(as_of, window_days)
    cond = F.col(column) <= F.lit(last)
    if first is not None:
        cond = cond & (F.col(column) >= F.lit(first))
    return df.where(cond)


def _ratio(num: str | F.Column, den: str | F.Column, cap: float | None = None) -> F.Column:
    """num / den rounded, null when den is 0, at most ``cap`` when given."""
    num = F.col(num) if isinstance(num, str) else num
    den = F.col(den) if isinstance(den, str) else den
    value = F.round(num / den, DIGITS)
    return F.when(den > 0, F.least(value, F.lit(cap)) if cap is not None else value)


def _decay_to(as_of: date, half_life_days: float) -> F.Column:
    """Factor taking a day-end decayed weight to the end of ``as_of``: 2^-(days between the two ends)/h."""
    days = F.datediff(F.lit(as_of), F.col("event_date"))
    return F.pow(F.lit(2.0), -days / F.lit(half_life_days))


def _latest_by_date(value: str) -> F.Column:
    return F.max_by(F.col(value), F.when(F.col(value).isNotNull(), F.struct("event_date", "last_event_time")))


def interactions(daily: DataFrame, as_of: date, conf: FeaturesConf) -> DataFrame:
    """``gold.interactions``: one row per (user, item) with the strength decayed to the end of ``as_of``."""
    d = in_window(daily, as_of, conf.window_days)
    return d.groupBy("user_id", "item_id").agg(
        _latest_by_date("category_id").alias("category_id"),
        _latest_by_date("brand").alias("brand"),
        F.round(F.sum(F.col("decayed_weight") * _decay_to(as_of, conf.half_life_days)), DIGITS).alias("strength"),
        F.sum("n_events").alias("n_events"),
        *[F.sum(c).alias(c) for c in COUNTS],
        _latest_by_date("rating").alias("rating"),
        F.min("first_event_time").alias("first_event_time"),
        F.max("last_event_time").alias("last_event_time"),
    ).withColumn("strength", F.greatest(F.col("strength"), F.lit(0.0))).withColumn("as_of", F.lit(as_of))


def _category_stats(daily: DataFrame, inter: DataFrame) -> DataFrame:
    """Per user: entropy (bits) of events over categories, number of categories, the top category by strength."""
    per_cat = daily.where(F.col("category_id").isNotNull()).groupBy("user_id", "category_id").agg(
        F.sum("n_events").alias("n"))
    total = F.sum("n").over(Window.partitionBy("user_id"))
    entropy = (per_cat.withColumn("p", F.col("n") / total)
               .groupBy("user_id").agg(F.round(-F.sum(F.col("p") * F.log2("p")), DIGITS).alias("category_entropy"),
                                       F.count(F.lit(1)).alias("n_categories")))
    top = (inter.where(F.col("category_id").isNotNull()).groupBy("user_id", "category_id")
           .agg(F.sum("strength").alias("s"))
           .groupBy("user_id").agg(F.max_by("category_id", F.struct("s", F.col("category_id"))).alias("top_category")))
    return entropy.join(top, "user_id", "full")


def user_features(user_day: DataFrame, sessions: DataFrame, daily: DataFrame, inter: DataFrame, as_of: date,
                  conf: FeaturesConf) -> DataFrame:
    """``gold.user_features`` from the user's days, sessions and item interactions up to ``as_of``."""
    u = in_window(user_day, as_of, conf.window_days)
    weekday = F.weekday("event_date")  # 0 = Monday
    base = u.groupBy("user_id").agg(
        F.sum("n_events").alias("n_events"),
        *[F.sum(c).alias(c) for c in COUNTS],
        F.sum("bot_events").alias("bot_events"),
        F.count(F.lit(1)).alias("active_days"),
        F.min("event_date").alias("first_seen"),
        F.max("event_date").alias("last_seen"),
        F.max(F.when(F.col("n_purchase") > 0, F.col("event_date"))).alias("last_purchase"),
        F.count(F.when(F.col("n_purchase") > 0, 1)).alias("frequency"),
        F.round(F.sum("revenue"), DIGITS).alias("monetary"),
        F.sum("units").alias("units"),
        F.sum("viewed_price_sum").alias("vps"), F.sum("viewed_price_n").alias("vpn"),
        F.sum("bought_price_sum").alias("bps"), F.sum("bought_price_n").alias("bpn"),
        F.array(*[F.sum(F.col("hour_counts")[h]) for h in range(24)]).alias("hours"),
        F.array(*[F.sum(F.when(weekday == d, F.col("n_events")).otherwise(0)) for d in range(7)]).alias("weekdays"),
    )
    sess = in_window(sessions, as_of, conf.window_days, "session_date").groupBy("user_id").agg(
        F.count(F.lit(1)).alias("sessions"),
        F.round(F.avg("duration_seconds"), DIGITS).alias("avg_session_seconds"),
        F.round(F.avg("n_events"), DIGITS).alias("avg_session_events"),
    )
    cats = _category_stats(in_window(daily, as_of, conf.window_days), inter)
    n = F.col("n_events")

    def hour_share(lo: int, hi: int) -> F.Column:
        return F.round(sum((F.col("hours")[h] for h in range(lo, hi)), F.lit(0)) / n, DIGITS)

    return (base.join(sess, "user_id", "left").join(cats, "user_id", "left").select(
        "user_id", "n_events", *COUNTS,
        *[F.round(F.col(f"n_{t}") / n, DIGITS).alias(f"rate_{t}") for t in EVENT_TYPES],
        "active_days", "first_seen", "last_seen",
        F.datediff(F.lit(as_of), F.col("last_seen")).alias("recency_days"),
        F.datediff(F.lit(as_of), F.col("last_purchase")).alias("purchase_recency_days"),
        "frequency", "monetary", "units",
        F.coalesce("sessions", F.lit(0)).alias("sessions"), "avg_session_seconds", "avg_session_events",
        _ratio("n_cart", "n_view", cap=1.0).alias("view_to_cart"),
        _ratio("n_purchase", "n_cart", cap=1.0).alias("cart_to_purchase"),
        "category_entropy", F.coalesce("n_categories", F.lit(0)).alias("n_categories"), "top_category",
        _ratio("vps", "vpn").alias("avg_viewed_price"),
        _ratio("bps", "bpn").alias("avg_bought_price"),
        F.transform("hours", lambda x: F.round(x / n, DIGITS)).alias("hour_share"),
        F.transform("weekdays", lambda x: F.round(x / n, DIGITS)).alias("weekday_share"),
        (F.array_position("hours", F.array_max("hours")) - 1).cast("int").alias("peak_hour"),
        hour_share(0, 6).alias("share_night"), hour_share(6, 12).alias("share_morning"),
        hour_share(12, 18).alias("share_afternoon"), hour_share(18, 24).alias("share_evening"),
        F.round((F.col("weekdays")[5] + F.col("weekdays")[6]) / n, DIGITS).alias("weekend_share"),
        F.round(F.col("bot_events") / n, DIGITS).alias("bot_score"),
        F.lit(as_of).alias("as_of"),
    ))


def _popularity(daily: DataFrame, key: str, as_of: date, conf: FeaturesConf, extra: list[F.Column]) -> DataFrame:
    tw = conf.trend_window_days
    recent = F.col("event_date") > F.lit(as_of - timedelta(days=tw))
    earlier = ~recent & (F.col("event_date") > F.lit(as_of - timedelta(days=2 * tw)))

    def windowed(col: str, cond: F.Column) -> F.Column:
        return F.sum(F.when(cond, F.col(col)).otherwise(0))

    rows = daily.where(F.col(key).isNotNull())
    sums = rows.groupBy(key).agg(
        *extra,
        *[F.sum(c).alias(c) for c in COUNTS],
        windowed("n_view", recent).alias("views_recent"), windowed("n_view", earlier).alias("views_earlier"),
        windowed("n_purchase", recent).alias("purchases_recent"),
        windowed("n_purchase", earlier).alias("purchases_earlier"),
        windowed("n_events", recent).alias("_ev_recent"), windowed("n_events", earlier).alias("_ev_earlier"),
        F.round(F.sum("revenue"), DIGITS).alias("revenue"),
        F.sum("price_sum").alias("_ps"), F.sum("price_n").alias("_pn"), F.sum("price_sumsq").alias("_pss"),
        F.min("price_min").alias("price_min"), F.max("price_max").alias("price_max"),
    )
    # Distinct users, viewers and buyers in two plain aggregations (per key and user, then per key): three
    # countDistinct in one aggregate make Spark expand every row once per distinct argument plus once more.
    users = (rows.groupBy(key, "user_id")
             .agg(F.max(F.col("n_view") > 0).alias("_v"), F.max(F.col("n_purchase") > 0).alias("_b"))
             .groupBy(key).agg(F.count(F.lit(1)).alias("distinct_users"), F.count_if("_v").alias("viewers"),
                               F.count_if("_b").alias("buyers")))
    agg = sums.join(users, key)
    mean = F.col("_ps") / F.col("_pn")
    return (agg
            .withColumn("trend", F.round((F.col("_ev_recent") + 1) / (F.col("_ev_earlier") + 1), DIGITS))
            .withColumn("conversion_rate", _ratio("buyers", "viewers"))
            .withColumn("price_mean", F.when(F.col("_pn") > 0, F.round(mean, DIGITS)))
            .withColumn("price_std", F.when(F.col("_pn") > 0, F.round(
                F.sqrt(F.greatest(F.col("_pss") / F.col("_pn") - mean * mean, F.lit(0.0))), DIGITS)))
            .withColumn("as_of", F.lit(as_of))
            .drop("_ev_recent", "_ev_earlier", "_ps", "_pn", "_pss"))


def item_features(daily: DataFrame, as_of: date, conf: FeaturesConf) -> DataFrame:
    """``gold.item_features``: popularity by type and window, trend, users, conversion, price statistics."""
    d = in_window(daily, as_of, conf.window_days)
    return _popularity(d, "item_id", as_of, conf,
                       [_latest_by_date("category_id").alias("category_id"), _latest_by_date("brand").alias("brand")])


def category_features(daily: DataFrame, as_of: date, conf: FeaturesConf) -> DataFrame:
    """``gold.category_features``: as item features, per category, plus the number of distinct items."""
    d = in_window(daily, as_of, conf.window_days)
    return _popularity(d, "category_id", as_of, conf, [F.countDistinct("item_id").alias("n_items")])
