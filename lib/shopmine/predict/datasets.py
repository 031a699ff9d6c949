"""Labelled sets for the behaviour predictors, with a strict time cut: features from events before a cutoff T
(user features as of T − 1 day, folded from the gold daily tables by the same code as ``gold.user_features``, plus
the windowed features of ``USER_WINDOW_FEATURES``; pair features from ``features.point_in_time``), labels from events
on T … T + horizon − 1. Bot-flagged events never make a label; users whose history is mostly bot traffic
(``bot_score`` ≥ 0.5) are left out.

Training rows come from ``predict.train_cutoffs`` cutoffs one day apart, the latest label window ending where the
test window starts (``Windows``): more rows, and no training label from the test period.

Tasks (``TASKS``):

* ``purchase``: does the user purchase within the horizon? (binary, every user active before T)
* ``item_purchase``: for each (user, item) the user touched before T, is it bought within the horizon? (binary;
  user features plus the pair's point-in-time features)
* ``next_action``: the type of the user's first view / favourite / cart / purchase within the horizon (4 classes;
  users with such an event)
* ``next_category``: the category group of the user's first purchase within the horizon, among the
  ``category_groups`` categories most purchased before T plus "other" (10 classes by default; users who purchase)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from shopmine.conf import FeaturesConf
from shopmine.features import aggregates
from shopmine.features import point_in_time as pit
from shopmine.vocab import FUNNEL

ACTIONS = FUNNEL
BINARY = ("purchase", "item_purchase")
TASKS = ("purchase", "item_purchase", "next_action", "next_category")
NEVER_DAYS = 1000.0  # "days since" something that never happened
WINDOW_DAYS = (1, 3, 7)
WINDOW_TYPES = ("events", *FUNNEL)

# One definition of the user-level windowed features (point in time: events strictly before the cutoff).
USER_WINDOW_FEATURES: dict[str, str] = {
    **{f"w{d}_{t}": f"the user's {'events' if t == 'events' else t + ' events'} in the last {d} day(s) before the cutoff"
       for d in WINDOW_DAYS for t in WINDOW_TYPES},
    "trend_3d": "events in the last 3 days / (1 + events in the 3 days before those)",
    "hours_since_last": "hours from the user's last event to the cutoff",
    **{f"days_since_{t}": f"days from the user's last {t} to the cutoff ({NEVER_DAYS:g}: never)"
       for t in ("favourite", "cart", "purchase")},
    "open_carts": "items the user carted and has not bought",
    "open_favourites": "items the user favourited and has not bought",
    "open_cart_days": f"days since the most recent carted-not-bought item was touched ({NEVER_DAYS:g}: none)",
    "distinct_items": "distinct items the user touched",
}

# The pair features as item_purchase sees them (prefixed: user features have columns of the same names).
PAIR_INPUTS = tuple(f"p_{f}" for f in pit.PAIR_FEATURES)


@dataclass(frozen=True)
class Windows:
    """Training labels on [c, c + horizon) for each training cutoff c (one day apart, the latest ending at the test
    cutoff), test labels on [test_cutoff, test_cutoff + horizon): no training label comes from the test period."""

    train_cutoffs: tuple[date, ...]
    test_cutoff: date
    horizon: int

    @property
    def train_cutoff(self) -> date:
        """The latest training cutoff."""
        return max(self.train_cutoffs)

    def describe(self) -> str:
        end = self.test_cutoff + timedelta(days=self.horizon - 1)
        cuts = ", ".join(str(c) for c in sorted(self.train_cutoffs))
        return (f"train: cutoffs {cuts} (features before each, labels the {self.horizon} days after; the latest "
                f"ends {self.test_cutoff - timedelta(days=1)}); test: features < {self.test_cutoff}, labels "
                f"{self.test_cutoff}..{end}")


def windows(first_date: date, last_date: date, horizon: int, test_cutoff: date | None = None,
            train_cutoffs: int = 1) -> Windows:
    """Windows ending at the last event date (or at ``test_cutoff`` + horizon − 1), with up to ``train_cutoffs``
    training cutoffs (fewer when the history is short). Raises ValueError when the history is too short: training
    needs at least one day of features before its cutoff."""
    test = test_cutoff or last_date - timedelta(days=horizon - 1)
    latest = test - timedelta(days=horizon)
    if latest <= first_date:
        raise ValueError(f"events span {first_date}..{last_date}: too short for a {horizon}-day horizon (training "
                         f"needs events before {latest}; lower predict.horizon_days or add history)")
    cuts = tuple(c for c in (latest - timedelta(days=k) for k in range(train_cutoffs)) if c > first_date)
    return Windows(cuts, test, horizon)


def label_events(events: DataFrame, cutoff: date, horizon: int) -> DataFrame:
    """Non-bot events of the label window [cutoff, cutoff + horizon)."""
    end = cutoff + timedelta(days=horizon)
    return events.where((F.col("event_date") >= F.lit(cutoff)) & (F.col("event_date") < F.lit(end))
                        & ~F.coalesce(F.col("is_bot"), F.lit(False)))


def user_windows(user_day: DataFrame, inter: DataFrame, cutoff: date) -> DataFrame:
    """``USER_WINDOW_FEATURES`` per user from the user's days before ``cutoff`` and the interactions as of the day
    before it (nulls filled: counts 0, days-since ``NEVER_DAYS``)."""
    u = user_day.where(F.col("event_date") < F.lit(cutoff))
    age = F.datediff(F.lit(cutoff), F.col("event_date"))  # 1 = the day before the cutoff
    count = lambda t: F.col("n_events") if t == "events" else F.col(f"n_{t}")  # noqa: E731
    aggs = [F.sum(F.when(age <= d, count(t)).otherwise(0)).alias(f"w{d}_{t}") for d in WINDOW_DAYS for t in WINDOW_TYPES]
    aggs += [F.sum(F.when((age > 3) & (age <= 6), F.col("n_events")).otherwise(0)).alias("_prev3"),
             F.max("last_event_time").alias("_last")]
    aggs += [F.min(F.when(F.col(f"n_{t}") > 0, age)).cast("double").alias(f"days_since_{t}")
             for t in ("favourite", "cart", "purchase")]
    days = u.groupBy("user_id").agg(*aggs)
    t0 = F.unix_seconds(F.lit(cutoff).cast("timestamp"))
    open_cart = (F.col("n_cart") > 0) & (F.col("n_purchase") == 0)
    pairs = inter.groupBy("user_id").agg(
        F.count(F.when(open_cart, 1)).alias("open_carts"),
        F.count(F.when((F.col("n_favourite") > 0) & (F.col("n_purchase") == 0), 1)).alias("open_favourites"),
        F.min(F.when(open_cart, F.datediff(F.lit(cutoff), F.to_date("last_event_time")))).cast("double")
        .alias("open_cart_days"),
        F.count(F.lit(1)).alias("distinct_items"))
    out = days.join(pairs, "user_id", "left").select(
        "user_id", *[f"w{d}_{t}" for d in WINDOW_DAYS for t in WINDOW_TYPES],
        (F.col("w3_events") / (1 + F.col("_prev3"))).alias("trend_3d"),
        ((t0 - F.unix_seconds("_last")) / 3600.0).alias("hours_since_last"),
        *[f"days_since_{t}" for t in ("favourite", "cart", "purchase")],
        "open_carts", "open_favourites", "open_cart_days", "distinct_items")
    never = [f for f in USER_WINDOW_FEATURES if f.startswith("days_since") or f == "open_cart_days"]
    out = out.fillna(NEVER_DAYS, subset=never).fillna(0, subset=[f for f in USER_WINDOW_FEATURES if f not in never])
    return out.select("user_id", *[F.col(f).cast("double").alias(f) for f in USER_WINDOW_FEATURES])


def features_as_of(user_day: DataFrame, sessions: DataFrame, h: pit.History, conf: FeaturesConf) -> DataFrame:
    """User features at the start of ``h.cutoff``: exactly what ``featurize`` would write as of the day before,
    plus ``USER_WINDOW_FEATURES``; mostly-bot users left out."""
    as_of = h.cutoff - timedelta(days=1)
    users = aggregates.user_features(user_day, sessions, h.rows, h.inter, as_of, conf)
    users = users.where(F.coalesce(F.col("bot_score"), F.lit(0.0)) < 0.5)
    return users.join(user_windows(user_day, h.inter, h.cutoff), "user_id", "left")


def _first_in_window(ev: DataFrame) -> DataFrame:
    w = Window.partitionBy("user_id").orderBy("event_time", "event_id")
    return ev.withColumn("_r", F.row_number().over(w)).where("_r = 1").drop("_r")


def purchase_labels(users: DataFrame, events: DataFrame, cutoff: date, horizon: int) -> DataFrame:
    buyers = label_events(events, cutoff, horizon).where(F.col("event_type") == "purchase") \
        .select("user_id").distinct().withColumn("label", F.lit(1))
    return users.join(buyers, "user_id", "left").withColumn("label", F.coalesce("label", F.lit(0)))


def item_rows(users: DataFrame, h: pit.History, pairs: DataFrame | None = None) -> DataFrame:
    """Every (user, item) the user touched before ``h.cutoff`` (users of ``users`` only), with the user's features
    and the pair's point-in-time features (``point_in_time.PAIR_FEATURES``)."""
    touched = h.inter.select("user_id", "item_id").join(users.select("user_id"), "user_id")
    feats = pit.pair_features(touched, h, pairs)
    return feats.select("user_id", "item_id", *[F.col(f).alias(p) for f, p in zip(pit.PAIR_FEATURES, PAIR_INPUTS)]) \
        .join(users, "user_id")


def item_purchase_labels(rows: DataFrame, events: DataFrame, cutoff: date, horizon: int) -> DataFrame:
    """``item_rows`` of a cutoff with label 1 when the pair is bought in the window after it."""
    bought = label_events(events, cutoff, horizon).where(F.col("event_type") == "purchase") \
        .select("user_id", "item_id").distinct().withColumn("label", F.lit(1))
    return rows.join(bought, ["user_id", "item_id"], "left").withColumn("label", F.coalesce("label", F.lit(0)))


def next_action_labels(users: DataFrame, events: DataFrame, cutoff: date, horizon: int) -> DataFrame:
    ev = label_events(events, cutoff, horizon).where(F.col("event_type").isin(*ACTIONS))
    first = _first_in_window(ev)
    label = F.array_position(F.array(*[F.lit(a) for a in ACTIONS]), F.col("event_type")).cast("int") - 1
    return users.join(first.select("user_id", label.alias("label")), "user_id")


def category_groups(events: DataFrame, cutoff: date, n: int) -> DataFrame:
    """The ``n`` categories with the most non-bot purchases before the cutoff: (category_id, group 0..n-1);
    every other category is group n ("other")."""
    before = events.where((F.col("event_date") < F.lit(cutoff)) & (F.col("event_type") == "purchase")
                          & ~F.coalesce(F.col("is_bot"), F.lit(False)) & F.col("category_id").isNotNull())
    top = before.groupBy("category_id").agg(F.count(F.lit(1)).alias("n")) \
        .orderBy(F.desc("n"), F.asc("category_id")).limit(n)
    return top.select("category_id", (F.row_number().over(Window.orderBy(F.desc("n"), F.asc("category_id"))) - 1)
                      .cast("int").alias("group"))


def next_category_labels(users: DataFrame, events: DataFrame, groups: DataFrame, n: int, cutoff: date,
                         horizon: int) -> DataFrame:
    first = _first_in_window(label_events(events, cutoff, horizon).where(F.col("event_type") == "purchase"))
    labelled = first.join(F.broadcast(groups), "category_id", "left").select(
        "user_id", F.coalesce("group", F.lit(n)).cast("int").alias("label"))
    return users.join(labelled, "user_id")


def class_names(task: str, groups: list[str] | None = None) -> list[str]:
    if task in BINARY:
        return ["no", "yes"]
    if task == "next_action":
        return list(ACTIONS)
    return [*(groups or []), "other"]


def n_classes(task: str, category_groups: int) -> int:
    return {"next_action": len(ACTIONS), "next_category": category_groups + 1}.get(task, 2)


def labelled(task: str, users: DataFrame, pairs: DataFrame | None, events: DataFrame, groups: DataFrame,
             n_groups: int, cutoff: date, horizon: int) -> DataFrame:
    """The labelled rows of one cutoff: ``users`` (features as of it), ``pairs`` its ``item_rows`` (item task)."""
    if task == "purchase":
        return purchase_labels(users, events, cutoff, horizon)
    if task == "item_purchase":
        return item_purchase_labels(pairs, events, cutoff, horizon)
    if task == "next_action":
        return next_action_labels(users, events, cutoff, horizon)
    if task == "next_category":
        return next_category_labels(users, events, groups, n_groups, cutoff, horizon)
    raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")


def with_class_weights(df: DataFrame) -> DataFrame:
    """Column ``w`` = N / (K · n_class): each class weighs the same in total (K classes present)."""
    counts = df.groupBy("label").agg(F.count(F.lit(1)).alias("_rows"))  # K rows
    totals = counts.agg(F.sum("_rows").alias("_total"), F.count(F.lit(1)).alias("_classes"))
    w = counts.crossJoin(totals).select("label", (F.col("_total") / (F.col("_classes") * F.col("_rows"))).alias("w"))
    return df.join(F.broadcast(w), "label")


def features_markdown() -> str:
    """docs/behaviour-features.md, generated from ``USER_WINDOW_FEATURES`` and ``point_in_time.PAIR_FEATURES``
    (``python -m shopmine.docs``)."""
    lines = ["# Behaviour model features (generated from code: `python -m shopmine.predict.datasets`)", "",
             "Every feature is point in time: computed from events strictly before the cutoff it describes, in "
             "training (each rolling cutoff) and in serving alike. Besides the `gold.user_features` columns "
             "(see docs/tables.md), the models see:", "",
             "## Per user (`predict/datasets.py` `USER_WINDOW_FEATURES`)", "", "| feature | what it is |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" for k, v in USER_WINDOW_FEATURES.items()]
    lines += ["", "## Per (user, item), task `item_purchase` (`features/point_in_time.py` `PAIR_FEATURES`, "
              "prefixed `p_`)", "", "| feature | what it is |", "|---|---|"]
    lines += [f"| `p_{k}` | {v} |" for k, v in pit.PAIR_FEATURES.items()]
    return "\n".join(lines) + "\n"
