"""Unit tests of each clean step on tiny hand-made frames, with hand-computed expectations."""

from __future__ import annotations

from datetime import datetime

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from shopmine.conf import BotConf, CleanConf, MissingPolicy, OutlierConf, load_settings
from shopmine.etl import clean
from shopmine.io.sources import get_format

INGESTED = datetime(2026, 1, 1, 12, 0, 0)


def bronze(spark, lines, fmt, source_file="f.csv", last_line=None):
    """A bronze-like frame from raw lines (line numbers from 2, as after a header line)."""
    rows = [(line, i + 2, (i + 2) == (last_line or -1), source_file, "fp", fmt, "b1", INGESTED)
            for i, line in enumerate(lines)]
    return spark.createDataFrame(rows, "raw_line string, line_number long, is_last_line boolean, source_file string, "
                                       "source_fingerprint string, source_format string, ingest_batch_id string, "
                                       "ingested_at timestamp")


def validate(spark, lines, fmt_name, **kw):
    fmt = get_format(fmt_name)
    src = load_settings(None).source(fmt_name)
    return clean.parse_and_validate(bronze(spark, lines, fmt_name, **kw), fmt, src, CleanConf())


# -- ids and times -------------------------------------------------------------------------------------------------

def test_normalise_integer_ids(spark):
    df = spark.createDataFrame([(v,) for v in ["17850.0", "+12", "007", "12.5", "abc", "99999999999999999999"]],
                               "raw string")
    norm, problem = clean.normalise_id(F.col("raw"), "integer")
    got = [(r[0], r[1]) for r in df.select(norm, problem).collect()]
    assert got == [("17850", None), ("12", None), ("7", None), (None, "is not an integer"),
                   (None, "is not an integer"), (None, "overflows 64 bits")]


@pytest.mark.parametrize("raw,kind,tz,expected", [
    ("1511658000", "epoch_s", "UTC", datetime(2017, 11, 26, 1, 0, 0)),
    ("1511658000000", "epoch_ms", "UTC", datetime(2017, 11, 26, 1, 0, 0)),
    ("1511658000123", "auto", "UTC", datetime(2017, 11, 26, 1, 0, 0, 123000)),
    ("1511658000", "auto", "UTC", datetime(2017, 11, 26, 1, 0, 0)),
    ("2019-10-01 00:00:05 UTC", "text", "UTC", datetime(2019, 10, 1, 0, 0, 5)),
    ("2016-02-01 08:00:00", "text", "Asia/Shanghai", datetime(2016, 2, 1, 0, 0, 0)),
    ("2011-06-01 08:26:00", "text", "Europe/London", datetime(2011, 6, 1, 7, 26, 0)),
    ("12/1/2010 8:26", "text", "Europe/London", datetime(2010, 12, 1, 8, 26, 0)),
    ("2025-11-01T10:00:00.000+02:00", "auto", "Asia/Shanghai", datetime(2025, 11, 1, 8, 0, 0)),
    ("2025-11-01T10:00:00.250Z", "auto", "UTC", datetime(2025, 11, 1, 10, 0, 0, 250000)),
    ("yesterday", "auto", "UTC", None),
    ("1511658000", "text", "UTC", datetime(2017, 11, 26, 1, 0, 0)),
])
def test_parse_event_time(spark, raw, kind, tz, expected):
    df = spark.createDataFrame([(raw,)], "raw string")
    assert df.select(clean.parse_event_time(F.col("raw"), kind, tz)).first()[0] == expected


# -- every quarantine reason -----------------------------------------------------------------------------------------

TAOBAO_CASES = [
    ("1,2,3,pv,1511658000", None),
    (" 17850.0 ,2,3,buy,1511658000", None),
    (",2,3,pv,1511658000", "missing_user"),
    ("1.5,2,3,pv,1511658000", "invalid_user_id"),
    ("99999999999999999999,2,3,pv,1511658000", "invalid_user_id"),
    ("1,,3,pv,1511658000", "missing_item"),
    ("1,x9,3,pv,1511658000", "invalid_item_id"),
    ("1,2,3,teleport,1511658000", "unknown_event_type"),
    ("1,2,3,pv,abc", "unparseable_timestamp"),
    ("1,2,3,pv,100", "timestamp_before_range"),
    ("1,2,3,pv,4102444800", "future_timestamp"),
    ("1,2,3,pv", "wrong_column_count"),
    ("1,2,3,pv,1511658000,9", "wrong_column_count"),
    (",,,,", "null_only_row"),
    ("", "null_only_row"),
    ('1,"2,3,pv,1511658000', "broken_quoting"),
    ("1,2,3,p\ufffdv,1511658000", "invalid_utf8"),  # raw bytes are tested end to end (generated Latin-1 file)
    ("1,2,3,p", "truncated_line"),  # the file's last line
]


def test_every_reason_on_taobao_lines(spark):
    lines = [line for line, _ in TAOBAO_CASES]
    got = validate(spark, lines, "taobao", last_line=len(lines) + 1).orderBy("line_number")
    assert [r["reason"] for r in got.collect()] == [reason for _, reason in TAOBAO_CASES]
    ok = got.where("reason IS NULL").select("user_id", "item_id", "category_id", "event_type", "event_time").collect()
    assert [tuple(r) for r in ok] == [("1", "2", "3", "view", datetime(2017, 11, 26, 1)),
                                      ("17850", "2", "3", "purchase", datetime(2017, 11, 26, 1))]
    details = [r["detail"] for r in got.collect()]
    assert details[3] == "user_id '1.5' is not an integer"
    assert details[4] == "user_id '99999999999999999999' overflows 64 bits"
    assert details[7] == "event type 'teleport' is not known for format taobao"
    assert details[11] == "4 fields, expected 5"
    assert details[12] == "6 fields, expected 5"


ONLINE_RETAIL_HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"


def test_online_retail_reasons_and_normalisation(spark):
    cases = [
        ('536365,85123A,"WHITE HANGING HEART, T-LIGHT",6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom', None),
        (ONLINE_RETAIL_HEADER, "duplicate_header"),
        ("536366,22633,HAND WARMER,6,2010-12-01 08:28:00,0,17850.0,United Kingdom", "invalid_price"),
        ("536366,22633,HAND WARMER,6,2010-12-01 08:28:00,-1.5,17850.0,United Kingdom", "invalid_price"),
        ("536366,22633,HAND WARMER,6,2010-12-01 08:28:00,5000000,17850.0,United Kingdom", "invalid_price"),
        ("536366,22633,HAND WARMER,0,2010-12-01 08:28:00,1.85,17850.0,United Kingdom", "invalid_quantity"),
        ("536366,22633,HAND WARMER,2.5,2010-12-01 08:28:00,1.85,17850.0,United Kingdom", "invalid_quantity"),
        ("536366,22633,HAND WARMER,20000,2010-12-01 08:28:00,1.85,17850.0,United Kingdom", "invalid_quantity"),
        ("C536379,D,Discount,-1,2010-12-01 09:41:00,27.5,14527.0,United Kingdom", "cancellation"),
        ("536367,84879,BIRD ORNAMENT,32,2010-12-01 08:34:00,1.69,,United Kingdom", "missing_user"),
        ("536367,84879,BIRD ORNAMENT,32,12/1/2010 8:34,1.69,13047,United Kingdom,54.08,12", None),
    ]
    got = validate(spark, [c for c, _ in cases], "online_retail").orderBy("line_number").collect()
    assert [r["reason"] for r in got] == [r for _, r in cases]
    first, last = got[0], got[-1]
    assert (first["user_id"], first["item_id"], first["quantity"], first["price"], first["event_type"],
            first["session_id"]) == ("17850", "85123A", 6, 2.55, "purchase", "536365")
    assert last["event_time"] == datetime(2010, 12, 1, 8, 34) and last["user_id"] == "13047"


def test_json_lines_and_ratings(spark):
    good = ('{"event_id":"e1","event_time":"2025-11-01T10:00:00Z","user_id":"u1","event_type":"review",'
            '"item_id":"i1","rating":"4.5"}')
    bad_rating = good.replace('"4.5"', '"11"').replace("e1", "e2")
    search = '{"event_id":"e3","event_time":"2025-11-01T10:00:00Z","user_id":"u1","event_type":"search","search_query":"red shoes"}'
    got = validate(spark, [good, bad_rating, '{"event_id": "e4", "user', search], "canonical",
                   source_file="x.jsonl.gz").orderBy("line_number").collect()
    assert [r["reason"] for r in got] == [None, "invalid_rating", "malformed_json", None]
    assert (got[0]["event_id"], got[0]["rating"]) == ("e1", 4.5)
    assert (got[3]["item_id"], got[3]["search_query"]) == (None, "red shoes")


# -- duplicates ------------------------------------------------------------------------------------------------------

def _events(spark, rows):
    """Rows of (event_id, user_id, item_id, event_type, event_time, source_file, line_number, reason[, batch
    [, record_number]]); the batch defaults to b1, the record number to null (one event per line)."""
    rows = [(*r, "b1", None)[:10] if len(r) == 8 else (*r, None)[:10] for r in rows]
    return spark.createDataFrame(rows, "event_id string, user_id string, item_id string, event_type string, "
                                       "event_time timestamp, source_file string, line_number long, reason string, "
                                       "ingest_batch_id string, record_number int")


def test_mark_duplicates_exact_and_near(spark):
    t = lambda s: datetime(2025, 1, 1, 0, 0, s)  # noqa: E731
    df = _events(spark, [
        ("e1", "u1", "i1", "view", t(0), "f", 1, None),       # kept
        ("e1", "u1", "i1", "view", t(0), "f", 2, None),       # exact copy of line 1
        ("e2", "u1", "i1", "view", t(1), "f", 3, None),       # 1 s after line 1: near
        ("e3", "u1", "i1", "view", t(5), "f", 4, None),       # 4 s after line 3: kept
        ("e4", "u1", "i1", "purchase", t(1), "f", 5, None),   # purchases are never near-deduplicated
        ("e5", "u1", "i1", "view", t(1), "f", 6, "missing_user"),
    ])
    got = clean.mark_duplicates(df, 2, ["view"]).select("line_number", "disposition")
    expected = spark.createDataFrame([(1, "accepted"), (2, "duplicate_exact"), (3, "duplicate_near"),
                                      (4, "accepted"), (5, "accepted"), (6, "quarantine")],
                                     "line_number long, disposition string")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_mark_duplicates_keeps_the_first_line_by_file_then_line(spark):
    t = lambda s: datetime(2025, 1, 1, 0, 0, s)  # noqa: E731
    df = _events(spark, [
        ("e1", "u1", "i1", "cart", t(0), "b.csv", 1, None),
        ("e1", "u1", "i1", "cart", t(0), "a.csv", 9, None),         # file a sorts first: this copy is kept
        ("e2", "u2", "i2", "view", t(3), "b.csv", 2, None),
        ("e3", "u2", "i2", "view", t(3), "a.csv", 10, None),        # same second as e2, earlier file: kept
        ("e4", "u2", "i2", "view", t(4), "a.csv", 11, None),        # 1 s after the kept e3: near
        ("e5", "u3", None, "search", t(0), "a.csv", 12, None),      # searches have no item: near on (user, type)
        ("e6", "u3", None, "search", t(2), "a.csv", 13, None),
        ("e7", "u4", "i4", "view", t(0), "a.csv", 14, None, "b2"),  # same file and line in two batches:
        ("e7", "u4", "i4", "view", t(0), "a.csv", 14, None, "b1"),  # the batches order the copies
    ])
    got = clean.mark_duplicates(df, 2, ["view", "search"]).select("source_file", "line_number", "ingest_batch_id",
                                                                  "disposition")
    expected = spark.createDataFrame([
        ("b.csv", 1, "b1", "duplicate_exact"), ("a.csv", 9, "b1", "accepted"), ("b.csv", 2, "b1", "duplicate_near"),
        ("a.csv", 10, "b1", "accepted"), ("a.csv", 11, "b1", "duplicate_near"), ("a.csv", 12, "b1", "accepted"),
        ("a.csv", 13, "b1", "duplicate_near"), ("a.csv", 14, "b2", "duplicate_exact"),
        ("a.csv", 14, "b1", "accepted"),
    ], "source_file string, line_number long, ingest_batch_id string, disposition string")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.parametrize("staged", [False, True])
def test_mark_seen_drops_events_already_in_silver(spark, tmp_path, staged):
    d1, d2, d3 = (datetime(2025, 1, d).date() for d in (1, 2, 3))
    df = spark.createDataFrame([
        ("e1", "accepted", d1), ("e1", "duplicate_exact", d1),  # in silver, and twice in this run
        ("e9", "accepted", d1),                                 # new
        ("e5", "accepted", d2),                                 # in silver, but on a date outside this run's range
        (None, "quarantine", None),
    ], "event_id string, disposition string, event_date date")
    silver = spark.createDataFrame([("e1", d1), ("e1", d1), ("e5", d3), ("e7", d2)], "event_id string, event_date date")
    staging = clean.Staging(str(tmp_path)) if staged else clean.LAZY
    seen = clean.seen_ids(df.where("disposition = 'accepted'"), silver)
    got = clean.mark_seen(df, staging(seen, "seen"))
    expected = spark.createDataFrame([
        ("e1", "duplicate_exact", d1), ("e1", "duplicate_exact", d1), ("e9", "accepted", d1), ("e5", "accepted", d2),
        (None, "quarantine", None),
    ], "event_id string, disposition string, event_date date")
    assert_df_equality(got.select(*expected.columns), expected, ignore_row_order=True, ignore_nullable=True)


# -- missing values ----------------------------------------------------------------------------------------------------

def test_mark_duplicates_orders_records_of_a_line_after_the_line(spark):
    """Nested JSON: a line's records are positions of their own, in (line, record) order."""
    t = lambda s: datetime(2025, 1, 1, 0, 0, s)  # noqa: E731
    df = _events(spark, [
        ("e1", "u1", "i1", "cart", t(0), "f", 2, None, "b1", 5),
        ("e1", "u1", "i1", "cart", t(0), "f", 3, None, "b1", 1),   # a later line: the copy
        ("e2", "u1", "i2", "cart", t(0), "f", 3, None, "b1", 2),
        ("e2", "u1", "i2", "cart", t(0), "f", 3, None, "b1", 3),   # the next record of the same line: the copy
    ])
    got = {(r["line_number"], r["record_number"]): r["disposition"]
           for r in clean.mark_duplicates(df, 2, ["view"]).collect()}
    assert got == {(2, 5): "accepted", (3, 1): "duplicate_exact", (3, 2): "accepted", (3, 3): "duplicate_exact"}


def test_interpolate_price_in_time_and_constant_quantity(spark):
    df = spark.createDataFrame([
        ("u1", "i1", "cart", datetime(2025, 1, 1, 0, 0, 0), 10.0, None, "f", 1),
        ("u1", "i2", "cart", datetime(2025, 1, 1, 0, 0, 10), None, 2, "f", 2),
        ("u1", "i3", "view", datetime(2025, 1, 1, 0, 0, 30), 40.0, None, "f", 3),
    ], "user_id string, item_id string, event_type string, event_time timestamp, price double, quantity int, "
       "source_file string, line_number long").withColumn("disposition", F.lit("accepted")) \
      .withColumn("record_number", F.lit(None).cast("int"))
    got = clean.impute_missing(df, {"price": MissingPolicy(strategy="interpolate"),
                                    "quantity": MissingPolicy(strategy="constant", value=1)})
    rows = {r["line_number"]: r for r in got.collect()}
    assert rows[2]["price"] == pytest.approx(20.0)  # 10 + (40 - 10) * 10 / 30
    assert rows[2]["imputed"] == ["price"]
    assert rows[1]["quantity"] == 1 and rows[1]["imputed"] == ["quantity"]
    assert rows[3]["quantity"] is None  # a view has no quantity to fill
    assert rows[3]["imputed"] == []


def test_drop_strategy_quarantines_with_reason(spark):
    df = spark.createDataFrame([("u1", "i1", "view", None, None, None)],
                               "user_id string, item_id string, event_type string, price double, reason string, "
                               "detail string").withColumn("disposition", F.lit("accepted"))
    got = clean.impute_missing(df, {"price": MissingPolicy(strategy="drop")}).first()
    assert (got["disposition"], got["reason"]) == ("quarantine", "missing_price")


# -- outliers ------------------------------------------------------------------------------------------------------------

def _priced(spark):
    rows = [("c1", 10.0, 1)] * 30 + [("c1", 1000.0, 1)]
    return spark.createDataFrame(rows, "category_id string, price double, quantity int") \
        .withColumn("disposition", F.lit("accepted")).withColumn("reason", F.lit(None).cast("string")) \
        .withColumn("detail", F.lit(None).cast("string"))


@pytest.mark.parametrize("action", ["flag", "cap", "quarantine"])
def test_category_outliers(spark, action):
    # median 10, MAD 0 -> spread floored at 1 % of the median: bounds 10 -+ 8 * 0.1 = [9.2, 10.8]
    got = clean.flag_outliers(_priced(spark), OutlierConf(action=action, mad_threshold=8, min_category_events=20))
    flagged = got.where("price_outlier").collect()
    assert len(flagged) == 1
    assert got.where("NOT price_outlier").count() == 30
    if action == "cap":
        assert flagged[0]["price"] == pytest.approx(10.8)
    elif action == "quarantine":
        assert (flagged[0]["disposition"], flagged[0]["reason"]) == ("quarantine", "outlier_price")
        assert flagged[0]["detail"] == "price 1000.0 outside [9.200, 10.80] for category c1"
    else:
        assert flagged[0]["price"] == 1000.0 and flagged[0]["disposition"] == "accepted"


# -- bots ------------------------------------------------------------------------------------------------------------

def test_bot_rules(spark):
    base = datetime(2025, 1, 1, 12, 0, 0).timestamp()
    bot = [("bot", datetime.fromtimestamp(base + 0.5 * i), "view") for i in range(120)]
    human = [("human", datetime.fromtimestamp(base + s), "view") for s in (0, 40, 300, 310, 900)]
    buyer = [("buyer", datetime.fromtimestamp(base), "purchase")] * 100  # one invoice of 100 lines
    df = spark.createDataFrame(bot + human + buyer, "user_id string, event_time timestamp, event_type string") \
        .withColumn("disposition", F.lit("accepted"))
    got = {r[0]: r[1] for r in clean.bot_users(df, BotConf()).collect()}
    assert set(got) == {"bot"}
    # 120 events 0.5 s apart: 119 equal gaps, so their spread is exactly 0 (not a rounding error's square root)
    assert got["bot"] == "120 events in one minute; machine-regular gaps (mean 0.5s, cv 0.000)"
    # over two days: the day count and the minute peak are per day, the gaps run across both days
    gap = [("g", datetime.fromtimestamp(base + 86_400 * d + 10 * i), "view") for d in (0, 1) for i in range(30)]
    df2 = spark.createDataFrame(gap, "user_id string, event_time timestamp, event_type string") \
        .withColumn("disposition", F.lit("accepted"))
    # 59 gaps: 58 of 10 s and one of 86,110 s -> mean 86,690 / 59 = 1469.3 s, population sd / mean = cv 7.564
    got = {r[0]: r[1] for r in clean.bot_users(df2, BotConf(max_events_per_minute=5, max_events_per_day=29,
                                                             max_gap_cv=8.0)).collect()}
    assert got == {"g": "6 events in one minute; 30 events in one day; machine-regular gaps (mean 1469.3s, cv 7.564)"}


def test_reason_catalogue_is_documented():
    codes = [r.code for r in clean.RULES]
    assert len(codes) == len(set(codes)) == len(clean.REASONS)
    for r in clean.RULES:
        assert r.code.islower() and r.meaning
        # a parse rule has a condition and a detail; a later rule is applied by its step
        assert (r.when is not None and r.detail is not None) == (r.step == "parse")
    # the later steps only see rows no parse rule took, so they come last
    steps = [r.step for r in clean.RULES]
    assert steps == sorted(steps, key=lambda s: s != "parse")


def test_later_step_reasons_must_be_declared(spark):
    df = spark.createDataFrame([(1, None, None, "accepted")], "x int, reason string, detail string, disposition string")
    with pytest.raises(KeyError, match="not a rule"):
        clean.quarantine_where(df, F.lit(True), "made_up", F.lit("d"))
    got = clean.quarantine_where(df, F.col("x") == 1, "missing_price", F.lit("price is empty")).first()
    assert (got["reason"], got["detail"], got["disposition"]) == ("missing_price", "price is empty", "quarantine")


def test_reconcile_names_what_does_not_add_up():
    totals = {"rows_in": 10, "accepted": 6, "quarantine": 2, "duplicate_exact": 1, "duplicate_near": 1}
    assert clean.reconcile(totals, 6, 2) == []
    assert clean.reconcile({**totals, "rows_in": 11}, 6, 2) == ["dispositions add up to 10, bronze has 11"]
    assert clean.reconcile(totals, 5, 3) == ["silver got 5 rows, 6 were accepted",
                                             "quarantine got 3 rows, 2 were rejected"]
