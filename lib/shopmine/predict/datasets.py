"""Labelled sets for the behaviour predictors, with a strict time cut: features from events before the cutoff T
(user features as of T − 1 day, folded from the gold daily tables by the same code as ``gold.user_features``),
labels from events on T … T + horizon − 1. Bot-flagged events never make a label; users whose history is mostly bot
traffic (``bot_score`` ≥ 0.5) are left out.

Tasks (``TASKS``):

* ``purchase``: does the user purchase within the horizon? (binary, every user active before T)
* ``item_purchase``: for each (user, item) carted or favourited before T and not bought before T, is it bought
  within the horizon? (binary; user features plus the pair's own counts and recency)
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

ACTIONS = ("view", "favourite", "cart", "purchase")
BINARY = ("purchase", "item_purchase")
TASKS = ("purchase", "item_purchase", "next_action", "next_category")
# Pair-level inputs of item_purchase, log1p-scaled (counts) or plain (days).
ITEM_COLUMNS = ("i_n_view", "i_n_favourite", "i_n_cart", "i_strength", "i_days_since", "i_item_buyers")


@dataclass(frozen=True)
class Windows:
    """Train labels on [train_cutoff, train_cutoff + horizon), test labels on [test_cutoff, test_cutoff + horizon);
    the train label window ends where the test one starts, so nothing of the test period reaches training."""

    train_cutoff: date
    test_cutoff: date
    horizon: int

    def describe(self) -> str:
        end = self.test_cutoff + timedelta(days=self.horizon - 1)
        return (f"train: features < {self.train_cutoff}, labels {self.train_cutoff}..{self.test_cutoff - timedelta(days=1)}"
                f"; test: features < {self.test_cutoff}, labels {self.test_cutoff}..{end}")


def windows(first_date: date, last_date: date, horizon: int, test_cutoff: date | None = None) -> Windows:
    """Windows ending at the last event date (or at ``test_cutoff`` + horizon − 1). Raises ValueError when the
    history is too short: training needs at least one day of features before its cutoff."""
    test = test_cutoff or last_date - timedelta(days=horizon - 1)
    train = test - timedelta(days=horizon)
    if train <= first_date:
        raise ValueError(f"events span {first_date}..{last_date}: too short for a {horizon}-day horizon (training "
                         f"needs events before {train}; lower predict.horizon_days or add history)")
    return Windows(train, test, horizon)


def label_events(events: DataFrame, cutoff: date, horizon: int) -> DataFrame:
    """Non-bot events of the label window [cutoff, cutoff + horizon)."""
    end = cutoff + timedelta(days=horizon)
    return events.where((F.col("event_date") >= F.lit(cutoff)) & (F.col("event_date") < F.lit(end))
                        & ~F.coalesce(F.col("is_bot"), F.lit(False)))


def features_as_of(user_day: DataFrame, sessions: DataFrame, daily: DataFrame, as_of: date,
                   conf: FeaturesConf) -> tuple[DataFrame, DataFrame]:
    """(user features, interactions) as of ``as_of`` — exactly what ``featurize`` would write with that as_of."""
    inter = aggregates.interactions(daily, as_of, conf)
    users = aggregates.user_features(user_day, sessions, daily, inter, as_of, conf)
    return users.where(F.coalesce(F.col("bot_score"), F.lit(0.0)) < 0.5), inter


def _first_in_window(ev: DataFrame) -> DataFrame:
    w = Window.partitionBy("user_id").orderBy("event_time", "event_id")
    return ev.withColumn("_r", F.row_number().over(w)).where("_r = 1").drop("_r")


def purchase_labels(users: DataFrame, events: DataFrame, cutoff: date, horizon: int) -> DataFrame:
    buyers = label_events(events, cutoff, horizon).where(F.col("event_type") == "purchase") \
        .select("user_id").distinct().withColumn("label", F.lit(1))
    return users.join(buyers, "user_id", "left").withColumn("label", F.coalesce("label", F.lit(0)))


def item_candidates(inter: DataFrame, as_of: date) -> DataFrame:
    """(user, item) pairs carted or favourited and not bought up to ``as_of``, with the pair's inputs."""
    buyers = inter.where(F.col("n_purchase") > 0).groupBy("item_id").agg(F.count(F.lit(1)).alias("buyers"))
    return inter.where(((F.col("n_cart") > 0) | (F.col("n_favourite") > 0)) & (F.col("n_purchase") == 0)) \
        .join(buyers, "item_id", "left").select(
            "user_id", "item_id",
            F.log1p("n_view").alias("i_n_view"), F.log1p("n_favourite").alias("i_n_favourite"),
            F.log1p("n_cart").alias("i_n_cart"), F.log1p("strength").alias("i_strength"),
            F.datediff(F.lit(as_of), F.to_date("last_event_time")).cast("double").alias("i_days_since"),
            F.log1p(F.coalesce("buyers", F.lit(0))).alias("i_item_buyers"))


def item_purchase_labels(users: DataFrame, inter: DataFrame, events: DataFrame, cutoff: date,
                         horizon: int) -> DataFrame:
    """Candidates as of the day before the cutoff; label 1 when the pair is bought in the window."""
    bought = label_events(events, cutoff, horizon).where(F.col("event_type") == "purchase") \
        .select("user_id", "item_id").distinct().withColumn("label", F.lit(1))
    return users.join(item_candidates(inter, cutoff - timedelta(days=1)), "user_id") \
        .join(bought, ["user_id", "item_id"], "left").withColumn("label", F.coalesce("label", F.lit(0)))


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


def labelled(task: str, users: DataFrame, inter: DataFrame, events: DataFrame, groups: DataFrame, n_groups: int,
             cutoff: date, horizon: int) -> DataFrame:
    if task == "purchase":
        return purchase_labels(users, events, cutoff, horizon)
    if task == "item_purchase":
        return item_purchase_labels(users, inter, events, cutoff, horizon)
    if task == "next_action":
        return next_action_labels(users, events, cutoff, horizon)
    if task == "next_category":
        return next_category_labels(users, events, groups, n_groups, cutoff, horizon)
    raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")


def serving_rows(task: str, users: DataFrame, inter: DataFrame, as_of: date) -> DataFrame:
    """Rows to score for the days after ``as_of`` (features as of it, no label): users, or candidate pairs."""
    return users if task != "item_purchase" else users.join(item_candidates(inter, as_of), "user_id")


def with_class_weights(df: DataFrame) -> DataFrame:
    """Column ``w`` = N / (K · n_class): each class weighs the same in total (K classes present)."""
    counts = df.groupBy("label").agg(F.count(F.lit(1)).alias("_rows"))  # K rows
    totals = counts.agg(F.sum("_rows").alias("_total"), F.count(F.lit(1)).alias("_classes"))
    w = counts.crossJoin(totals).select("label", (F.col("_total") / (F.col("_classes") * F.col("_rows"))).alias("w"))
    return df.join(F.broadcast(w), "label")
