"""Ingest: whole-file errors stop the job naming the file (nothing written), exact line numbers, no re-ingest."""

from __future__ import annotations

import gzip

import pytest
from pyspark.sql import functions as F

from conftest import job_args, settings_for
from jobs import ingest as ingest_job
from shopmine.io.delta import Lake
from shopmine.io.tables import BRONZE_EVENTS_RAW

UCI_HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"


def run_ingest(lake_root, paths, fmt, capsys):
    code = ingest_job.main(job_args(lake_root) + ["--format", fmt, "--input", *map(str, paths)])
    return code, capsys.readouterr().err


def bronze_exists(spark, lake_root) -> bool:
    return Lake(spark, settings_for(lake_root)).exists(BRONZE_EVENTS_RAW.name)


@pytest.mark.parametrize("name,content,fmt,message", [
    ("empty.csv", b"", "taobao", "the file is empty"),
    ("header_only.csv", (UCI_HEADER + "\n").encode(), "online_retail", "the file has no data"),
    ("fake.csv.gz", b"this is not gzip", "taobao", "named .gz but is not gzip data"),
    ("image.csv", bytes(range(256)) * 40, "taobao", "binary or not UTF-8 text"),
    ("no_customer.csv", b"InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,Country\n1,2,x,1,2010-12-01 08:26:00,1.0,UK\n",
     "online_retail", "missing required columns ['CustomerID']"),
    ("ratings.tsv", b"1\t2\t5\t881250949\n3\t4\t3\t891717742\n", "taobao", "wrong format for this adapter"),
])
def test_unreadable_files_stop_the_job_naming_the_file(spark, tmp_path, lake_root, capsys, name, content, fmt, message):
    path = tmp_path / name
    path.write_bytes(content)
    code, err = run_ingest(lake_root, [path], fmt, capsys)
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("shopmine ingest: ") and message in last and name in last
    assert "Traceback" not in err
    assert not bronze_exists(spark, lake_root)  # no partial write


def test_missing_input_and_unknown_format(spark, tmp_path, lake_root, capsys):
    code, err = run_ingest(lake_root, [tmp_path / "nope.csv"], "taobao", capsys)
    assert code == 1 and "no such file or directory" in err
    code, err = run_ingest(lake_root, [tmp_path], "parquetish", capsys)
    assert code == 2 and "unknown format 'parquetish'" in err and "taobao" in err


def test_line_numbers_are_exact_across_file_splits(spark, tmp_path, lake_root, capsys):
    # 3,000 lines in small splits: several tasks read one file, and lines straddle split boundaries.
    lines = [f"{i},{1000 + i},7,pv,{1511658000 + i}" for i in range(1, 3001)]
    (tmp_path / "big.csv").write_text("\n".join(lines) + "\n")
    with gzip.open(tmp_path / "small.csv.gz", "wt") as f:
        f.write("1,2,3,pv,1511658000\n4,5,6,buy,1511658001")  # no newline after the last line
    spark.conf.set("spark.sql.files.maxPartitionBytes", "8192")
    try:
        code, _ = run_ingest(lake_root, [tmp_path / "big.csv", tmp_path / "small.csv.gz"], "taobao", capsys)
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
    assert code == 0
    bronze = Lake(spark, settings_for(lake_root)).read(BRONZE_EVENTS_RAW.name)
    big = bronze.where(F.col("source_file").endswith("big.csv"))
    assert big.count() == 3000
    # the user id written in each line is its line number
    assert big.where(F.split("raw_line", ",")[0].cast("long") != F.col("line_number")).count() == 0
    assert [r[0] for r in big.where("is_last_line").select("line_number").collect()] == [3000]
    small = {r["line_number"]: (r["raw_line"], r["is_last_line"]) for r in
             bronze.where(F.col("source_file").endswith("small.csv.gz")).collect()}
    assert small == {1: ("1,2,3,pv,1511658000", False), 2: ("4,5,6,buy,1511658001", True)}
    assert bronze.select("ingest_batch_id").distinct().count() == 1


def test_reingest_adds_nothing_and_new_files_form_a_new_batch(spark, tmp_path, lake_root, capsys):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    a = inbox / "a.csv"
    a.write_text(UCI_HEADER + "\n536365,85123A,HEART,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom\n")
    assert run_ingest(lake_root, [a], "online_retail", capsys)[0] == 0
    lake = Lake(spark, settings_for(lake_root))
    v1 = lake.version(BRONZE_EVENTS_RAW.name)
    assert run_ingest(lake_root, [a], "online_retail", capsys)[0] == 0
    assert lake.version(BRONZE_EVENTS_RAW.name) == v1  # no commit at all
    b = inbox / "b.csv"
    b.write_text(UCI_HEADER + "\n536366,22633,HAND WARMER,6,2010-12-01 08:28:00,1.85,17850.0,United Kingdom\n")
    assert run_ingest(lake_root, [inbox], "online_retail", capsys)[0] == 0  # a folder: a.csv skipped, b.csv new
    bronze = lake.read(BRONZE_EVENTS_RAW.name)
    assert bronze.count() == 2  # the header lines are not data
    assert bronze.select("ingest_batch_id").distinct().count() == 2
    runs = lake.read("ops.runs").where("job = 'ingest'").orderBy("started_at").select("status", "rows_written").collect()
    assert [tuple(r) for r in runs] == [("ok", 1), ("noop", 0), ("ok", 1)]


@pytest.mark.slow
def test_canonical_parquet_rows_are_kept_as_json(spark, tmp_path, lake_root, capsys):
    from shopmine.io.sources import CANONICAL_COLUMNS

    row = {c: None for c in CANONICAL_COLUMNS}
    row.update(event_id="p1", event_time="2025-11-01T10:00:00Z", user_id="u1", event_type="cart", item_id="i1",
               price="9.99", quantity="2")
    spark.createDataFrame([row, {**row, "event_id": "p2", "user_id": None}], ", ".join(
        f"{c} string" for c in CANONICAL_COLUMNS)).coalesce(1).write.parquet(str(tmp_path / "export"))
    code, _ = run_ingest(lake_root, [tmp_path / "export"], "canonical", capsys)
    assert code == 0
    from jobs import clean as clean_job

    assert clean_job.main(job_args(lake_root)) == 0
    lake = Lake(spark, settings_for(lake_root))
    got = lake.read("silver.events").select("event_id", "user_id", "event_type", "price", "quantity").collect()
    assert [tuple(r) for r in got] == [("p1", "u1", "cart", 9.99, 2)]
    q = lake.read("silver.quarantine").first()
    assert (q["reason"], q["line_number"]) == ("missing_user", 2) and '"event_id":"p2"' in q["raw_record"]
