"""Feature jobs end to end on generated data: a daily run recomputes only the dates that received events and
matches a full rebuild and a backfill exactly; reruns change nothing; every gold table is readable without Spark."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest
from chispa import assert_df_equality
from deltalake import DeltaTable
from pyspark.ml.functions import vector_to_array
from pyspark.sql import functions as F

from conftest import job_args, settings_for
from jobs import clean, featurize, generate, ingest, profiles, sessionize
from shopmine.features.pipeline import load_feature_pipeline, vector_names
from shopmine.io.delta import Lake

pytestmark = pytest.mark.slow  # incremental, backfill and full feature runs on a generated lake

SIZE = ["generate.events=6000", "generate.users=200", "generate.items=300", "generate.files=2", "generate.days=6",
        "generate.bot_share=0.02"]
GOLD = ["gold.sessions", "gold.interactions_daily", "gold.user_daily", "gold.interactions", "gold.user_features",
        "gold.item_features", "gold.category_features", "gold.user_profiles"]  # the tables the feature jobs write
DERIVED = [n for n in GOLD if n != "gold.user_profiles"]
# A late file: events on a day already featurized (2025-11-02) and on a new day (2025-11-09), from two new users.
LATE = """event_id,event_time,user_id,session_id,event_type,item_id,category_id,brand,price,quantity,search_query,rating
late1,2025-11-02T10:00:00Z,late_buyer,,view,i1,c1,b1,9.5,,,
late2,2025-11-02T10:01:00Z,late_buyer,,cart,i1,c1,b1,9.5,1,,
late3,2025-11-02T10:03:00Z,late_buyer,,purchase,i1,c1,b1,9.5,2,,
late4,2025-11-09T08:00:00Z,newcomer,,view,i2,c1,b1,20.0,,,
late5,2025-11-09T08:00:30Z,newcomer,,view,i3,c2,b2,30.0,,,
"""


def run(main, root, *extra):
    assert main(job_args(root, *SIZE) + list(extra)) == 0


def features(root):
    for job in (sessionize, featurize, profiles):
        run(job.main, root)


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    base = tmp_path_factory.mktemp("features")
    root = str(base / "lake")
    run(generate.main, root)
    run(ingest.main, root, "--format", "canonical", "--input", f"{root}/raw/generated/csv", f"{root}/raw/generated/json")
    run(clean.main, root)
    features(root)
    late = base / "late.csv"
    late.write_text(LATE)
    run(ingest.main, root, "--format", "canonical", "--input", str(late))
    run(clean.main, root)
    features(root)
    return Lake(spark, settings_for(root, *SIZE))


def last_run(lake, job):
    return lake.read("ops.runs").where(F.col("job") == job).orderBy(F.desc("started_at")).first()


def snapshot(lake):
    return {name: lake.read(name, version=lake.version(name)) for name in DERIVED}


def assert_same_tables(lake, before):
    for name, old in before.items():
        assert_df_equality(lake.read(name), old, ignore_row_order=True, ignore_nullable=True)


def test_daily_run_recomputed_only_the_dates_with_new_events(lake):
    for job in ("sessionize", "featurize"):
        r = last_run(lake, job)
        assert r["status"] == "ok" and r["counts"]["dates"] == 2  # 2025-11-02 and 2025-11-09
    assert lake.read("gold.sessions").where("session_date = DATE'2025-11-09'").count() == 1
    bought = lake.read("gold.interactions").where("user_id = 'late_buyer'").first()
    assert (bought["item_id"], bought["n_events"], bought["n_purchase"]) == ("i1", 3, 1)
    # view 1 + cart 3 + purchase 5, each halved every 7 days until the end of 2025-11-09 (~7.58 days later)
    assert bought["strength"] == pytest.approx(sum(
        w * 2 ** -((7 * 86400 + 14 * 3600 - m * 60) / 86400 / 7) for w, m in ((1, 0), (3, 1), (5, 3))), abs=1e-6)
    assert bought["as_of"].isoformat() == "2025-11-09"
    newcomer = lake.read("gold.user_profiles").where("user_id = 'newcomer'").first()
    assert (newcomer["segment"], newcomer["lifecycle_stage"], newcomer["profile_version"]) == ("browser", "new", 1)
    # The profile run after the late data changed some profiles (as_of moved) and left the others alone.
    counts = last_run(lake, "profile")["counts"]
    assert counts["profiles_inserted"] == 2 and counts["profiles_updated"] > 0


def test_counts_agree_with_silver(lake):
    silver = lake.read("silver.events")
    n = silver.count()
    assert lake.read("gold.user_daily").agg(F.sum("n_events")).first()[0] == n
    assert lake.read("gold.sessions").agg(F.sum("n_events")).first()[0] == n
    human_items = silver.where("NOT is_bot AND item_id IS NOT NULL")
    assert lake.read("gold.interactions").agg(F.sum("n_events")).first()[0] == human_items.count()
    assert lake.read("gold.interactions").count() == human_items.select("user_id", "item_id").distinct().count()
    users = silver.select("user_id").distinct().count()
    assert lake.read("gold.user_features").count() == users == lake.read("gold.user_profiles").count()
    bots = {r[0] for r in lake.read("gold.user_profiles").where("is_bot").select("user_id").collect()}
    truth = {r[0] for r in lake.read("ops.generator_truth").where("kind = 'bot'").select("user_id").collect()}
    assert bots and bots == truth


def test_rerun_changes_nothing(lake):
    versions = {name: lake.version(name) for name in GOLD}
    features(lake.root)
    assert {name: lake.version(name) for name in GOLD} == versions
    assert {last_run(lake, j)["status"] for j in ("sessionize", "featurize", "profile")} == {"noop"}


def test_backfill_and_full_rebuild_equal_the_incremental_result(lake):
    before = snapshot(lake)
    run(sessionize.main, lake.root, "--dates", "2025-11-01..2025-11-03")
    run(featurize.main, lake.root, "--dates", "2025-11-01..2025-11-03")
    assert_same_tables(lake, before)
    run(sessionize.main, lake.root, "--full")
    run(featurize.main, lake.root, "--full")
    assert_same_tables(lake, before)
    # The as-of tables were MERGEd: identical content means no row was rewritten.
    counts = last_run(lake, "featurize")["counts"]
    assert sum(v for k, v in counts.items() if k.endswith(("_inserted", "_updated", "_deleted"))) == 0


def test_a_changed_features_section_forces_a_full_rebuild(lake, spark):
    root = lake.root
    assert featurize.main(job_args(root, *SIZE, "features.half_life_days=3")) == 0
    r = last_run(lake, "featurize")
    assert r["counts"]["dates"] == 0 and r["counts"]["interactions_updated"] > 0  # every date, via --full
    assert featurize.main(job_args(root, *SIZE)) == 0  # and back (the section changed again)


def test_feature_pipeline_transforms_user_features(lake):
    model = load_feature_pipeline(lake)
    out = model.transform(lake.read("gold.user_features"))
    names = vector_names(out)
    row = out.select("features", "features_std", "features_01", "features_meannorm").first()
    assert all(len(v) == len(names) for v in row)
    scaled = vector_to_array("features_01")
    lo, hi = out.select(F.min(F.array_min(scaled)), F.max(F.array_max(scaled))).first()
    assert lo >= 0 and hi <= 1 + 1e-9


def test_gold_tables_read_without_spark(lake):
    for name in GOLD:
        path = lake.path(name)
        expected = lake.read(name).count()
        table = DeltaTable(path)
        assert table.to_pyarrow_table().num_rows == expected, name
        assert pl.read_delta(path).height == expected, name
    profiles = DeltaTable(lake.path("gold.user_profiles")).to_pyarrow_dataset()
    segments = duckdb.connect().execute(
        "SELECT segment, count(*) AS n FROM profiles GROUP BY segment ORDER BY n DESC").fetchall()
    assert sum(n for _, n in segments) == lake.read("gold.user_profiles").count()
    # Time travel from delta-rs: the profiles as the first profile run wrote them, before the late users arrived.
    history = DeltaTable(lake.path("gold.user_profiles")).history()
    # (the first profile run fills the empty table with a WRITE, later ones MERGE)
    first_merge = min(h["version"] for h in history if h["operation"] in ("WRITE", "MERGE"))
    first = pl.from_arrow(DeltaTable(lake.path("gold.user_profiles"), version=first_merge).to_pyarrow_table())
    assert first.height == lake.read("gold.user_profiles").count() - 2
    assert first.filter(pl.col("user_id").is_in(["late_buyer", "newcomer"])).height == 0
