"""feedback: served lists joined with behaviour after their data cut (found through ops.runs and time travel), per
model and rank, against hand-counted outcomes; no events after the cut is a no-op that says so."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from conftest import job_args, settings_for, spec_frame
from jobs import feedback
from shopmine.io.delta import Lake
from shopmine.io.tables import GOLD_INTERACTIONS, GOLD_RECS_TOPN, OPS_RUNS, SILVER_EVENTS

CUT = date(2025, 11, 10)


def _event(user, item, etype, day):
    at = datetime(2025, 11, day, 12, 0)
    return {"event_id": f"{user}{item}{etype}{day}", "user_id": user, "item_id": item, "event_type": etype,
            "event_time": at, "event_date": at.date()}


def test_feedback_counts_behaviour_after_the_cut(spark, lake_root, capsys):
    lake = Lake(spark, settings_for(lake_root))
    lake.append(spec_frame(spark, GOLD_INTERACTIONS, [{"user_id": "u1", "item_id": "z", "as_of": CUT}]),
                GOLD_INTERACTIONS.name)
    version = lake.version(GOLD_INTERACTIONS.name)
    lake.append(spec_frame(spark, OPS_RUNS, [{"run_id": "rec1", "job": "recommend", "status": "ok",
                                              "input_versions": {GOLD_INTERACTIONS.name: version}}]), OPS_RUNS.name)
    recs = [{"user_id": u, "model": "als", "rank": r + 1, "item_id": i, "score": 1.0, "run_id": "rec1"}
            for u, items in (("u1", "abc"), ("u2", "ade")) for r, i in enumerate(items)]
    lake.append(spec_frame(spark, GOLD_RECS_TOPN, recs), GOLD_RECS_TOPN.name)
    lake.append(spec_frame(spark, SILVER_EVENTS, [
        _event("u1", "c", "view", 9),                                  # before the cut: not feedback
        _event("u1", "a", "view", 11),
        _event("u1", "b", "view", 12), _event("u1", "b", "cart", 12), _event("u1", "b", "purchase", 13),
        _event("u1", "c", "view", 18),                                 # after the 7-day window
        _event("u3", "a", "view", 11),                                 # not served anything
    ]), SILVER_EVENTS.name)

    assert feedback.main(job_args(lake_root)) == 0
    got = {r["rank"]: (r["served"], r["served_to_returning"], r["viewed"], r["carted"], r["purchased"],
                       r["viewed_rate"], r["cut"], r["window_end"], r["recs_run_id"])
           for r in lake.read("ops.rec_feedback").collect()}
    end = date(2025, 11, 17)
    assert got == {1: (2, 1, 1, 0, 0, 1.0, CUT, end, "rec1"),   # u2 never came back: only u1's items count
                   2: (2, 1, 1, 1, 1, 1.0, CUT, end, "rec1"),
                   3: (2, 1, 0, 0, 0, 0.0, CUT, end, "rec1")}
    assert feedback.main(job_args(lake_root)) == 0  # nothing changed: a no-op
    assert lake.read("ops.rec_feedback").count() == 3
    done, noop = lake.read("ops.runs").where("job = 'feedback'").orderBy("started_at").collect()
    assert (done["status"], noop["status"]) == ("ok", "noop")
    assert done["output_versions"] == {"ops.rec_feedback": lake.version("ops.rec_feedback")}  # as the registry says
    assert noop["output_versions"] == {}


def test_feedback_without_newer_events_is_a_noop(spark, lake_root):
    lake = Lake(spark, settings_for(lake_root))
    lake.append(spec_frame(spark, GOLD_INTERACTIONS, [{"user_id": "u1", "item_id": "z", "as_of": CUT}]),
                GOLD_INTERACTIONS.name)
    lake.append(spec_frame(spark, OPS_RUNS, [{"run_id": "rec1", "job": "recommend", "status": "ok",
                                              "input_versions": {GOLD_INTERACTIONS.name: lake.version(GOLD_INTERACTIONS.name)}}]),
                OPS_RUNS.name)
    lake.append(spec_frame(spark, GOLD_RECS_TOPN, [{"user_id": "u1", "model": "als", "rank": 1, "item_id": "a",
                                                    "score": 1.0, "run_id": "rec1"}]), GOLD_RECS_TOPN.name)
    lake.append(spec_frame(spark, SILVER_EVENTS, [_event("u1", "a", "view", 10)]), SILVER_EVENTS.name)
    assert feedback.main(job_args(lake_root)) == 0
    (run,) = lake.read("ops.runs").where("job = 'feedback'").collect()
    assert run["status"] == "noop" and "no behaviour after the lists' data cut" in run["message"]
    assert not lake.exists("ops.rec_feedback")


# -- served-but-ignored items as ALS negatives (recommend.served_negatives) ------------------------------------------

def test_ignored_pairs_are_served_returning_and_untouched_before_the_limit(spark):
    from shopmine.apps.feedback import ignored_pairs

    recs = spark.createDataFrame([("u1", "a", "r1"), ("u1", "b", "r1"), ("u1", "c", "r1"), ("u2", "a", "r1"),
                                  ("u3", "a", "r1")], "user_id string, item_id string, run_id string")
    cuts = spark.createDataFrame([("r1", CUT)], "run_id string, cut date")
    rows = [("u1", "b", "view", 11), ("u1", "x", "view", 12),  # u1 came back, viewed b: a and c ignored
            ("u2", "z", "view", 20),                            # u2 came back only after the limit
            ("u3", "a", "purchase", 10),                        # u3's purchase is on the cut day, not after it
            ("u3", "q", "view", 13)]
    events = spark.createDataFrame([(u, i, t, date(2025, 11, d), False) for u, i, t, d in rows],
                                   "user_id string, item_id string, event_type string, event_date date, is_bot boolean")
    got = sorted(tuple(r) for r in ignored_pairs(recs, events, cuts, window_days=7, until=date(2025, 11, 15)).collect())
    assert got == [("u1", "a"), ("u1", "c"), ("u3", "a")]
    # nothing after the limit counts: with the limit on the cut itself there is no window at all
    assert ignored_pairs(recs, events, cuts, window_days=7, until=CUT).count() == 0


@pytest.mark.slow
def test_a_served_negative_lowers_the_item_for_that_user(spark):
    """Implicit ALS on 30 users who all like items a and b: user u0 has only a. Without feedback, b scores high for
    u0; after u0 ignored b when it was served (strength -w: preference 0, confidence 1 + alpha·w), b drops."""
    from shopmine.conf import AlsConf
    from shopmine.recsys import models as m
    from shopmine.recsys.recommenders import als_input

    rows = [(f"u{k}", i, 1.0) for k in range(1, 31) for i in ("a", "b")] + [("u0", "a", 1.0)]
    rows += [(f"u{k}", f"n{k % 5}", 1.0) for k in range(1, 31)]
    train = spark.createDataFrame(rows, "user_id string, item_id string, strength double")
    negatives = spark.createDataFrame([("u0", "b"), ("u1", "a")], "user_id string, item_id string")
    with_neg = als_input(train, negatives, 1.0)
    assert with_neg.where("strength < 0").collect() == [("u0", "b", -1.0)]  # u1 likes a: no negative there

    def score_b(data):
        model, idx = m.fit_als(data, AlsConf(max_iter=10), 4, 0.1, 10.0, 2, 7)
        scores = m.als_scores(model, idx, 5, None)
        return {r["item_id"]: r["score"] for r in scores.where("user_id = 'u0'").collect()}

    before, after = score_b(als_input(train, None, 1.0)), score_b(with_neg)
    heavier = score_b(als_input(train, negatives, 3.0))
    assert before["b"] > 0.5
    assert after["b"] < before["b"] - 0.25  # measured 0.87 -> 0.49
    assert heavier.get("b", 0.0) < after["b"]  # a larger weight (more confidence in "not wanted") pushes it further
