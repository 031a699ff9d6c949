"""feedback: served lists joined with behaviour after their data cut (found through ops.runs and time travel), per
model and rank, against hand-counted outcomes; no events after the cut is a no-op that says so."""

from __future__ import annotations

from datetime import date, datetime

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
