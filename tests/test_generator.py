"""The synthetic generator carries the signal real shops have (issue 26 part 3): users' tastes, repeat visits to
liked items, a purchase propensity that shows in observable behaviour, with Taobao-like event shares, and the
tastes and propensities written as ground truth. Each property is checked against the same generator with the
signal switched off (``generate.taste_share=0``, ``generate.revisit_share=0``)."""

from __future__ import annotations

from pyspark.sql import functions as F

from conftest import settings_for

SIZE = ["generate.events=20000", "generate.users=400", "generate.items=800", "generate.bot_share=0"]


def _generated(spark, tmp_path, *extra):
    from shopmine.etl.generate import generate

    g = generate(spark, settings_for(str(tmp_path), *SIZE, *extra).generate)
    events = g.events.where("event_type != 'search'").cache()
    return events, g.truth.cache()


def _stats(events, truth) -> dict[str, float]:
    liked = truth.where("kind = 'taste'").select("user_id", F.col("expected").alias("category_id"))
    in_taste = events.join(liked, ["user_id", "category_id"], "left_semi").count() / events.count()
    # a purchase of an item the user viewed in an earlier session: what re-visit recommenders and carts build on
    views = events.where("event_type = 'view'").select("user_id", "item_id", F.col("session_id").alias("vs"),
                                                        F.col("event_time").alias("vt"))
    buys = events.where("event_type = 'purchase'")
    seen = buys.join(views, ["user_id", "item_id"]).where("vs != session_id AND vt < event_time") \
        .select("event_id").distinct().count()
    per_user = events.groupBy("user_id").agg(F.count(F.lit(1)).alias("n"),
                                             F.sum((F.col("event_type") == "cart").cast("int")).alias("carts"),
                                             F.sum((F.col("event_type") == "purchase").cast("int")).alias("buys"))
    prop = truth.where("kind = 'propensity'").select("user_id", F.col("expected").cast("double").alias("p"))
    u = per_user.join(prop, "user_id")
    corr = u.select(F.corr("p", F.col("buys") / F.col("n")).alias("p_buys"),
                    F.corr(F.col("carts") / F.col("n"), F.col("buys") / F.col("n")).alias("carts_buys")).first()
    return {"in_taste": in_taste, "bought_seen_before": seen / buys.count(), "p_buys": corr["p_buys"],
            "carts_buys": corr["carts_buys"]}


def test_generated_users_have_tastes_repeat_visits_and_a_propensity(spark, tmp_path):
    events, truth = _generated(spark, tmp_path)
    shares = {r["event_type"]: r["count"] / events.count() for r in events.groupBy("event_type").count().collect()}
    assert 0.86 < shares["view"] < 0.92 and 0.04 < shares["cart"] < 0.07 and 0.015 < shares["purchase"] < 0.035
    assert 0.015 < shares["favourite"] < 0.04, shares

    humans = events.select("user_id").distinct().count()
    tastes = truth.where("kind = 'taste'").groupBy("user_id").agg(
        F.count(F.lit(1)).alias("n"), F.sum(F.col("raw_line").cast("double")).alias("w"))
    assert tastes.count() >= humans and tastes.where("n != 3 OR abs(w - 1) > 0.001").count() == 0
    assert truth.where("kind = 'propensity'").count() == tastes.count()
    props = truth.where("kind = 'propensity'").select(F.col("expected").cast("double").alias("p"))
    lo, hi, mean = props.agg(F.min("p"), F.max("p"), F.avg("p")).first()
    assert 0.2 <= lo and hi <= 4.0 and 0.85 < mean < 1.15

    on = _stats(events, truth)
    off = _stats(*_generated(spark, tmp_path, "generate.taste_share=0", "generate.revisit_share=0"))
    assert on["in_taste"] > 0.6 and off["in_taste"] < 0.2, (on, off)
    assert on["bought_seen_before"] > 1.5 * off["bought_seen_before"], (on, off)
    # the propensity shows in what a model can observe: purchase and cart rates follow it, with or without tastes
    assert on["p_buys"] > 0.3 and on["carts_buys"] > 0.2, on


def test_every_item_keeps_one_category_within_the_configured_count(spark, tmp_path):
    events, truth = _generated(spark, tmp_path, "generate.categories=7", "generate.events=5000")
    assert events.groupBy("item_id").agg(F.countDistinct("category_id").alias("c")).where("c > 1").count() == 0
    assert {r[0] for r in events.select("category_id").distinct().collect()} == {f"c{i}" for i in range(7)}
    liked = {r[0] for r in truth.where("kind = 'taste'").select("expected").distinct().collect()}
    assert liked <= {f"c{i}" for i in range(7)}
