"""campaigns: who is targeted (profile condition, propensity floor, risk exclusions), the calibrated expected
conversion, and a holdout draw that is fixed per campaign and user."""

from __future__ import annotations

import json

import pytest

from conftest import spec_frame
from shopmine.apps.campaigns import audience, calibration_map, targets
from shopmine.conf import CampaignsConf, ConfError
from shopmine.io.tables import GOLD_PROPENSITY_SCORES, GOLD_USER_FEATURES, GOLD_USER_PROFILES

CALIBRATION = json.dumps({"calibration": [
    {"bin": 0, "low": 0.0, "high": 0.1, "rows": 500, "mean_p": 0.05, "observed": 0.01},
    {"bin": 3, "low": 0.3, "high": 0.4, "rows": 40, "mean_p": 0.35, "observed": 0.12},
    {"bin": 7, "low": 0.7, "high": 0.8, "rows": 0, "mean_p": 0.0, "observed": 0.0}]})


def _lake_frames(spark, users):
    """users: (user_id, segment, spending_power, cart_abandonment, n_cart, score, is_bot)"""
    profiles = spec_frame(spark, GOLD_USER_PROFILES, [
        {"user_id": u, "segment": seg, "spending_power": sp, "lifecycle_stage": "active", "cart_abandonment": ab,
         "is_bot": bot} for u, seg, sp, ab, _, _, bot in users])
    features = spec_frame(spark, GOLD_USER_FEATURES, [{"user_id": u, "n_cart": nc} for u, _, _, _, nc, _, _ in users])
    scores = spec_frame(spark, GOLD_PROPENSITY_SCORES, [
        {"user_id": u, "task": "purchase", "model": "lr", "score": s, "run_id": "r"} for u, *_, s, _ in users])
    return profiles, features, scores


CONF = CampaignsConf(holdout_share=0.0, definitions={
    "cart_abandoners": {"where": "cart_abandonment >= 0.5 AND n_cart > 0", "min_propensity": 0.3, "offer": "5 %"},
    "at_risk_high_value": {"where": "segment IN ('at_risk', 'cant_lose') AND spending_power IN ('high', 'premium')"},
})


def test_calibration_map_keeps_bins_with_test_users():
    assert calibration_map(CALIBRATION) == {0: 0.01, 3: 0.12}
    assert calibration_map(None) == {} and calibration_map(json.dumps({"threshold": 0.5})) == {}


def test_targets_by_condition_propensity_and_risk(spark):
    profiles, features, scores = _lake_frames(spark, [
        ("a", "loyal", "medium", 0.8, 2, 0.35, False),      # abandoner, propensity above the floor
        ("b", "loyal", "medium", 0.8, 2, 0.05, False),      # abandoner, propensity too low
        ("c", "at_risk", "premium", 0.0, 0, 0.05, False),   # at risk, high value
        ("d", "at_risk", "low", 0.9, 1, 0.95, False),       # abandoner (score in an uncalibrated tenth)
        ("e", "cant_lose", "high", 0.9, 1, 0.5, False),     # both, but flagged by risk
        ("f", "at_risk", "high", 0.9, 1, 0.5, True),        # a bot profile
    ])
    flags = spark.createDataFrame([("e", "click_farming"), ("a", "abnormal_purchase")], "user_id string, flag string")
    out = targets(audience(profiles, features, scores, flags, CONF), CONF, calibration_map(CALIBRATION))
    got = {(r["campaign"], r["user_id"]): (r["propensity"], r["expected_conversion"], r["holdout"], r["offer"])
           for r in out.collect()}
    assert got == {
        ("cart_abandoners", "a"): (0.35, 0.12, False, "5 %"),   # abnormal_purchase is not an exclusion by default
        ("cart_abandoners", "d"): (0.95, 0.95, False, "5 %"),   # no test users in that tenth: the score itself
        ("at_risk_high_value", "c"): (0.05, 0.01, False, ""),
    }


def test_holdout_is_a_fixed_share_per_campaign(spark):
    users = [(f"u{i}", "at_risk", "high", 0.9, 1, 0.5, False) for i in range(4000)]
    profiles, features, scores = _lake_frames(spark, users)
    conf = CONF.model_copy(update={"holdout_share": 0.1})
    aud = audience(profiles, features, scores, None, conf)
    first = {(r[0], r[1]) for r in targets(aud, conf, {}).where("holdout").select("campaign", "user_id").collect()}
    again = {(r[0], r[1]) for r in targets(aud, conf, {}).where("holdout").select("campaign", "user_id").collect()}
    assert first == again  # the same control group on every run
    per = {c: {u for k, u in first if k == c} for c in conf.definitions}
    for c, held in per.items():
        assert 0.08 < len(held) / 4000 < 0.12, (c, len(held))
    assert per["cart_abandoners"] != per["at_risk_high_value"]  # each campaign draws its own
    other_seed = conf.model_copy(update={"seed": 12})
    assert {u for c, u in first} != {r[0] for r in targets(aud, other_seed, {}).where("holdout").select("user_id").collect()}


def test_a_bad_condition_names_its_key(spark):
    profiles, features, scores = _lake_frames(spark, [("a", "loyal", "medium", 0.8, 2, 0.35, False)])
    conf = CampaignsConf(definitions={"oops": {"where": "no_such_column > 1"}})
    with pytest.raises(ConfError, match="campaigns.definitions.oops.where"):
        targets(audience(profiles, features, scores, None, conf), conf, {})
    conf = CampaignsConf(definitions={"oops": {"where": "segment IN ("}})
    with pytest.raises(ConfError, match="campaigns.definitions.oops.where"):
        targets(audience(profiles, features, scores, None, conf), conf, {})
