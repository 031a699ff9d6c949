"""monitor: PSI against hand-computed values, bucketing (deciles, nulls, pooled categories, segments), and the job on a
hand-made lake: the first run records checks and a baseline, an unchanged rerun is a no-op, a shifted batch and
shifted scores make it write the drift and exit 4 naming what crossed which threshold."""

from __future__ import annotations

import math

import pytest

from conftest import job_args, settings_for, spec_frame
from jobs import monitor
from shopmine.conf import DriftConf
from shopmine.io.delta import Lake
from shopmine.io.tables import GOLD_PROPENSITY_SCORES, OPS_CLEAN_BATCHES, SILVER_EVENTS
from shopmine.governance.monitoring import EPS, column_drift, psi


def _term(cur: float, ref: float) -> float:
    cur, ref = max(cur, EPS), max(ref, EPS)
    return (cur - ref) * math.log(cur / ref)


def test_psi_by_hand():
    assert psi({"a": 50, "b": 50}, {"a": 80, "b": 20}) == pytest.approx(0.3 * math.log(1.6) + 0.3 * math.log(2.5))
    assert psi({"a": 3, "b": 1}, {"a": 30, "b": 10}) == pytest.approx(0.0)
    # a bucket empty on one side is floored at EPS, not infinite
    assert psi({"a": 1, "b": 1}, {"a": 2}) == pytest.approx(_term(0, 0.5) + _term(1, 0.5))


def test_column_drift_buckets_segments_and_categories(spark):
    conf = DriftConf(bins=4, categories=2, min_rows=5)
    ref_rows = [("s1", float(v), "abcd"[min(v % 10, 3)] if v % 10 < 4 else "a") for v in range(1, 101)]
    ref_rows += [("s2", float(v), "a") for v in range(1, 11)]
    cur_rows = [("s1", float(v), "c") for v in range(51, 151)] + [("s1", None, "c")]
    cur_rows += [("s2", float(v), "a") for v in range(1, 11)]
    schema = "seg string, x double, cat string"
    ref, cur = spark.createDataFrame(ref_rows, schema), spark.createDataFrame(cur_rows, schema)
    out = {(d.segment, d.column): d for d in column_drift("t", ref, cur, ["x", "cat"], ["seg"], conf)}

    x = out[("seg=s1", "x")]
    # reference quartile edges 25, 50, 75: each bucket holds a quarter; current 51..150 fills (50,75] with 25
    # values and > 75 with 75, plus one null, of 101
    assert [b[0] for b in x.buckets] == ["<= 25", "(25, 50]", "(50, 75]", "> 75", "(null)"]
    assert x.rows_reference == 100 and x.rows_current == 101
    n = 101
    expected = (_term(0, .25) + _term(0, .25) + _term(25 / n, .25) + _term(75 / n, .25) + _term(1 / n, 0))
    assert x.psi == pytest.approx(expected, abs=1e-5)
    assert x.status == "fail"

    cat = out[("seg=s1", "cat")]
    # reference: a 70 (v%10 in 0,4..9), b 10, c 10, d 10 -> top 2 = a and b (ties broken by name); c, d pooled
    shares = {b[0]: (b[1], b[2]) for b in cat.buckets}
    assert shares == {"a": (0.7, 0.0), "b": (0.1, 0.0), "(other)": (0.2, 1.0)}
    assert cat.psi == pytest.approx(_term(0, .7) + _term(0, .1) + _term(1, .2), abs=1e-5)

    same = out[("seg=s2", "x")]
    assert same.psi == pytest.approx(0.0) and same.status == "pass"
    assert out[("seg=s2", "cat")].psi == pytest.approx(0.0)

    few = column_drift("t", ref, cur, ["x"], ["seg"], DriftConf(bins=4, min_rows=20))
    assert {d.segment: d.status for d in few} == {"seg=s1": "fail", "seg=s2": "skipped"}


def _events(spark, batch: str, types: list[str]):
    rows = [{"event_id": f"{batch}-{i}", "user_id": f"u{i % 7}", "item_id": None if t == "search" else f"i{i}",
             "category_id": None if t == "search" else "c1", "price": None if t == "search" else 10.0,
             "event_type": t, "ingest_batch_id": batch, "is_bot": i % 10 == 0} for i, t in enumerate(types)]
    return spec_frame(spark, SILVER_EVENTS, rows)


def _batch(spark, batch: str, run_id: str, rows_in: int, accepted: int, quarantined: int, dups: int):
    return spark.createDataFrame([(batch, run_id, rows_in, accepted, quarantined, dups, 0, rows_in)],
                                 OPS_CLEAN_BATCHES.schema)


def _scores(spark, values: list[float]):
    return spec_frame(spark, GOLD_PROPENSITY_SCORES, [{"user_id": f"u{i}", "task": "purchase", "model": "lr",
                                                       "score": v, "run_id": "r"} for i, v in enumerate(values)])


@pytest.mark.slow
def test_monitor_job_baseline_noop_and_breach(spark, lake_root, capsys):
    lake = Lake(spark, settings_for(lake_root))
    conf = ["monitor.drift.min_rows=50", "monitor.drift.tables={gold.propensity_scores: {columns: [score], by: [task]}}"]
    args = job_args(lake_root, *conf)

    lake.append(_events(spark, "b1", ["search"] * 2 + ["view"] * 148 + ["purchase"] * 50), SILVER_EVENTS.name)
    lake.append(_batch(spark, "b1", "20250101T000000-a", 210, 200, 4, 6), OPS_CLEAN_BATCHES.name)
    lake.append(_scores(spark, [i / 100 for i in range(1, 101)]), GOLD_PROPENSITY_SCORES.name)
    v_ref = lake.version(GOLD_PROPENSITY_SCORES.name)
    assert monitor.main(args) == 0
    first = {(r["check_name"], r["subject"]): r for r in lake.read("ops.data_quality").collect()}
    assert first[("quarantine_share", "b1")]["value"] == pytest.approx(4 / 210, abs=1e-6)
    assert first[("duplicate_share", "b1")]["value"] == pytest.approx(6 / 210, abs=1e-6)
    assert first[("bot_share", "b1")]["value"] == pytest.approx(20 / 200)
    assert first[("null_share", "b1: item_id")]["value"] == pytest.approx(2 / 200)
    assert first[("row_count", "b1")]["status"] == "skipped"  # nothing earlier to compare with
    assert {r["status"] for r in first.values()} == {"pass", "skipped"}
    assert not lake.exists("ops.drift")  # the first run is the baseline

    assert monitor.main(args) == 0  # nothing changed: a no-op
    runs = lake.read("ops.runs").where("job = 'monitor'").orderBy("started_at").collect()
    assert [r["status"] for r in runs] == ["ok", "noop"]

    # a second batch: all purchases, many quarantined; and every score now in the top decile
    lake.append(_events(spark, "b2", ["purchase"] * 100), SILVER_EVENTS.name)
    lake.append(_batch(spark, "b2", "20250102T000000-b", 130, 100, 30, 0), OPS_CLEAN_BATCHES.name)
    lake.overwrite(_scores(spark, [0.95 + i / 2000 for i in range(100)]), GOLD_PROPENSITY_SCORES.name)
    v_cur = lake.version(GOLD_PROPENSITY_SCORES.name)
    capsys.readouterr()
    assert monitor.main(args) == 4
    err = capsys.readouterr().err
    assert "quarantine_share b2" in err and "PSI gold.propensity_scores.score [task=purchase]" in err, err

    second = {(r["check_name"], r["subject"]): r for r in
              lake.read("ops.data_quality").where(f"run_id = '{_last_run(lake)}'").collect()}
    assert second[("quarantine_share", "b2")]["status"] == "fail"
    assert second[("row_count", "b2")]["value"] == pytest.approx(100 / 200)  # vs the median of earlier batches
    mix = second[("event_mix_psi", "clean run 20250102T000000-b")]
    assert mix["value"] == pytest.approx(_term(0, .74) + _term(0, .01) + _term(1, .25), abs=1e-5) and mix["status"] == "fail"
    (d,) = lake.read("ops.drift").collect()
    assert (d["table_name"], d["column_name"], d["segment"]) == ("gold.propensity_scores", "score", "task=purchase")
    assert (d["reference_version"], d["current_version"]) == (v_ref, v_cur)
    # reference deciles 0.1 .. 0.9: ten scores per bucket; every current score lies above 0.9
    assert d["psi"] == pytest.approx(9 * _term(0, .1) + _term(1, .1), abs=1e-5) and d["status"] == "fail"
    assert lake.read("ops.runs").orderBy("started_at").collect()[-1]["status"] == "failed"

    # the next run compares with the versions the failed (but written) run read: nothing moved, so no drift
    lake.append(_events(spark, "b3", ["view"] * 150 + ["purchase"] * 50), SILVER_EVENTS.name)
    lake.append(_batch(spark, "b3", "20250103T000000-c", 200, 200, 0, 0), OPS_CLEAN_BATCHES.name)
    assert monitor.main(job_args(lake_root, *conf, "monitor.quality.mix_fail_psi=50", "monitor.quality.mix_warn_psi=50")) == 0
    (d3,) = lake.read("ops.drift").where(f"run_id = '{_last_run(lake)}'").collect()
    assert d3["psi"] == pytest.approx(0.0) and (d3["reference_version"], d3["current_version"]) == (v_cur, v_cur)


def _last_run(lake) -> str:
    return lake.read("ops.runs").orderBy("started_at").collect()[-1]["run_id"]


def test_monitor_configuration_errors_name_the_key(lake_root, capsys):
    assert monitor.main(job_args(lake_root, "monitor.drift.tables={gold.nope: {columns: [x]}}")) == 2
    assert "monitor.drift.tables" in capsys.readouterr().err
    assert monitor.main(job_args(lake_root, "monitor.drift.tables={gold.user_features: {columns: [nope]}}")) == 2
    assert "monitor.drift.tables.gold.user_features" in capsys.readouterr().err
    assert monitor.main(job_args(lake_root, "monitor.drift.warn_psi=0.5", "monitor.drift.fail_psi=0.2")) == 2
