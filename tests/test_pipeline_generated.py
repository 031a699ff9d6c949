"""End to end on generated data: every injected fault is caught with its reason, nothing else is quarantined,
duplicates and bots match the ground truth, counts reconcile, and reruns leave the tables identical.

The pipeline runs with a pseudonym key and an encryption key set (and made-up PII in the input), as production would:
the tests compare through the pseudonyms, check that no raw id or PII value reaches silver, gold or bi, and end with a
data-subject lookup and erasure."""

from __future__ import annotations

import gzip
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from conftest import ARTIFACTS, job_args, settings_for
from jobs import clean as clean_job
from jobs import generate as generate_job
from jobs import pipeline
from shopmine.io.delta import Lake
from shopmine.governance.privacy import Privacy
from shopmine.conf import RankerConf
from shopmine.recsys.ranker import feature_names
from shopmine.registry import pipeline_steps

pytestmark = pytest.mark.slow  # the whole pipeline on a generated lake

SIZE = ["generate.events=15000", "generate.users=400", "generate.items=700", "generate.files=2",
        "generate.malformed_share=0.02", "generate.bot_share=0.02", "generate.pii=true",
        "privacy.pii.email=encrypt", "privacy.dp.seed=5",
        "predict.lr.reg_param=[0.01]", "predict.cnn.epochs=2", "predict.cnn.compare=[]"]
KEYS = {"SHOPMINE_PSEUDONYM_KEY": os.urandom(32).hex(), "SHOPMINE_PII_KEY": os.urandom(32).hex()}


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        for k, v in KEYS.items():
            mp.setenv(k, v)
        root = str(tmp_path_factory.mktemp("generated") / "lake")
        assert pipeline.main(job_args(root, *SIZE)) == 0
        yield Lake(spark, settings_for(root, *SIZE))


@pytest.fixture(scope="module")
def privacy(lake):
    with pytest.MonkeyPatch.context() as mp:
        for k, v in KEYS.items():
            mp.setenv(k, v)
        p = Privacy.from_settings(settings_for(lake.root, *SIZE))
    assert p.pseudonymising and p.seal_quarantine
    return p


@pytest.fixture
def keys(monkeypatch):
    for k, v in KEYS.items():
        monkeypatch.setenv(k, v)


def test_every_injected_fault_is_quarantined_with_its_reason(lake, privacy):
    truth = lake.read("ops.generator_truth").where("kind = 'malformed'") \
        .groupBy(F.col("raw_line").alias("raw"), F.col("expected").alias("reason")).count()
    # the quarantine seals raw lines (they hold raw ids and PII); with the key they open to the very lines
    got = lake.read("silver.quarantine").groupBy(privacy.unseal(F.col("raw_record")).alias("raw"), "reason").count()
    assert truth.select("reason").distinct().count() == 15  # every malformed class was injected
    assert_df_equality(got, truth, ignore_row_order=True, ignore_nullable=True)


def test_duplicates_and_reconciliation_match_the_truth(lake):
    truth = {r[0]: r[1] for r in lake.read("ops.generator_truth").groupBy("kind").count().collect()}
    rec = lake.read("ops.clean_batches").first()
    assert rec["duplicates_exact"] == truth["duplicate_exact"]
    # Near duplicates: every injected one, plus at most a handful of natural ones (two overlapping sessions of one
    # user viewing the same popular item within the window).
    assert truth["duplicate_near"] <= rec["duplicates_near"] <= truth["duplicate_near"] + rec["rows_in"] // 2000
    assert rec["quarantined"] == truth["malformed"]
    assert rec["rows_in"] == rec["accepted"] + rec["quarantined"] + rec["duplicates_exact"] + rec["duplicates_near"]
    assert rec["accepted"] == lake.read("silver.events").count()
    # rows in = data lines of the files written (CSV headers are not data)
    folder = Path(lake.root) / "raw" / "generated"
    lines = 0
    for f in sorted(folder.glob("*/part-*.gz")):
        with gzip.open(f, "rb") as fh:
            lines += sum(1 for _ in fh) - (1 if f.name.endswith(".csv.gz") else 0)
    assert rec["rows_in"] == lines


def test_bots_found_are_exactly_the_injected_bots(lake, privacy):
    truth = {privacy.pseudonym(r[0]) for r in
             lake.read("ops.generator_truth").where("kind = 'bot'").select("user_id").collect()}
    flagged = {r[0] for r in lake.read("silver.events").where("is_bot").select("user_id").distinct().collect()}
    assert truth and flagged == truth


def test_monitor_checks_the_clean_run_and_records_the_baseline(lake):
    rec = lake.read("ops.clean_batches").first()
    checks = {r["check_name"]: r for r in lake.read("ops.data_quality").where("subject NOT LIKE '%: %'").collect()}
    assert checks["quarantine_share"]["value"] == pytest.approx(rec["quarantined"] / rec["rows_in"], abs=1e-6)
    dups = rec["duplicates_exact"] + rec["duplicates_near"]
    assert checks["duplicate_share"]["value"] == pytest.approx(dups / rec["rows_in"], abs=1e-6)
    bots = lake.read("silver.events").where("is_bot").count() / rec["accepted"]
    assert checks["bot_share"]["value"] == pytest.approx(bots, abs=1e-6)
    assert {r["status"] for r in lake.read("ops.data_quality").collect()} <= {"pass", "skipped"}
    assert not lake.exists("ops.drift")  # one monitor run so far: the baseline


def test_risk_finds_every_injected_bot(lake):
    metrics = lake.read("ops.model_metrics").where("job = 'risk' AND split = 'generator_truth'")
    m = {(r["model"], r["metric"]): r["value"] for r in metrics.collect()}
    truth = lake.read("ops.generator_truth").where("kind = 'bot'").select("user_id").distinct().count()
    assert m[("risk.bot", "true_bots")] == truth > 0
    assert m[("risk.bot", "precision")] == 1.0 and m[("risk.bot", "recall")] == 1.0
    assert m[("risk.scraper", "recall")] == 1.0  # the generator's bots crawl in 400-view sessions
    assert m[("risk.any", "recall")] == 1.0
    flags = lake.read("gold.risk_flags")
    assert flags.where("size(reasons) = 0").count() == 0  # every flag says why
    bots = {r[0] for r in flags.where("flag = 'bot'").select("user_id").collect()}
    assert bots == {r[0] for r in lake.read("silver.events").where("is_bot").select("user_id").distinct().collect()}


def test_campaign_targets_meet_their_conditions(lake):
    targets = lake.read("gold.campaign_targets")
    assert targets.count() > 0
    profiles = lake.read("gold.user_profiles")
    features = lake.read("gold.user_features").select("user_id", "n_cart", "n_view")
    joined = targets.join(profiles.select("user_id", "cart_abandonment", "is_bot", F.col("segment").alias("seg"))
                          .join(features, "user_id"), "user_id")
    abandoners = joined.where("campaign = 'cart_abandoners'")
    assert abandoners.where("cart_abandonment < 0.5 OR n_cart = 0 OR propensity < 0.3").count() == 0
    assert joined.where("campaign = 'loyal_upsell' AND seg NOT IN ('champions', 'loyal')").count() == 0
    assert joined.where("is_bot").count() == 0
    flagged = lake.read("gold.risk_flags").where("flag IN ('bot', 'scraper', 'click_farming')").select("user_id")
    assert targets.join(flagged, "user_id").count() == 0
    scores = lake.read("gold.propensity_scores").where("task = 'purchase' AND model = 'lr'")
    assert targets.join(scores, (targets.user_id == scores.user_id) & (targets.propensity != scores.score)).count() == 0


def test_demand_forecast_and_backtest(lake):
    forecast = lake.read("gold.demand_forecast")
    categories = forecast.select("category_id").distinct().count()
    assert categories > 10 and forecast.count() == categories * 7
    assert forecast.groupBy("category_id").agg(F.countDistinct("forecast_date").alias("n")).where("n != 7").count() == 0
    metrics = {(r["model"], r["metric"]): r["value"] for r in
               lake.read("ops.model_metrics").where("job = 'demand'").collect()}
    assert {m for m, _ in metrics} == {"demand.seasonal_trend", "demand.seasonal_naive"}
    assert metrics[("demand.seasonal_trend", "category_days")] == categories * 3
    shares = lake.read("gold.purchase_patterns").groupBy("category_id").agg(F.sum("share").alias("s")).collect()
    assert all(abs(r["s"] - 1) < 1e-4 for r in shares)


def test_silver_schema_and_funnel(lake):
    silver = lake.read("silver.events")
    assert silver.schema["event_time"].dataType.simpleString() == "timestamp"
    mix = {r[0]: r[1] for r in silver.where("NOT is_bot").groupBy("event_type").count().collect()}
    total = sum(mix.values())
    assert 0.80 < mix["view"] / total < 0.92
    assert 0.01 < mix["purchase"] / total < 0.04 and mix["cart"] > mix["purchase"]
    # every purchase follows a view of the same item in the same session (the funnel), except in sessions where a
    # malformed line was injected (that view may be the quarantined line); generated event ids are e<session*1000+j>
    faulty = lake.read("ops.generator_truth").where("kind = 'malformed' AND event_id IS NOT NULL").select(
        F.concat(F.lit("s"), F.floor(F.substring("event_id", 2, 20).cast("long") / 1000).cast("string")).alias("session_id"))
    purchases = silver.where("event_type = 'purchase'").select("session_id", "item_id", "event_time") \
        .join(faulty, "session_id", "left_anti")
    assert purchases.count() > 50
    views = silver.where("event_type = 'view'").select("session_id", "item_id", F.col("event_time").alias("vt"))
    orphans = purchases.join(views, ["session_id", "item_id"], "left") \
        .groupBy("session_id", "item_id", "event_time").agg(F.min("vt").alias("vt")).where("vt IS NULL OR vt > event_time")
    assert orphans.count() == 0


def _snapshot(lake, name, key):
    return lake.read(name).orderBy(*key)


def test_every_run_reads_and_writes_what_the_job_registry_declares(lake):
    """ops.runs records the versions each run read (``ctx.read``) and wrote (every write through the Lake records
    itself): they stay within the job's JobSpec, and each step's first run in the pipeline wrote every table its
    spec declares, so the generated lineage tables in README.md and docs/jobs.md say what the code does."""
    from shopmine.registry import EVERY_TABLE, job

    first = {}  # each job's first run that did its work (a no-op writes nothing)
    for r in lake.read("ops.runs").where("status IN ('ok', 'noop')").orderBy("started_at").collect():
        spec = job(r["job"])
        for recorded, declared in ((r["input_versions"], spec.reads), (r["output_versions"], spec.writes)):
            if declared != (EVERY_TABLE,):
                assert set(recorded) <= set(declared), (spec.name, sorted(set(recorded) - set(declared)))
        if r["status"] == "ok":
            first.setdefault(spec.name, r)
    # feedback has nothing to measure in one pipeline run (no events after the lists); tests/test_feedback.py writes
    assert set(first) >= {s.name for s in pipeline_steps()} - {"feedback"}
    # ops.drift compares a table with the version the previous monitor run read: the first monitor run has none
    later = {"monitor": {"ops.drift"}}
    for spec in pipeline_steps():
        if spec.name in first:
            missing = set(spec.writes) - set(first[spec.name]["output_versions"])
            assert missing <= later.get(spec.name, set()), (spec.name, sorted(missing))


def test_reruns_leave_tables_identical(lake, spark, keys):
    names = ["bronze.events_raw", "silver.events", "silver.quarantine", "ops.clean_batches", "ops.generator_truth"]
    versions = {n: lake.version(n) for n in names}
    before = {
        "silver.events": lake.read("silver.events").drop("ingest_batch_id"),
        "silver.quarantine": lake.read("silver.quarantine"),
    }
    before = {k: spark.createDataFrame(v.collect(), v.schema) for k, v in before.items()}  # small test tables
    args = job_args(lake.root, *SIZE)
    # the whole pipeline again: generate, ingest and clean are no-ops and commit nothing
    assert pipeline.main(args) == 0
    assert {n: lake.version(n) for n in names} == versions
    steps = pipeline_steps()
    statuses = lake.read("ops.runs").orderBy(F.desc("started_at")).limit(len(steps) + 1).select("job", "status")
    assert {(r[0], r[1]) for r in statuses.collect()} == {("pipeline", "ok")} | {(j.name, "noop") for j in steps}
    # re-cleaning every batch replaces the rows with identical ones
    assert clean_job.main(args + ["--all"]) == 0
    assert lake.version("silver.events") > versions["silver.events"]
    assert_df_equality(lake.read("silver.events").drop("ingest_batch_id"), before["silver.events"],
                       ignore_row_order=True, ignore_nullable=True)
    assert_df_equality(lake.read("silver.quarantine"), before["silver.quarantine"], ignore_row_order=True,
                       ignore_nullable=True)
    assert lake.read("ops.clean_batches").count() == 1


def test_generator_is_deterministic(spark, lake, tmp_path):
    from shopmine.etl.generate import generate

    settings = settings_for(lake.root, *SIZE)
    a = generate(spark, settings.generate).truth
    b = generate(spark, settings.generate).truth
    assert_df_equality(a, b, ignore_row_order=True)
    assert_df_equality(a, lake.read("ops.generator_truth"), ignore_row_order=True, ignore_nullable=True)
    other = generate(spark, settings_for(lake.root, *SIZE, "generate.seed=7").generate).truth
    assert other.exceptAll(a).count() > 0
    assert generate_job.main(job_args(lake.root, *SIZE)) == 0  # same conf: no-op


def test_silver_tables_read_without_spark(lake, privacy):
    import duckdb
    from deltalake import DeltaTable

    events = DeltaTable(lake.path("silver.events")).to_pyarrow_dataset()  # noqa: F841 - DuckDB finds it by name
    n = duckdb.sql("select count(*) from events").fetchall()[0][0]
    assert n == lake.read("silver.events").count()
    quarantine = DeltaTable(lake.path("silver.quarantine")).to_pyarrow_table()
    assert quarantine.num_rows == lake.read("silver.quarantine").count()
    opened = lake.read("silver.quarantine").select(privacy.unseal(F.col("raw_record"))).collect()
    assert any("\ufffd" in r[0] for r in opened)  # repaired invalid UTF-8 (sealed, so opened by Spark)


def test_recommendations_evaluated_and_served(lake):
    metrics = lake.read("ops.model_metrics").where("job = 'recommend'")
    models = ["popularity", "category_popularity", "revisit", "als", "item_cf", "item_cf_sim", "item_cf_sum", "ranker"]
    per_metric = {"precision", "recall", "ndcg", "map", "hit_rate", "coverage", "novelty", "diversity"}
    got = {(r["model"], r["k"], r["metric"]): r["value"] for r in metrics.collect()}
    assert set(got) == {(m, k, x) for m in models for k in (10, 20) for x in per_metric} | {
        ("ranker", 210, "candidate_recall")}  # 100 + 50 + 30 + 30 candidates per user at most
    ranker = json.loads(metrics.where("model = 'ranker'").first()["details"])
    assert ranker["training_rows"] > ranker["positives"] > 0 and len(ranker["cutoffs"]) == 4
    assert set(ranker["sources_alone"]) == {"revisit", "covisit", "category_popularity", "popularity"}
    importances = lake.read("ops.model_explanations").where("task = 'recommend' AND model = 'ranker'")
    inputs = feature_names(RankerConf())  # the default sources: no ALS inputs
    assert sorted(r["feature"] for r in importances.collect()) == sorted(inputs)
    assert importances.agg(F.sum("value")).first()[0] == pytest.approx(1.0)
    assert all(0 <= v <= 1 for (_, _, x), v in got.items() if x not in ("novelty",))
    best = max(models, key=lambda m: (got[(m, 10, "ndcg")], -models.index(m)))
    served = {r[0] for r in metrics.where("get_json_object(details, '$.served') = 'true'").select("model").collect()}
    assert served == {best}
    recs = lake.read("gold.recs_topn")
    assert {r[0] for r in recs.select("model").distinct().collect()} == {best}
    ranks = recs.groupBy("user_id").agg(F.count(F.lit(1)).alias("n"), F.max("rank").alias("top"),
                                        F.countDistinct("item_id").alias("items"))
    assert ranks.where("n <> top OR n <> items OR n > 20").count() == 0  # ranks 1..n, no repeated item
    bought = lake.read("gold.interactions").where("n_purchase > 0").select("user_id", "item_id")
    assert recs.join(bought, ["user_id", "item_id"]).count() == 0  # bought items are never recommended
    nb = lake.read("gold.item_neighbours")
    assert nb.where("item_id = neighbour_id OR rank > 50").count() == 0
    assert nb.groupBy("item_id").count().where("count > 50").count() == 0
    from deltalake import DeltaTable

    for name in ("gold.recs_topn", "gold.item_neighbours", "ops.model_metrics"):
        assert DeltaTable(lake.path(name)).to_pyarrow_table().num_rows == lake.read(name).count()


def test_behaviour_models_evaluated_explained_and_served(lake, spark):
    from pyspark.ml import PipelineModel

    from shopmine.predict import mllib
    from shopmine.predict.datasets import PAIR_INPUTS

    metrics = lake.read("ops.model_metrics").where("job IN ('train-predict', 'train-cnn')")
    got = {(r["model"], r["metric"]): r["value"] for r in metrics.collect()}
    for model in ("majority", "lr", "nb_multinomial", "nb_bernoulli", "gbt", "past_purchases", "recency",
                  "carted_not_bought", "served"):
        assert 0 <= got[(f"purchase.{model}", "accuracy")] <= 1
        assert got[(f"purchase.{model}", "log_loss")] > 0
    assert 0 <= got[("purchase.lr", "roc_auc")] <= 1  # the signal itself is tested on data built to have one
    assert {("next_category.majority", "accuracy"), ("next_category.cnn_adam_ce", "accuracy")} <= set(got)
    details = json.loads(metrics.where("model = 'purchase.lr' AND metric = 'f1'").first()["details"])
    assert 0 < details["threshold"] < 1
    assert sum(details["confusion"].values()) == details["test_rows"] == got[("purchase.lr", "rows")]

    scores = lake.read("gold.propensity_scores")
    users = lake.read("gold.user_features").where("bot_score < 0.5").count()
    per_user = scores.where("task = 'purchase' AND model = 'lr'")
    assert per_user.count() == per_user.select("user_id").distinct().count() == users
    assert scores.where("score < 0 OR score > 1 OR predicted <> (score >= threshold)").count() == 0
    pairs = scores.where("task = 'item_purchase' AND model = 'lr'").select("user_id", "item_id")
    touched = lake.read("gold.interactions").join(lake.read("gold.user_features").where("bot_score < 0.5"),
                                                   "user_id").select("user_id", "item_id")
    assert pairs.count() == touched.count() > 0 and pairs.exceptAll(touched).count() == 0  # every touched pair
    served = json.loads(metrics.where("model = 'purchase.served' AND metric = 'roc_auc'").first()["details"])
    assert served["served"] in served["candidates"] and got[("purchase.served", "roc_auc")] == \
        got[(f"purchase.{served['served']}", "roc_auc")]
    assert scores.where("task = 'purchase' AND model = 'served'").count() == users
    # every score of a model carries its reasons (at most three input names); the most likely buyers have some
    modelled = scores.where("model IN ('lr', 'gbt', 'nb_multinomial', 'nb_bernoulli')")
    assert modelled.where("reasons IS NULL OR size(reasons) > 3").count() == 0
    top = per_user.orderBy(F.desc("score")).limit(20).collect()
    assert sum(len(r["reasons"]) > 0 for r in top) >= 18, top[:3]

    cnn = lake.read("gold.behaviour_predictions").where("model = 'cnn_adam_ce'")
    assert cnn.count() == users
    assert cnn.where("size(probabilities) <> 10 OR abs(aggregate(probabilities, 0D, (a, x) -> a + x) - 1) > 1e-4"
                     ).count() == 0
    explained = lake.read("ops.model_explanations").where("model = 'lr' AND task = 'purchase'")
    assert explained.where("feature = 'log1p_n_events' OR feature LIKE 'log1p_%'").count() > 0
    path = lake.read("ops.artifacts").where("kind = 'purchase_lr'").first()["path"]
    assert mllib.model_stage(PipelineModel.load(path)).numFeatures > 20
    gbt = lake.read("ops.model_explanations").where("model = 'gbt' AND task = 'item_purchase'")
    assert gbt.where("kind = 'gbt_importance' AND feature LIKE 'p_%'").count() == len(PAIR_INPUTS)


def test_every_table_reads_the_same_without_spark_through_the_bi_recipe(lake):
    from deltalake import DeltaTable

    from shopmine.surfaces import bi
    from shopmine.io.tables import TABLES

    names = bi.tables(lake.root)
    assert set(names) == {n for n in TABLES if lake.exists(n)}
    assert {"gold.user_profiles", "gold.recs_topn", "gold.propensity_scores", "gold.behaviour_predictions"} <= set(names)
    for name in names:
        rows = lake.read(name).count()
        assert bi.arrow(lake.root, name).count_rows() == rows, name
        assert bi.polars(lake.root, name).select(pl.len()).collect().item() == rows, name
        assert bi.duckdb(lake.root, f"SELECT count(*) FROM {name}").fetchall()[0][0] == rows, name
        d = bi.describe(lake.root, name)
        assert d["rows"] == rows and d["reader"] == 1 and d["features"] == [], d  # any Delta reader can open it
    # a join across layers in DuckDB, as a BI tool would write it
    top = bi.duckdb(lake.root, "SELECT p.segment, count(*) AS n FROM gold.recs_topn r JOIN gold.user_profiles p "
                               "USING (user_id) GROUP BY 1 ORDER BY n DESC").fetchall()
    assert sum(n for _, n in top) == lake.read("gold.recs_topn").count()
    # time travel, by version and by time: ops.runs gains a row per job run, so every version differs
    runs = lake.path("ops.runs")
    history = sorted(DeltaTable(runs).history(), key=lambda h: h["version"])
    v = history[len(history) // 2]["version"]
    expected = lake.read("ops.runs", v).count()
    assert 0 < expected < lake.read("ops.runs").count()
    assert bi.arrow(lake.root, "ops.runs", version=v).count_rows() == expected
    assert bi.polars(lake.root, "ops.runs", version=v).select(pl.len()).collect().item() == expected
    assert bi.duckdb(lake.root, "SELECT count(*) FROM ops.runs", version=v).fetchall()[0][0] == expected
    # halfway between commits v and v + 1 (delta-rs dates a commit by its log file's time, Spark by commitInfo's)
    at = datetime.fromtimestamp((history[v]["timestamp"] + history[v + 1]["timestamp"]) / 2000, tz=timezone.utc)
    assert bi.delta_table(lake.root, "ops.runs", as_of=at).version() == v


def test_training_runs_are_tracked_in_mlflow(lake):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{lake.root}/mlflow.db")
    for job in ("recommend", "train-predict", "train-cnn"):
        run_id = lake.read("ops.runs").where(f"job = '{job}' AND status = 'ok'").orderBy(F.desc("started_at")).first()[0]
        models = {r[0] for r in lake.read("ops.model_metrics").where(f"run_id = '{run_id}'").select("model").collect()}
        runs = mlflow.search_runs(experiment_names=["shopmine"], output_format="list",
                                  filter_string=f"tags.`shopmine.run_id` = '{run_id}'")
        nested = {r.info.run_name: r for r in runs if "mlflow.parentRunId" in r.data.tags}
        assert set(nested) == models, job
        assert len(runs) == len(models) + 1
    # train-predict's purchase.lr: the same metrics as ops.model_metrics, and the saved Spark ML model
    run_id = lake.read("ops.runs").where("job = 'train-predict' AND status = 'ok'").orderBy(F.desc("started_at")).first()[0]
    (lr,) = mlflow.search_runs(experiment_names=["shopmine"], output_format="list", filter_string=(
        f"tags.`shopmine.run_id` = '{run_id}' AND tags.`shopmine.model` = 'purchase.lr'"))
    expected = {m["metric"]: m["value"] for m in lake.read("ops.model_metrics").where(
        f"run_id = '{run_id}' AND model = 'purchase.lr'").collect()}
    assert lr.data.metrics == pytest.approx(expected)
    files = {f.path for f in mlflow.MlflowClient().list_artifacts(lr.info.run_id, "models/purchase_lr")}
    assert "models/purchase_lr/stages" in files


def test_report_panels_agree_with_the_tables(lake):
    from shopmine.surfaces.report import build

    panels = {p.key: p for p in build(lake).panels}
    assert all(p.figure is not None for p in panels.values()), \
        {k: p.missing for k, p in panels.items() if p.figure is None}
    checks = panels["monitor"].figure.data[0]  # the table of the monitor run's checks
    assert list(checks.cells.values[0]) == sorted(r[0] for r in lake.read("ops.data_quality").select("check_name").collect())
    sessions = lake.read("gold.sessions").where("NOT is_bot")
    reached = {s: sessions.where(F.col("funnel_step").isin(["view", "favourite", "cart", "purchase"][i:])).count()
               for i, s in enumerate(["view", "favourite", "cart", "purchase"])}
    assert list(panels["funnel"].figure.data[0].x) == [reached[s] for s in ("view", "favourite", "cart", "purchase")]
    assert sum(panels["sessions"].figure.data[0].y) == sessions.count()
    pie = panels["quality"].figure.data[0]
    assert sum(pie.values) == lake.read("ops.clean_batches").agg(F.sum("rows_in")).first()[0]
    assert all(row[0] == 1.0 for row in panels["retention"].figure.data[0].z)  # week +0 is the cohort itself
    segments = sum(sum(t.y) for t in panels["segments"].figure.data)
    assert segments == lake.read("gold.user_profiles").count()
    roc = [t for t in panels["roc"].figure.data if t.name != "chance"]
    assert {t.name.split(" ")[0] for t in roc} == {"lr", "nb_multinomial", "nb_bernoulli", "gbt", "past_purchases",
                                                   "recency", "carted_not_bought", "served"}
    assert all(t.x[0] == 0 and t.x[-1] == 1 for t in roc)


def test_report_renders_every_chart_in_chromium(lake, chromium):
    import re
    import subprocess
    import tempfile

    page = Path(lake.root) / "reports" / "report.html"
    assert page.is_file() and "cdn.plot.ly" not in page.read_text()[:200_000]  # plotly.js inlined: works offline
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}", "--virtual-time-budget=30000"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180).stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    attrs = dict(re.findall(r'data-([a-z]+)="([^"]*)"', body.group(1)))
    assert attrs.get("done") == "1", attrs
    assert attrs["errors"] in ("[]", "&quot;[]&quot;") or json.loads(attrs["errors"].replace("&quot;", '"')) == []
    assert int(attrs["charts"]) == 13 and attrs["rendered"] == attrs["charts"], attrs
    shot = ARTIFACTS / "report.png"
    ARTIFACTS.mkdir(exist_ok=True)
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1280,4000", page.as_uri()], capture_output=True,
                   timeout=180, check=True)
    assert shot.stat().st_size > 50_000  # a real page, saved as a test artefact


# -- privacy (these run last: the final test erases a user) ------------------------------------------------------------

PII = r"shopper\d+@mail\.example\.com|\+44 7700 \d{6}|\b10\.\d{1,3}\.\d{1,3}\.\d{1,3}\b"
RAW_ID = r'"u\d+"'  # the generator's raw ids, as a whole JSON string value


def test_no_raw_id_or_pii_value_reaches_silver_gold_or_bi(lake, privacy):
    from shopmine.io.tables import TABLES

    bronze = lake.read("bronze.events_raw")
    assert bronze.where(F.col("raw_line").rlike(PII)).count() > 1000  # the input carries PII: the grep can see it
    assert bronze.where(F.col("raw_line").rlike(",u\\d+,")).count() > 1000  # ... and raw ids
    checked = []
    for name in TABLES:
        if name.split(".")[0] not in ("silver", "gold", "bi") or not lake.exists(name):
            continue
        df = lake.read(name)
        text = F.to_json(F.struct(*[c for c, t in df.dtypes if t != "binary"]))
        assert df.where(text.rlike(PII) | text.rlike(RAW_ID)).count() == 0, name
        if "user_id" in df.columns:
            assert df.where(~F.col("user_id").rlike("^[0-9a-f]{32}$")).count() == 0, name
        checked.append(name)
    assert {"silver.events", "silver.quarantine", "gold.sessions", "gold.user_profiles", "gold.recs_topn",
            "gold.propensity_scores", "gold.risk_flags", "gold.campaign_targets", "bi.daily_category_activity",
            "bi.segment_summary"} <= set(checked)
    # the sealed email opens, with the key, to the generated email of the user behind the pseudonym
    row = lake.read("silver.events").where("pii_sealed IS NOT NULL") \
        .select("user_id", privacy.unseal(F.col("pii_sealed")).alias("pii")).first()
    pii = json.loads(row["pii"])
    assert set(pii) == {"email"}  # phone and IP were dropped (privacy.pii)
    n = pii["email"].removeprefix("shopper").split("@")[0]
    assert privacy.pseudonym(f"u{n}") == row["user_id"]


def test_dp_aggregates_stay_within_their_stated_error(lake):
    from shopmine.features.profiles import SEGMENTS
    from shopmine.governance.privacy import category_cells

    conf = settings_for(lake.root, *SIZE).privacy.dp
    truth = {(r[0], r[1]): r for r in category_cells(
        lake.read("silver.events"), lake.read("gold.item_features").where("category_id IS NOT NULL"),
        conf.daily_category_activity, conf.seed).collect()}  # days x categories: small
    released = lake.read("bi.daily_category_activity").collect()
    assert len(released) == len(truth) > 500
    for measure, col in (("visitors", "v"), ("buyers", "b"), ("revenue", "r")):
        ok = sum(abs(r[measure] - truth[(r["event_date"], r["category_id"])][col]) <= r[f"{measure}_error"]
                 for r in released)
        assert ok / len(released) >= 0.9, measure  # 95 % promised
    assert all(r["epsilon"] == conf.daily_category_activity.epsilon for r in released)
    segments = lake.read("bi.segment_summary")
    assert {r[0] for r in segments.select("segment").collect()} == set(SEGMENTS)


def test_lookup_and_forget_a_user(lake, privacy, keys, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs import forget_user, lookup_user
    from shopmine.io.tables import TABLES

    # a user with a line whose user id the generator blanked or garbled: that line still carries their email
    humans = {r[0] for r in lake.read("gold.user_profiles").where("segment NOT IN ('bot', 'browser')")
              .select("user_id").collect()}  # 400 users
    garbled = lake.read("ops.generator_truth").where("expected IN ('missing_user', 'invalid_user_id')") \
        .where(F.col("raw_line").contains("@")).select("user_id", "raw_line").orderBy("user_id", "raw_line").collect()
    raw, pseudo, lost = next((r[0], privacy.pseudonym(r[0]), r[1]) for r in garbled if privacy.pseudonym(r[0]) in humans)
    email = f"shopper{raw[1:]}@mail.example.com"
    args = job_args(lake.root, *SIZE)
    out = tmp_path / "lookup.json"
    assert lookup_user.main(args + ["--user", raw, "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    in_silver = lake.read("silver.events").where(F.col("user_id") == pseudo).count()
    assert doc["rows"]["silver.events"] == in_silver > 0
    assert doc["rows"]["bronze.events_raw"] >= in_silver  # plus the user's duplicate and quarantined lines
    assert {"gold.user_profiles", "gold.user_features", "gold.interactions", "gold.recs_topn"} <= set(doc["rows"])
    assert any(email in (r.get("pii_sealed") or "") for r in doc["tables"]["silver.events"])  # opened for the user
    assert lost in {r["raw_line"] for r in doc["tables"]["bronze.events_raw"]}  # found by its email
    holding = [n for n in TABLES if lake.exists(n) and n in doc["rows"]]

    assert forget_user.main(args + ["--user", raw, "--conf", "privacy.erasure.vacuum_retention_hours=0"]) == 0
    for name in TABLES:
        if lake.exists(name) and "user_id" in lake.read(name).columns:
            assert lake.read(name).where(F.col("user_id").isin(pseudo, raw)).count() == 0, name
    assert lake.read("bronze.events_raw").where(F.col("raw_line").contains(email)).count() == 0
    audit = lake.read("ops.erasures").collect()
    assert len(audit) == 1 and audit[0]["vacuumed"] and set(audit[0]["rows_deleted"]) == set(holding)
    assert audit[0]["rows_deleted"]["silver.events"] == in_silver
    assert raw not in json.dumps(audit[0].asDict(), default=str) and pseudo not in json.dumps(
        audit[0].asDict(), default=str)
    # after VACUUM no data file of any table, current or old, holds the user
    files = [p for p in Path(lake.root).rglob("*.parquet") if "_delta_log" not in p.parts]
    assert len(files) > 50
    for path in files:
        for column in pq.read_table(path).columns:
            if str(column.type) not in ("string", "large_string"):
                continue
            # bronze keeps raw bytes verbatim (the generator's invalid UTF-8 included): compare as bytes, decoded leniently
            values = [v.decode("utf-8", "replace") for v in column.cast(pa.binary()).to_pylist() if v]
            assert not any(v in (pseudo, raw) or email in v or v.startswith(pseudo + ":") for v in values), path
    # the lookup now finds nothing, and the next pipeline run retrains on the remaining users
    assert lookup_user.main(args + ["--user", raw, "--out", str(out)]) == 0
    assert json.loads(out.read_text())["rows"] == {}
