"""Every adapter on real data: the public samples in ../shared/data (never copied into the project) and, for the
formats with no sample there (RetailRocket, REES46), hand-made lines in the publisher's documented layout.

Expectations are computed independently of Spark (pandas on the raw files) or taken from the samples' READMEs.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import pytest
from pyspark.sql import functions as F

from conftest import FIXTURES, job_args, settings_for
from jobs import clean as clean_job
from jobs import featurize as featurize_job
from jobs import ingest as ingest_job
from jobs import profiles as profile_job
from jobs import recommend as recommend_job
from jobs import sessionize as sessionize_job
from shopmine.io.delta import Lake

pytestmark = pytest.mark.slow  # every real sample through the jobs, and the Taobao histories through the models

SAMPLES = {
    "taobao": ["taobao_userbehavior/UserBehavior_2017-11-26_0100-0310.csv.gz"],
    "online_retail": ["uci_online_retail_sample/online_retail_sample.csv.gz"],
    "jdata": [f"jdata_2017_slices/JData_Action_2016{m}.csv.gz" for m in ("02", "03", "04")],
    "movielens": ["movielens_100k/u.data.gz"],
}


@pytest.fixture(scope="module")
def lake(spark, shared_data, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("real") / "lake")
    for fmt, files in SAMPLES.items():
        assert ingest_job.main(job_args(root) + ["--format", fmt, "--input", *[str(shared_data / f) for f in files]]) == 0
    assert ingest_job.main(job_args(root) + ["--format", "retailrocket", "--input", str(FIXTURES / "retailrocket_events.csv")]) == 0
    assert ingest_job.main(job_args(root) + ["--format", "rees46", "--input", str(FIXTURES / "rees46_events.csv")]) == 0
    assert clean_job.main(job_args(root)) == 0
    return Lake(spark, settings_for(root))


def silver_of(lake, fmt):
    return lake.read("silver.events").where(F.col("source") == fmt)


def quarantine_of(lake, fmt):
    return lake.read("silver.quarantine").where(F.col("source_format") == fmt)


def batch_of(lake, fmt):
    batch = lake.read("bronze.events_raw").where(F.col("source_format") == fmt).select("ingest_batch_id").first()[0]
    return lake.read("ops.clean_batches").where(F.col("ingest_batch_id") == batch).first()


def test_every_batch_reconciles(lake):
    for r in lake.read("ops.clean_batches").collect():
        assert r["rows_in"] == r["accepted"] + r["quarantined"] + r["duplicates_exact"] + r["duplicates_near"]


def test_taobao_time_slice(lake, shared_data):
    raw = pd.read_csv(shared_data / SAMPLES["taobao"][0], header=None, names=["u", "i", "c", "t", "ts"])
    rec = batch_of(lake, "taobao")
    assert rec["rows_in"] == len(raw) == 110_300
    assert rec["quarantined"] == 0
    silver = silver_of(lake, "taobao")
    assert silver.where("event_type = 'purchase'").count() == (raw.t == "buy").sum() == 2_493
    lo, hi = silver.agg(F.min("event_time"), F.max("event_time")).first()
    assert (lo, hi) == (datetime(2017, 11, 26, 1, 0, 0), datetime(2017, 11, 26, 3, 10, 11))
    # near duplicates are the same user/item/type within 2 s: count them independently with pandas
    s = raw.sort_values("ts", kind="stable")
    s = s[s.t != "buy"]
    gap = s.groupby(["u", "i", "t"]).ts.diff()
    assert rec["duplicates_near"] == int((gap <= 2).sum())


def test_online_retail_sample(lake, shared_data):
    rec = batch_of(lake, "online_retail")
    assert (rec["rows_in"], rec["duplicates_exact"], rec["quarantined"]) == (10_000, 255, 1)  # sample README
    q = quarantine_of(lake, "online_retail").first()
    assert (q["reason"], q["line_number"], q["detail"]) == ("invalid_price", 6916, "price '0.0' must be a number in (0, 1e+06]")
    assert q["source_file"].endswith("online_retail_sample.csv.gz")
    silver = silver_of(lake, "online_retail")
    assert silver.select("user_id").distinct().count() == 390
    assert silver.where(F.col("user_id").contains(".")).count() == 0  # 17850.0 -> 17850
    row = silver.where("session_id = '536365' AND item_id = '85123A'").first()
    assert (row["user_id"], row["quantity"], row["price"], row["event_time"]) == ("17850", 6, 2.55,
                                                                                 datetime(2010, 12, 1, 8, 26))


def test_jdata_slices(lake, shared_data):
    raw = pd.concat([pd.read_csv(shared_data / f) for f in SAMPLES["jdata"]])
    rec = batch_of(lake, "jdata")
    assert rec["rows_in"] == len(raw) == 89_997 and rec["quarantined"] == 0
    silver = silver_of(lake, "jdata")
    buys = raw[raw.type == 4]
    assert silver.where("event_type = 'purchase'").count() == len(buys.drop_duplicates(["user_id", "sku_id", "time"]))
    # China local time -> UTC: the first action, 2016-01-31 23:59:02 CST, is 15:59:02 UTC
    assert silver.agg(F.min("event_time")).first()[0] == datetime(2016, 1, 31, 15, 59, 2)
    assert silver.where(F.col("user_id").contains(".")).count() == 0  # 266079.0 -> 266079
    assert rec["duplicates_exact"] >= 23_870  # the README's count of exact duplicate rows (model_id is not kept)


def test_movielens_ratings_become_reviews(lake):
    rec = batch_of(lake, "movielens")
    assert (rec["rows_in"], rec["accepted"]) == (100_000, 100_000)
    silver = silver_of(lake, "movielens")
    ratings = {r[0]: r[1] for r in silver.groupBy("rating").count().collect()}
    assert ratings == {1.0: 6_110, 2.0: 11_370, 3.0: 27_145, 4.0: 34_174, 5.0: 21_201}
    assert silver.select("user_id").distinct().count() == 943
    assert silver.where("event_type != 'review'").count() == 0
    assert silver.agg(F.min("event_time")).first()[0] == datetime(1997, 9, 20, 3, 5, 10)


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).replace(tzinfo=None)


def test_retailrocket_layout(lake):
    got = {(r["user_id"], r["item_id"], r["event_type"], r["event_time"]) for r in silver_of(lake, "retailrocket").collect()}
    assert got == {("257597", "355908", "view", _utc(1433221332117)), ("992329", "248676", "view", _utc(1433224214164)),
                   ("111016", "318965", "cart", _utc(1433221999827)),
                   ("483717", "253185", "purchase", _utc(1433223236124))}
    q = quarantine_of(lake, "retailrocket").first()
    assert (q["reason"], q["line_number"]) == ("unknown_event_type", 6)


def test_rees46_layout(lake):
    rows = {r["event_type"]: r for r in silver_of(lake, "rees46").collect()}
    assert set(rows) == {"view", "cart", "remove_from_cart", "purchase"}
    p = rows["purchase"]
    assert (p["user_id"], p["item_id"], p["brand"], p["price"], p["category_id"], p["session_id"], p["event_time"]) == (
        "550050854", "1307067", "lenovo", 251.74, "2053013558920217191", "7c90fc70-0e80-4590-96f3-13c02c18c713",
        datetime(2019, 10, 1, 0, 0, 5))
    assert rows["remove_from_cart"]["brand"] is None


def test_taobao_complete_histories(spark, shared_data, tmp_path):
    """The 814-user file in a lake of its own (its users overlap the time slice above)."""
    root = str(tmp_path / "lake")
    path = shared_data / "taobao_userbehavior_814users" / "UserBehavior_first814users.csv.gz"
    assert ingest_job.main(job_args(root) + ["--format", "taobao", "--input", str(path)]) == 0
    assert clean_job.main(job_args(root)) == 0
    lake = Lake(spark, settings_for(root))
    rec = lake.read("ops.clean_batches").first()
    assert (rec["rows_in"], rec["quarantined"]) == (84_287, 0)
    silver = lake.read("silver.events")
    assert silver.select("user_id").distinct().count() == 814
    assert silver.where("event_type = 'purchase'").count() == 1_749
    assert silver.where("event_time < '2017-11-24 16:00:00'").count() == 35  # the README's pre-window events

    # Features and profiles on the real per-user histories, checked against pandas on the silver rows.
    for job in (sessionize_job, featurize_job, profile_job):
        assert job.main(job_args(root)) == 0
    ev = silver.select("user_id", "item_id", "event_type", "event_time", "is_bot").toPandas()
    ev["t"] = pd.to_datetime(ev["event_time"]).astype("int64") // 10**9
    ev = ev.sort_values(["user_id", "t"])
    day = ev["t"] // 86400
    gap = ev.groupby(["user_id", day])["t"].diff()
    sessions = int((gap.isna() | (gap > 30 * 60)).sum())  # Taobao has no session ids: 30-minute gaps, split at midnight
    assert lake.read("gold.sessions").count() == sessions
    assert lake.read("gold.sessions").where("from_source").count() == 0
    human = ev[~ev["is_bot"]]
    weights = {"view": 1, "favourite": 2, "cart": 3, "purchase": 5}
    as_of_end = (int(ev["t"].max()) // 86400 + 1) * 86400
    strength = (human["event_type"].map(weights) * 2.0 ** (-(as_of_end - human["t"]) / 86400 / 7)).sum()
    inter = lake.read("gold.interactions")
    assert inter.count() == len(human.groupby(["user_id", "item_id"]))
    assert inter.agg(F.sum("strength")).first()[0] == pytest.approx(strength, rel=1e-6)
    feats = lake.read("gold.user_features")
    assert feats.count() == 814 and feats.agg(F.sum("n_purchase")).first()[0] == 1_749
    profiles = lake.read("gold.user_profiles")
    assert profiles.count() == 814
    buyers = feats.where("n_purchase > 0").count()
    human_buyers = feats.where("n_purchase > 0 AND bot_score < 0.5").count()
    assert profiles.where("segment NOT IN ('browser', 'bot')").count() == human_buyers
    assert profiles.where("spending_power = 'none'").count() == 814 - buyers  # Taobao has no prices: buyers are 'low'
    assert {r[0] for r in profiles.select("lifecycle_stage").distinct().collect()} <= {"new", "active", "lapsing"}

    # Recommenders on the real histories, time split (last 2 days held out): every model is evaluated, the
    # re-visit baseline finds real re-visits, and the served lists never hold an item the user bought.
    assert recommend_job.main(job_args(root)) == 0
    got = {(r["model"], r["metric"]): r["value"] for r in lake.read("ops.model_metrics").where("k = 10").collect()}
    assert {m for m, _ in got} == {"popularity", "category_popularity", "revisit", "als", "item_cf", "item_cf_sim",
                                   "item_cf_sum", "ranker"}
    assert got[("revisit", "hit_rate")] > 0.3  # Taobao users come back to items they viewed
    recs = lake.read("gold.recs_topn")
    assert recs.select("user_id").distinct().count() > 700
    bought = lake.read("gold.interactions").where("n_purchase > 0").select("user_id", "item_id")
    assert recs.join(bought, ["user_id", "item_id"]).count() == 0
