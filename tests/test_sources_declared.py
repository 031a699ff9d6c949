"""Sources declared in configuration (sources.<name> with a layout): ingest -> clean on hand-made files, every line
reconciled; each declaration mistake stops the job with exit 2 naming its key."""

from __future__ import annotations

from datetime import datetime

import pytest
import yaml
from pyspark.sql import functions as F

from conftest import job_args
from jobs import clean as clean_job
from jobs import ingest as ingest_job
from shopmine.conf import ConfError, load_settings
from shopmine.etl.clean import parse_event_time
from shopmine.io.delta import Lake
from shopmine.io.sources import get_format

# A made-up shop export: semicolons, a header, ISO-8601 times in several spellings (naive ones are Berlin time),
# letter-and-dot category codes, string ids.
SHOPX = {
    "description": "ShopX export: ts;visitor;action;sku;cat;amount",
    "columns": ["ts", "visitor", "action", "sku", "cat", "amount"], "has_header": True, "delimiter": ";",
    "fields": {"event_time": "ts", "user_id": "visitor", "event_type": "action", "item_id": "sku",
               "category_id": "cat", "price": "amount"},
    "event_types": {"VIEW": "view", "BASKET": "cart", "ORDER": "purchase"},
    "user_id_kind": "code", "item_id_kind": "code", "category_id_kind": "code", "time_kind": "text",
    "timezone": "Europe/Berlin",
}
# A kiosk log without users: the session id is the user (anonymous sessions), local China time in its own pattern,
# integer categories, numeric event codes, no header.
KIOSK = {
    "columns": ["sess", "when", "what", "item", "cat"],
    "fields": {"user_id": "sess", "session_id": "sess", "event_time": "when", "event_type": "what",
               "item_id": "item", "category_id": "cat"},
    "event_types": {"1": "view", "2": "cart", "3": "purchase"},
    "user_id_kind": "code", "time_kind": "text", "time_format": "dd.MM.yyyy HH:mm", "timezone": "Asia/Shanghai",
}

SHOPX_LINES = [
    "ts;visitor;action;sku;cat;amount",
    "2024-03-01T10:00:00Z;u-1;VIEW;sku-1;A.12.b;",                 # 2 accepted
    "2024-03-01 11:00:00.250+01:00;u-1;basket;sku-1;A.12.b;19.90",  # 3 accepted: any case, an offset, fractions
    "2024-03-01 12:00:00 UTC;u-2;ORDER;sku-2;B7;5",                # 4 accepted: '... UTC'
    "2024-03-01T13:00:00;u-2;VIEW;sku-3;B7;",                      # 5 accepted: naive, Berlin (UTC+1)
    "2024-03-01T14:00:00Z;u-3;CLICK;sku-1;A.12.b;",                # 6 unknown_event_type
    "yesterday;u-3;VIEW;sku-1;A.12.b;",                            # 7 unparseable_timestamp
    "2024-03-01T15:00:00Z;u-3;VIEW;sku-1",                         # 8 wrong_column_count
    "2024-03-01T16:00:00Z;u-4;VIEW;sku-9;A.12.b;",                 # 9 accepted
]
KIOSK_LINES = [
    "s1,01.03.2024 08:00,1,100,7",     # 1 accepted: 00:00 UTC
    "s1,01.03.2024 08:05,2,100,7.0",   # 2 accepted, category '7'
    "s2,01.03.2024 09:30,3,200,x1",    # 3 invalid_category_id
    "s2,2024-03-01 09:30,1,200,8",     # 4 unparseable_timestamp: not the declared pattern
    "s2,01.03.2024 10:00,1,201,8",     # 5 accepted: 02:00 UTC
]

# A made-up app export, nested JSON lines: one line per visit, its hits in an array (declared with records).
APPLOG = {
    "description": "app visits: {visitor, hits: [{at, kind, sku, cat, eur}]}",
    "columns": ["visitor", "hits"], "records": "hits", "record_columns": ["at", "kind", "sku", "cat", "eur"],
    "fields": {"user_id": "visitor", "event_time": "at", "event_type": "kind", "item_id": "sku", "category_id": "cat",
               "price": "eur"},
    "event_types": {"PAGEVIEW": "view", "ADD": "cart", "BUY": "purchase"},
    "user_id_kind": "code", "item_id_kind": "code", "category_id_kind": "code", "time_kind": "text",
}
BUY = '{"at": "2024-03-01T11:00:00Z", "kind": "BUY", "sku": "B-2", "cat": "y", "eur": "5"}'
SHARE = '{"at": "2024-03-01T11:01:00Z", "kind": "SHARE", "sku": "B-2", "cat": "y"}'
APPLOG_LINES = [
    '{"visitor": "v-1", "hits": [{"at": "2024-03-01T10:00:00Z", "kind": "PAGEVIEW", "sku": "A-1", "cat": "x.y"}, '
    '{"at": "2024-03-01T10:05:00Z", "kind": "ADD", "sku": "A-1", "cat": "x.y", "eur": 9.5}]}',  # 1.1, 1.2 accepted
    # 2.1 accepted, 2.2 unknown_event_type, 2.3 not an object, 2.4 a copy of 2.1 (duplicate_exact)
    f'{{"visitor": "v-2", "hits": [{BUY}, {SHARE}, 7, {BUY}]}}',
    '{"visitor": "v-3", "hits": []}',                                               # 3 no_records
    '{"visitor": "v-3", "hits": [{"at": "2024-03-01T12:00:00Z", "kind": "PAGEVIEW"',  # 4 malformed_json
    '{"visitor": "v-4", "hits": [{"at": "yesterday", "kind": "PAGEVIEW", "sku": "C-3", "cat": "z"}, '
    '{"at": "2024-03-01T13:00:00+01:00", "kind": "pageview", "sku": "C-3", "cat": "z"}]}',  # 5.1 bad time, 5.2 ok
]
# The OTTO session data set as its publisher describes it (github.com/otto-de/recsys-dataset): ts in Unix ms.
OTTO_LINES = [
    '{"session": 42, "events": [{"aid": 0, "ts": 1661200010000, "type": "clicks"}, '
    '{"aid": 1, "ts": 1661200020000, "type": "carts"}, {"aid": 2, "ts": 1661200030000, "type": "orders"}]}',
    '{"session": 43, "events": [{"aid": 5, "ts": 1661200040000, "type": "views"}, '
    '{"aid": "x7", "ts": 1661200050000, "type": "clicks"}, {"ts": 1661200060000, "type": "clicks"}]}',
    '{"session": 44, "events": [{"aid": 9, "ts": 1661200070000, "type": "clicks"}',  # the last line, cut short
]


def _overlay(tmp_path, sources: dict, name: str = "sources.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"sources": sources}))
    return path


@pytest.mark.slow
def test_two_declared_sources_ingest_and_clean_line_by_line(spark, tmp_path, lake_root):
    overlay = _overlay(tmp_path, {"shopx": SHOPX, "kiosk": KIOSK})
    (tmp_path / "shopx.csv").write_text("\n".join(SHOPX_LINES) + "\n")
    (tmp_path / "kiosk.txt").write_text("\n".join(KIOSK_LINES) + "\n")
    args = job_args(lake_root) + ["--overlay", str(overlay)]
    assert ingest_job.main(args + ["--format", "shopx", "--input", str(tmp_path / "shopx.csv")]) == 0
    assert ingest_job.main(args + ["--format", "kiosk", "--input", str(tmp_path / "kiosk.txt")]) == 0
    assert clean_job.main(args) == 0

    lake = Lake(spark, load_settings(str(overlay), [f"lake.root={lake_root}"]))
    silver = {(r["source"], r["line_number"]): r for r in lake.read("silver.events").collect()}
    quarantine = {(r["source_format"], r["line_number"]): r["reason"] for r in lake.read("silver.quarantine").collect()}
    assert quarantine == {("shopx", 6): "unknown_event_type", ("shopx", 7): "unparseable_timestamp",
                          ("shopx", 8): "wrong_column_count", ("kiosk", 3): "invalid_category_id",
                          ("kiosk", 4): "unparseable_timestamp"}
    got = {k: (r["user_id"], r["session_id"], r["item_id"], r["category_id"], r["event_type"], r["event_time"],
               r["price"]) for k, r in silver.items()}
    assert got == {
        ("shopx", 2): ("u-1", None, "sku-1", "A.12.b", "view", datetime(2024, 3, 1, 10, 0), None),
        ("shopx", 3): ("u-1", None, "sku-1", "A.12.b", "cart", datetime(2024, 3, 1, 10, 0, 0, 250000), 19.9),
        ("shopx", 4): ("u-2", None, "sku-2", "B7", "purchase", datetime(2024, 3, 1, 12, 0), 5.0),
        ("shopx", 5): ("u-2", None, "sku-3", "B7", "view", datetime(2024, 3, 1, 12, 0), None),
        ("shopx", 9): ("u-4", None, "sku-9", "A.12.b", "view", datetime(2024, 3, 1, 16, 0), None),
        ("kiosk", 1): ("s1", "s1", "100", "7", "view", datetime(2024, 3, 1, 0, 0), None),
        ("kiosk", 2): ("s1", "s1", "100", "7", "cart", datetime(2024, 3, 1, 0, 5), None),
        ("kiosk", 5): ("s2", "s2", "201", "8", "view", datetime(2024, 3, 1, 2, 0), None),
    }
    # every line reconciles: rows in = accepted + quarantined + duplicates, per batch
    batches = lake.read("ops.clean_batches").collect()
    assert sorted((b["rows_in"], b["accepted"], b["quarantined"]) for b in batches) == [(5, 3, 2), (8, 5, 3)]
    assert all(b["rows_in"] == b["accepted"] + b["quarantined"] + b["duplicates_exact"] + b["duplicates_near"]
               for b in batches)


@pytest.mark.slow
def test_nested_json_sources_give_one_row_per_record(spark, tmp_path, lake_root):
    overlay = _overlay(tmp_path, {"applog": APPLOG})
    (tmp_path / "applog.jsonl").write_text("\n".join(APPLOG_LINES) + "\n")
    (tmp_path / "otto.jsonl").write_text("\n".join(OTTO_LINES))
    args = job_args(lake_root) + ["--overlay", str(overlay)]
    assert ingest_job.main(args + ["--format", "applog", "--input", str(tmp_path / "applog.jsonl")]) == 0
    assert ingest_job.main(args + ["--format", "otto", "--input", str(tmp_path / "otto.jsonl")]) == 0
    assert clean_job.main(args) == 0

    lake = Lake(spark, load_settings(str(overlay), [f"lake.root={lake_root}"]))
    quarantine = {(r["source_format"], r["line_number"], r["record_number"]): (r["reason"], r["raw_record"])
                  for r in lake.read("silver.quarantine").collect()}
    assert {k: v[0] for k, v in quarantine.items()} == {
        ("applog", 2, 2): "unknown_event_type", ("applog", 2, 3): "malformed_json", ("applog", 3, None): "no_records",
        ("applog", 4, None): "malformed_json", ("applog", 5, 1): "unparseable_timestamp",
        ("otto", 2, 1): "unknown_event_type", ("otto", 2, 2): "invalid_item_id", ("otto", 2, 3): "missing_item",
        ("otto", 3, None): "truncated_line"}
    # a rejected record is kept as its own JSON; a rejected line verbatim
    assert quarantine[("applog", 2, 2)][1] == SHARE.replace(": ", ":").replace(", ", ",")
    assert quarantine[("applog", 2, 3)][1] == "7"
    assert quarantine[("applog", 4, None)][1] == APPLOG_LINES[3]
    silver = {(r["source"], r["line_number"], r["record_number"]): (
        r["user_id"], r["session_id"], r["item_id"], r["category_id"], r["event_type"], r["event_time"], r["price"])
        for r in lake.read("silver.events").collect()}
    assert silver == {
        ("applog", 1, 1): ("v-1", None, "A-1", "x.y", "view", datetime(2024, 3, 1, 10, 0), None),
        ("applog", 1, 2): ("v-1", None, "A-1", "x.y", "cart", datetime(2024, 3, 1, 10, 5), 9.5),
        ("applog", 2, 1): ("v-2", None, "B-2", "y", "purchase", datetime(2024, 3, 1, 11, 0), 5.0),
        ("applog", 5, 2): ("v-4", None, "C-3", "z", "view", datetime(2024, 3, 1, 12, 0), None),
        ("otto", 1, 1): ("42", "42", "0", None, "view", datetime(2022, 8, 22, 20, 26, 50), None),
        ("otto", 1, 2): ("42", "42", "1", None, "cart", datetime(2022, 8, 22, 20, 27, 0), None),
        ("otto", 1, 3): ("42", "42", "2", None, "purchase", datetime(2022, 8, 22, 20, 27, 10), None),
    }
    # every line and every record reconciles: applog's 5 lines give 10 rows (4 accepted, 5 quarantined, 1 copy)
    batches = sorted((b["lines_in"], b["rows_in"], b["accepted"], b["quarantined"], b["duplicates_exact"])
                     for b in lake.read("ops.clean_batches").collect())
    assert batches == [(3, 7, 3, 4, 0), (5, 10, 4, 5, 1)]


def test_declared_time_kinds(spark):
    df = spark.createDataFrame([("1709251200000000",), ("01.03.2024 08:00",), ("2024-03-01T08:00:00+08:00",)], "raw string")
    row = df.select(parse_event_time(F.col("raw"), "epoch_us", "UTC").alias("us"),
                    parse_event_time(F.col("raw"), "text", "Asia/Shanghai", "dd.MM.yyyy HH:mm").alias("fmt"),
                    parse_event_time(F.col("raw"), "text", "UTC", "yyyy-MM-dd'T'HH:mm:ssXXX").alias("zoned")).collect()
    assert row[0]["us"] == datetime(2024, 3, 1, 0, 0)
    assert row[1]["fmt"] == datetime(2024, 3, 1, 0, 0) and row[0]["fmt"] is None
    assert row[2]["zoned"] == datetime(2024, 3, 1, 0, 0)  # a pattern with an offset is not shifted again


def _bad(**change):
    d = {**SHOPX, **change}
    return {k: v for k, v in d.items() if v is not None}


@pytest.mark.parametrize("sources,key,message", [
    ({"bad": _bad(fields={**SHOPX["fields"], "colour": "cat"})}, "sources.bad.fields.colour",
     "'colour' is not a canonical field"),
    ({"bad": _bad(fields={**SHOPX["fields"], "user_id": "nope"})}, "sources.bad.fields.user_id",
     "maps to column 'nope', which is not in sources.bad.columns"),
    ({"bad": _bad(fields={k: v for k, v in SHOPX["fields"].items() if k != "item_id"})}, "sources.bad.fields",
     "needs a column for item_id"),
    ({"bad": _bad(event_types={"CLK": "click"})}, "sources.bad.event_types.CLK", "'click' is not an event type"),
    ({"bad": _bad(delimiter=";;")}, "sources.bad.delimiter", "must be one character"),
    ({"bad": _bad(delimiter='"')}, "sources.bad.delimiter", "must be one character"),
    ({"bad": _bad(time_kind="auto", time_format="dd.MM.yyyy")}, "sources.bad.time_format", "applies to text times only"),
    ({"bad": _bad(time_kind="fortnights")}, "sources.bad.time_kind", "invalid value 'fortnights'"),
    ({"bad": _bad(columns=["ts", "ts"])}, "sources.bad.columns", "each name once"),
    ({"taobao": {"columns": ["a", "b"], "fields": {"user_id": "a"}}}, "sources.taobao.columns", "is a built-in format"),
    ({"taobao": {"delimiter": ";"}}, "sources.taobao.delimiter", "is a built-in format"),
    ({"mine": {"timezone": "UTC"}}, "sources.mine", "is not a built-in format"),
    ({"bad": {**APPLOG, "records": "visits"}}, "sources.bad.records", "must be one of sources.bad.columns"),
    ({"bad": {**APPLOG, "record_columns": []}}, "sources.bad.record_columns", "must list the keys of a record"),
    ({"bad": {**APPLOG, "record_columns": ["at", "visitor"]}}, "sources.bad.record_columns", "none of them also in"),
    ({"bad": _bad(record_columns=["at"])}, "sources.bad.record_columns", "applies to nested JSON only"),
    ({"bad": {**APPLOG, "has_header": True}}, "sources.bad.has_header", "delimited files only"),
    ({"bad": {**APPLOG, "fields": {**APPLOG["fields"], "item_id": "hits"}}}, "sources.bad.fields.item_id",
     "it is the array of records"),
])
def test_declaration_mistakes_name_their_key(tmp_path, sources, key, message):
    overlay = _overlay(tmp_path, sources)
    with pytest.raises(ConfError) as err:
        load_settings(str(overlay))
    assert f"config key '{key}' in " in str(err.value) and message in str(err.value)
    assert str(overlay) in str(err.value)  # the file that set it


def test_a_mistake_exits_2_before_spark_and_an_unknown_format_names_the_known_ones(spark, tmp_path, lake_root, capsys):
    overlay = _overlay(tmp_path, {"bad": _bad(delimiter=";;")})
    (tmp_path / "x.csv").write_text("\n".join(SHOPX_LINES) + "\n")
    code = ingest_job.main(job_args(lake_root) + ["--overlay", str(overlay), "--format", "bad", "--input",
                                                  str(tmp_path / "x.csv")])
    assert code == 2 and "sources.bad.delimiter" in capsys.readouterr().err
    code = ingest_job.main(job_args(lake_root) + ["--format", "shopy", "--input", str(tmp_path / "x.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "unknown format 'shopy'" in err and "taobao" in err and "sources.<name>" in err


def test_built_ins_are_not_declared_and_declared_ones_resolve(tmp_path):
    settings = load_settings(str(_overlay(tmp_path, {"shopx": SHOPX})))
    assert get_format("taobao", settings).category_id_kind is None  # built-ins keep their categories unchecked
    fmt = get_format("shopx", settings)
    assert (fmt.delimiter, fmt.has_header, fmt.event_types["basket"], fmt.category_id_kind) == (";", True, "cart", "code")
    with pytest.raises(ValueError, match="unknown format 'shopx'"):
        get_format("shopx")
