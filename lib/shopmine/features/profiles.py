"""User profiles: ``gold.user_features`` + ``gold.interactions`` + ``gold.item_features`` -> ``gold.user_profiles``.

Quantile boundaries (price bands, spending tiers, RFM scores) are computed in Spark with ``percentile_approx`` into a
one-row frame that is broadcast-joined: nothing that grows with the input reaches the driver.
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from shopmine.conf import ProfileConf

CONTENT = ("top_categories", "top_brands", "preferred_price_band", "brand_loyalty", "favourite_rate", "cart_rate",
           "cart_abandonment", "preferred_time_of_day", "spending_power", "monetary", "r_score", "f_score",
           "m_score", "segment", "lifecycle_stage", "is_bot")
BOT_SCORE = 0.5  # a user whose events are mostly bot-flagged is profiled as a bot


def top_weighted(inter: DataFrame, key: str, top_n: int) -> DataFrame:
    """Per user, the ``top_n`` values of ``key`` by summed strength, each with its share of the user's strength
    (ties broken by the value), as ``array<struct<key, weight>>`` best first."""
    per = inter.where(F.col(key).isNotNull()).groupBy("user_id", key).agg(F.sum("strength").alias("s"))
    user = Window.partitionBy("user_id")
    ranked = (per.withColumn("total", F.sum("s").over(user))
              .withColumn("rank", F.row_number().over(user.orderBy(F.desc("s"), F.asc(key))))
              .where(F.col("rank") <= top_n)
              .withColumn("weight", F.when(F.col("total") > 0, F.round(F.col("s") / F.col("total"), 6))
                          .otherwise(F.lit(0.0))))
    collected = F.array_sort(F.collect_list(F.struct("rank", key, "weight")))
    return ranked.groupBy("user_id").agg(
        F.transform(collected, lambda x: F.struct(x[key].alias(key), x["weight"].alias("weight"))).alias(f"top_{key}s"))


def quantiles(column: str, probs: list[float], accuracy: int) -> F.Column:
    """Aggregate: the approximate quantiles of ``column`` at ``probs`` (an array, ascending)."""
    return F.percentile_approx(column, F.array(*[F.lit(p) for p in probs]), accuracy)


def _below(bounds: str, value: str) -> F.Column:
    """How many of the bounds lie strictly below the value."""
    return F.size(F.filter(F.col(bounds), lambda b: b < F.col(value)))


SEGMENTS = ("champions", "loyal", "potential_loyalist", "new_customer", "at_risk", "cant_lose", "hibernating",
            "need_attention", "browser", "bot")


def segment() -> F.Column:
    """Named RFM segment from r/f/m scores (1-5); buyers only (non-buyers and bots are labelled before)."""
    r, f, m = F.col("r_score"), F.col("f_score"), F.col("m_score")
    return (F.when((r >= 4) & (f >= 4) & (m >= 4), "champions")
            .when((r <= 2) & (f >= 4) & (m >= 4), "cant_lose")
            .when((r >= 3) & (f >= 4), "loyal")
            .when((r >= 4) & (f <= 1), "new_customer")
            .when((r >= 3) & (f >= 2), "potential_loyalist")
            .when((r <= 2) & ((f >= 3) | (m >= 3)), "at_risk")
            .when(r <= 2, "hibernating")
            .otherwise("need_attention"))


def time_of_day(hour: F.Column) -> F.Column:
    return (F.when(hour < 6, "night").when(hour < 12, "morning").when(hour < 18, "afternoon").otherwise("evening"))


def build_profiles(features: DataFrame, inter: DataFrame, items: DataFrame, conf: ProfileConf, run_id: str,
                   now: datetime) -> DataFrame:
    """``gold.user_profiles`` rows (version 1; the MERGE increments it when a profile's content changes)."""
    buyers = features.where(F.col("n_purchase") > 0)
    acc = conf.quantile_accuracy
    quintiles = [0.2, 0.4, 0.6, 0.8]
    bounds = buyers.agg(quantiles("purchase_recency_days", quintiles, acc).alias("rb"),
                        quantiles("frequency", quintiles, acc).alias("fb"),
                        quantiles("monetary", quintiles, acc).alias("mb"),
                        quantiles("monetary", [0.5, 0.75, 0.9], acc).alias("sb")).crossJoin(
        items.where(F.col("price_mean").isNotNull()).agg(quantiles("price_mean", [1 / 3, 2 / 3], acc).alias("pb")))
    df = (features
          .join(top_weighted(inter, "category_id", conf.top_n), "user_id", "left")
          .join(top_weighted(inter, "brand", conf.top_n), "user_id", "left")
          .crossJoin(F.broadcast(bounds)))
    buyer = F.col("n_purchase") > 0
    price = F.coalesce("avg_bought_price", "avg_viewed_price")
    spend_rank = _below("sb", "monetary")
    price_rank = F.size(F.filter(F.col("pb"), lambda b: b < price))
    is_bot = F.col("bot_score") >= BOT_SCORE
    age = F.datediff(F.col("as_of"), F.col("first_seen"))
    scored = df.select(
        "*",
        F.when(buyer, 5 - _below("rb", "purchase_recency_days")).otherwise(0).alias("r_score"),
        F.when(buyer, 1 + _below("fb", "frequency")).otherwise(0).alias("f_score"),
        F.when(buyer, 1 + _below("mb", "monetary")).otherwise(0).alias("m_score"),
    )
    empty_categories = F.array().cast("array<struct<category_id:string,weight:double>>")
    empty_brands = F.array().cast("array<struct<brand:string,weight:double>>")
    return scored.select(
        "user_id",
        F.coalesce("top_category_ids", empty_categories).alias("top_categories"),
        F.coalesce("top_brands", empty_brands).alias("top_brands"),
        F.when(price.isNull(), "unknown").when(price_rank == 0, "budget").when(price_rank == 1, "mid")
        .otherwise("premium").alias("preferred_price_band"),
        F.col("top_brands")[0]["weight"].alias("brand_loyalty"),
        F.col("rate_favourite").alias("favourite_rate"),
        F.col("rate_cart").alias("cart_rate"),
        F.when(F.col("cart_to_purchase").isNotNull(), F.round(1 - F.col("cart_to_purchase"), 6)).alias("cart_abandonment"),
        time_of_day(F.col("peak_hour")).alias("preferred_time_of_day"),
        F.when(~buyer, "none").when(spend_rank == 0, "low").when(spend_rank == 1, "medium")
        .when(spend_rank == 2, "high").otherwise("premium").alias("spending_power"),
        "monetary",
        F.col("r_score").cast("int"), F.col("f_score").cast("int"), F.col("m_score").cast("int"),
        F.when(is_bot, "bot").when(~buyer, "browser").otherwise(segment()).alias("segment"),
        F.when(age < conf.new_user_days, "new").when(F.col("recency_days") < conf.active_days, "active")
        .when(F.col("recency_days") < conf.lapsing_days, "lapsing").otherwise("churned").alias("lifecycle_stage"),
        is_bot.alias("is_bot"),
        "as_of",
    ).withColumn(
        "profile_hash", F.sha2(F.to_json(F.struct(*CONTENT)), 256),
    ).withColumns({
        "profile_version": F.lit(1),
        "updated_by_run": F.lit(run_id),
        "updated_at": F.lit(now).cast("timestamp"),
    })
