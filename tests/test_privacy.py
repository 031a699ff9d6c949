"""Privacy units: Spark's HMAC against Python's, key handling, sealed PII and quarantine lines, the lake's key guard,
contribution bounding and the Laplace mechanism's stated error bound."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import json
from datetime import date, timedelta

import pytest
from pyspark.sql import functions as F

from conftest import settings_for
from shopmine.conf import CleanConf, DpCategoryConf, DpSegmentConf, load_settings
from shopmine.etl import clean
from shopmine.io.sources import get_format
from shopmine.governance.privacy import (
    Privacy,
    PrivacyError,
    bound_contributions,
    category_cells,
    derive,
    dp_daily_category_activity,
    dp_segment_summary,
    erasure_token,
    error_bound,
    pseudonym,
    read_key,
)
from test_clean_units import bronze

KEY = bytes(range(100, 132))
ENC = bytes(range(7, 39))


def test_spark_hmac_equals_python_hmac(spark):
    values = ["u1", "17850", "ü 東京", "x" * 300, ""]
    p = Privacy(KEY, None, {}, False)
    df = spark.createDataFrame([(v,) for v in values] + [(None,)], "u string")
    got = [r[0] for r in df.select(p.pseudonymise(F.col("u"))).collect()]
    sub = hmac.new(KEY, b"shopmine/user_id", hashlib.sha256).digest()
    want = [hmac.new(sub, v.encode(), hashlib.sha256).hexdigest()[:32] for v in values] + [None]
    assert got == want
    assert [pseudonym(v, KEY) for v in values] == want[:-1]
    # a long master key (> one SHA-256 block) is hashed first, as RFC 2104 says
    long_key = bytes(range(200))
    assert df.select(Privacy(long_key, None, {}, False).pseudonymise(F.col("u"))).first()[0] == \
        pseudonym("u1", long_key)
    assert erasure_token("u1", KEY) != pseudonym("u1", KEY)  # audit tokens match no pseudonym
    assert Privacy(None, None, {}, False).pseudonymise(F.col("u")) is not None  # off: the column itself
    assert [r[0] for r in df.select(Privacy(None, None, {}, False).pseudonymise(F.col("u"))).collect()] == \
        values + [None]


def test_keys_come_from_the_environment(monkeypatch):
    monkeypatch.delenv("SHOPMINE_PSEUDONYM_KEY", raising=False)
    assert read_key("SHOPMINE_PSEUDONYM_KEY") is None
    monkeypatch.setenv("SHOPMINE_PSEUDONYM_KEY", "ab" * 32)
    assert read_key("SHOPMINE_PSEUDONYM_KEY") == bytes([0xAB] * 32)
    monkeypatch.setenv("SHOPMINE_PSEUDONYM_KEY", "a passphrase of some length")
    assert read_key("SHOPMINE_PSEUDONYM_KEY") == b"a passphrase of some length"
    monkeypatch.setenv("SHOPMINE_PSEUDONYM_KEY", "short")
    with pytest.raises(PrivacyError, match=r"SHOPMINE_PSEUDONYM_KEY is too short"):
        read_key("SHOPMINE_PSEUDONYM_KEY")
    monkeypatch.delenv("SHOPMINE_PSEUDONYM_KEY")
    with pytest.raises(PrivacyError, match=r"privacy.pseudonymise is true but \$SHOPMINE_PSEUDONYM_KEY is not set"):
        Privacy.from_settings(load_settings(None, ["privacy.pseudonymise=true"]))
    monkeypatch.delenv("SHOPMINE_PII_KEY", raising=False)
    with pytest.raises(PrivacyError, match=r"encrypts email but \$SHOPMINE_PII_KEY is not set"):
        Privacy.from_settings(load_settings(None, ["privacy.pii.email=encrypt"]))
    assert not Privacy.from_settings(load_settings(None)).pseudonymising  # auto without a key: off
    monkeypatch.setenv("SHOPMINE_PSEUDONYM_KEY", "cd" * 32)
    p = Privacy.from_settings(load_settings(None))
    assert p.pseudonymising and not p.seal_quarantine  # auto quarantine sealing needs both keys
    assert not Privacy.from_settings(load_settings(None, ["privacy.pseudonymise=false"])).pseudonymising


def test_sealing_round_trips_and_keys_stay_out_of_plans(spark):
    p = Privacy(KEY, ENC, {"email": "encrypt", "phone": "drop", "ip": "encrypt"}, True)
    df = spark.createDataFrame([("a@b.c", "+1 555", "10.0.0.1"), (None, "+1 555", None), ("a@b.c", None, None)],
                               "email string, phone string, ip string")
    sealed = df.select(p.sealed_pii({f: F.col(f) for f in ("email", "phone", "ip")}).alias("s"))
    rows = [r[0] for r in sealed.collect()]
    assert rows[1] is None  # only a dropped field had a value
    assert rows[0] != rows[2] and len({r[:16] for r in (rows[0], rows[2])}) == 2  # other plaintext, other IV
    again = [r[0] for r in sealed.collect()]
    assert again == rows  # synthetic IV: sealing is deterministic, so re-cleaning rewrites identical bytes
    opened = [r[0] for r in sealed.select(p.unseal(F.col("s"))).collect()]
    assert [json.loads(o) if o else None for o in opened] == [{"email": "a@b.c", "ip": "10.0.0.1"}, None,
                                                              {"email": "a@b.c"}]
    # with another key the AES-GCM tag does not verify: no plaintext comes out
    other = Privacy(KEY, bytes(32), {}, True)
    with pytest.raises(Exception):
        sealed.where("s IS NOT NULL").select(other.unseal(F.col("s"))).collect()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        df.select(p.pseudonymise(F.col("email")), p.seal(F.col("email"))).explain(True)
    plan = buf.getvalue().lower()
    assert "redacted" in plan
    for secret in (derive(KEY, "user_id"), derive(ENC, "aes-gcm")):
        assert secret.hex() not in plan and secret.hex()[:16] not in plan


def test_clean_pseudonymises_seals_and_does_not_echo_ids(spark):
    p = Privacy(KEY, ENC, {"email": "encrypt", "phone": "drop", "ip": "drop"}, True)
    fmt = get_format("canonical")
    lines = [
        "e1,2025-11-01T10:00:00Z,u7,s1,view,i1,c1,b1,9.99,,,,me@x.org,+44 1,10.1.2.3",
        "e2,2025-11-01T10:01:00Z,u7,s1,view,i2,c1,b1,9.99,,,",
        "e3,2025-11-01T10:02:00Z," + "\u0007bad" + ",s1,view,i2,c1,b1,9.99,,,",
    ]
    out = clean.parse_and_validate(bronze(spark, lines, "canonical"), fmt, load_settings(None).source("canonical"),
                                   CleanConf(), p)
    rows = {r["event_id"]: r for r in out.collect()}
    assert rows["e1"]["user_id"] == rows["e2"]["user_id"] == pseudonym("u7", KEY)
    assert rows["e2"]["pii_sealed"] is None
    opened = out.where("event_id = 'e1'").select(p.unseal(F.col("pii_sealed"))).first()[0]
    assert json.loads(opened) == {"email": "me@x.org"}  # phone and IP dropped
    assert rows["e3"]["reason"] == "invalid_user_id" and "bad" not in rows["e3"]["detail"]
    quarantined = clean.quarantine_rows(out.withColumn("disposition", F.when(F.col("reason").isNotNull(), "quarantine")),
                                        p)
    raw = quarantined.select(p.unseal(F.col("raw_record")).alias("raw"), "raw_record").first()
    assert raw["raw"] == lines[2] and "bad" not in raw["raw_record"]


@pytest.mark.slow
def test_a_lake_refuses_another_key(spark, lake_root, monkeypatch):
    from jobs import clean as clean_job
    from jobs import ingest as ingest_job
    from conftest import job_args

    src = f"{lake_root}-in/a.csv"
    import os

    os.makedirs(os.path.dirname(src), exist_ok=True)
    with open(src, "w") as fh:
        fh.write(",".join(get_format("canonical").columns) + "\n")
        fh.write("e1,2025-11-01T10:00:00Z,u7,s1,view,i1,c1,b1,9.99,,,\n")
    monkeypatch.setenv("SHOPMINE_PSEUDONYM_KEY", "11" * 32)
    args = job_args(lake_root)
    assert ingest_job.main(args + ["--format", "canonical", "--input", src]) == 0
    assert clean_job.main(args) == 0
    assert clean_job.main(args) == 0  # same key: a no-op
    with open(src.replace("a.csv", "b.csv"), "w") as fh:
        fh.write(",".join(get_format("canonical").columns) + "\n")
        fh.write("e2,2025-11-01T10:05:00Z,u7,s1,view,i1,c1,b1,9.99,,,\n")
    assert ingest_job.main(args + ["--format", "canonical", "--input", src.replace("a.csv", "b.csv")]) == 0
    monkeypatch.setenv("SHOPMINE_PSEUDONYM_KEY", "22" * 32)
    assert clean_job.main(args) == 2  # configuration error: another key
    monkeypatch.delenv("SHOPMINE_PSEUDONYM_KEY")
    assert clean_job.main(args) == 2  # no key at all
    monkeypatch.setenv("SHOPMINE_PSEUDONYM_KEY", "11" * 32)
    assert clean_job.main(args) == 0
    from shopmine.io.delta import Lake

    ids = {r[0] for r in Lake(spark, settings_for(lake_root)).read("silver.events").select("user_id").collect()}
    assert ids == {pseudonym("u7", bytes([0x11] * 32))}


# -- differential privacy ------------------------------------------------------------------------------------------

def test_contributions_are_bounded_per_user(spark):
    rows = [("heavy", f"c{i}") for i in range(50)] + [("light", "c1"), ("light", "c2")]
    df = spark.createDataFrame(rows, "user_id string, cell string")
    kept = bound_contributions(df, "user_id", ["cell"], 5, seed=3)
    per_user = {r[0]: r[1] for r in kept.groupBy("user_id").count().collect()}
    assert per_user == {"heavy": 5, "light": 2}
    again = bound_contributions(df, "user_id", ["cell"], 5, seed=3)
    assert sorted(kept.collect()) == sorted(again.collect())  # reproducible choice


def _events(spark, users: int, days: int, categories: int):
    """Each user views one category a day and buys in it every third day at price 10 (hand-computable cells)."""
    start = date(2025, 1, 1)
    rows = []
    for u in range(users):
        for d in range(days):
            cat = f"c{(u + d) % categories}"
            day = start + timedelta(days=d)
            rows.append((f"u{u}", day, cat, "view", 10.0, 1, False))
            if (u + d) % 3 == 0:
                rows.append((f"u{u}", day, cat, "purchase", 10.0, 2, False))
    rows.append(("bot", start, "c0", "view", 10.0, 1, True))
    return spark.createDataFrame(rows, "user_id string, event_date date, category_id string, event_type string, "
                                       "price double, quantity int, is_bot boolean")


def test_laplace_error_stays_within_its_stated_bound(spark):
    events = _events(spark, users=300, days=30, categories=40)
    cats = spark.createDataFrame([(f"c{i}",) for i in range(40)] + [("c_unsold",)], "category_id string")
    conf = DpCategoryConf(epsilon=1.0, max_cells=30, max_revenue=50.0)
    truth = {(r[0], r[1]): r for r in category_cells(events, cats, conf, seed=1).collect()}
    assert len(truth) == 30 * 41  # every day x every catalogue category, empty ones too
    total = sum(r["v"] for r in truth.values())
    assert total == 300 * 30  # bots excluded; max_cells = days, so nobody is cut
    noisy = dp_daily_category_activity(events, cats, conf, 0.95, seed=1).collect()
    scale_v = 30 / (1.0 / 3)  # sensitivity max_cells, epsilon / 3
    assert noisy[0]["visitors_error"] == pytest.approx(error_bound(scale_v, 0.95) + 0.5)
    assert error_bound(1.0, 0.95) == pytest.approx(2.995732, abs=1e-6)  # ln 20
    within = {m: 0 for m in ("visitors", "buyers", "revenue")}
    abs_err = []
    for r in noisy:
        t = truth[(r["event_date"], r["category_id"])]
        for m, col in (("visitors", "v"), ("buyers", "b"), ("revenue", "r")):
            within[m] += abs(r[m] - t[col]) <= r[f"{m}_error"]
        abs_err.append(abs(r["visitors"] - t["v"]))
        assert r["visitors"] >= 0 and r["revenue"] >= 0
    n = len(noisy)
    for m, k in within.items():  # 95 % promised; 1,230 cells make 91 % a 5-sigma miss
        assert k / n >= 0.91, (m, k / n)
    # the noise is real: its mean absolute size is near the scale (E|Laplace(b)| = b; clamping at 0 shrinks it)
    assert 0.5 * scale_v < sum(abs_err) / n < 1.1 * scale_v
    # a heavier user is cut to max_cells: visitors then undercount by design (bias, not noise)
    capped = category_cells(events, cats, DpCategoryConf(epsilon=1.0, max_cells=10, max_revenue=50.0), seed=1)
    assert capped.agg(F.sum("v")).first()[0] == 300 * 10


def test_segment_summary_lists_every_segment(spark):
    profiles = spark.createDataFrame([("champions", 5000.0)] * 40 + [("browser", 0.0)] * 100,
                                     "segment string, monetary double")
    out = {r["segment"]: r for r in dp_segment_summary(profiles, ["champions", "browser", "bot"],
                                                       DpSegmentConf(epsilon=2.0, max_spend=1000.0), 0.95,
                                                       seed=9).collect()}
    assert set(out) == {"champions", "browser", "bot"}
    bound_users = error_bound(1.0, 0.95) + 0.5  # sensitivity 1, epsilon 2 / 2
    assert out["champions"]["users_error"] == pytest.approx(bound_users)
    assert abs(out["champions"]["users"] - 40) <= 4 * bound_users
    # spend clamped at 1000 per user: the truth is 40,000, not 200,000
    assert abs(out["champions"]["total_spend"] - 40_000) <= 4 * out["champions"]["total_spend_error"]
