"""maintain: OPTIMIZE compacts and Z-orders without changing a row, VACUUM deletes the unreferenced files, every
table's statistics land in ops.maintenance; configuration mistakes stop the job naming the key."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from chispa import assert_df_equality

from conftest import job_args, settings_for
from jobs import maintain
from shopmine.io.delta import Lake
from shopmine.io.tables import GOLD_RECS_TOPN


def _parquet_files(path: str) -> int:
    return sum(1 for p in Path(path).rglob("*.parquet") if "_delta_log" not in p.parts)


def test_optimize_zorder_and_vacuum(spark, lake_root):
    lake = Lake(spark, settings_for(lake_root))
    now = datetime.now(timezone.utc)
    for batch in range(6):  # six small appends to one partition: six files
        rows = [(f"u{(batch * 7 + i) % 13}", "als", i + 1, f"i{batch}-{i}", 1.0 / (i + 1), f"r{batch}", now)
                for i in range(5)]
        lake.append(spark.createDataFrame(rows, GOLD_RECS_TOPN.schema).coalesce(1), GOLD_RECS_TOPN.name)
    before = lake.read(GOLD_RECS_TOPN.name)
    expected = spark.createDataFrame(before.collect(), before.schema)  # 30 rows
    path = lake.path(GOLD_RECS_TOPN.name)
    assert lake.detail(GOLD_RECS_TOPN.name)["files"] == 6 == _parquet_files(path)
    old_version = lake.version(GOLD_RECS_TOPN.name)

    conf = ["maintain.tables=[gold.recs_topn]", "maintain.retention_hours=0"]
    assert maintain.main(job_args(lake_root, *conf)) == 0
    assert_df_equality(lake.read(GOLD_RECS_TOPN.name), expected, ignore_row_order=True, ignore_nullable=True)
    assert lake.detail(GOLD_RECS_TOPN.name)["files"] == 1
    assert _parquet_files(path) == 1  # the six small files are gone from disk, not only from the log
    (row,) = lake.read("ops.maintenance").collect()
    assert (row["table_name"], row["zorder_by"], row["files_before"], row["files_after"]) == \
        ("gold.recs_topn", "user_id", 6, 1)
    assert (row["files_removed"], row["files_added"], row["files_vacuumed"]) == (6, 1, 6)
    assert row["bytes_after"] > 0 and row["retention_hours"] == 0
    # with the files vacuumed, time travel to the old version can no longer read its data
    with pytest.raises(Exception, match="(?i)not found|does not exist|FileNotFound|FAILED_READ_FILE"):
        lake.read(GOLD_RECS_TOPN.name, old_version).select("item_id").collect()  # count() would use log stats


def test_maintain_configuration_mistakes_name_the_key(spark, lake_root, capsys):
    lake = Lake(spark, settings_for(lake_root))
    lake.ensure(GOLD_RECS_TOPN.name)
    assert maintain.main(job_args(lake_root, "maintain.zorder={gold.recs_topn: [nope]}")) == 2
    assert "maintain.zorder.gold.recs_topn" in capsys.readouterr().err
    assert maintain.main(job_args(lake_root, "maintain.zorder={gold.recs_topn: [model]}")) == 2
    assert "partition" in capsys.readouterr().err
    assert maintain.main(job_args(lake_root, "maintain.tables=[gold.nope]")) == 2
    assert "gold.nope" in capsys.readouterr().err


def _stats_keys(table_path: str) -> set[str]:
    """The columns with min/max statistics in the table's newest data file's add action."""
    import json

    adds = [json.loads(line)["add"] for f in sorted(Path(table_path, "_delta_log").glob("*.json"))
            for line in f.read_text().splitlines() if '"add"' in line]
    return set(json.loads(adds[-1]["stats"])["minValues"])


def test_statistics_only_on_the_spec_columns_and_older_tables_gain_them(spark, lake_root):
    from shopmine.io.tables import GOLD_USER_DAILY

    name = GOLD_USER_DAILY.name
    lake = Lake(spark, settings_for(lake_root))
    lake.ensure(name)
    assert lake.properties(name)["delta.dataSkippingStatsColumns"] == "user_id,last_event_time"
    now = datetime.now(timezone.utc)
    by_type = {"string": "u1", "date": now.date(), "timestamp": now, "bigint": 1, "double": 1.0,
               "array<bigint>": [1] * 24}
    frame = spark.createDataFrame([tuple(by_type[f.dataType.simpleString()] for f in GOLD_USER_DAILY.schema.fields)],
                                  GOLD_USER_DAILY.schema)
    lake.append(frame, name)
    assert _stats_keys(lake.path(name)) == {"user_id", "last_event_time"}

    # a table made before the spec named its statistics columns gets them on the next run's first write
    spark.sql(f"ALTER TABLE {lake.ident(name)} UNSET TBLPROPERTIES ('delta.dataSkippingStatsColumns')")
    lake.append(frame, name)  # this Lake checked the table already: nothing changes
    assert "delta.dataSkippingStatsColumns" not in lake.properties(name)
    assert len(_stats_keys(lake.path(name))) > 2  # Delta's default: the first 32 columns
    fresh = Lake(spark, settings_for(lake_root))
    fresh.append(frame, name)
    assert fresh.properties(name)["delta.dataSkippingStatsColumns"] == "user_id,last_event_time"
    assert _stats_keys(lake.path(name)) == {"user_id", "last_event_time"}
    assert fresh.read(name).count() == 3


def test_check_constraints_come_with_the_table_in_one_commit_and_hold(spark, lake_root):
    from shopmine.io.tables import OPS_CLEAN_BATCHES

    name = OPS_CLEAN_BATCHES.name
    lake = Lake(spark, settings_for(lake_root))
    lake.ensure(name)
    assert lake.version(name) == 0  # created with its constraint: no ALTER TABLE commit after the CREATE
    assert lake.properties(name)["delta.constraints.reconciles"] == (
        "rows_in = accepted + quarantined + duplicates_exact + duplicates_near")
    detail = spark.sql(f"DESCRIBE DETAIL {lake.ident(name)}").first()
    assert (detail["minReaderVersion"], detail["minWriterVersion"]) == (1, 3)  # readable by delta-rs / polars

    def batch(rows_in):
        return spark.createDataFrame([("b1", "r1", rows_in, 90, 5, 3, 2, rows_in)], OPS_CLEAN_BATCHES.schema)

    with pytest.raises(Exception, match="CHECK constraint reconciles"):
        lake.append(batch(101), name)  # 101 in, 100 accounted for
    assert lake.version(name) == 0 and lake.read(name).count() == 0
    lake.append(batch(100), name)
    assert lake.read(name).collect() == batch(100).collect()


def test_delta_state_reconstruction_uses_one_task_per_local_core_unless_set(spark, lake_root):
    from shopmine.spark import get_spark

    key = "spark.databricks.delta.snapshotPartitions"
    assert spark.conf.get(key) == "2"  # local[2]: one task per core, not the 4 shuffle partitions nor Delta's 50
    try:
        get_spark(settings_for(lake_root, f'spark.extra={{"{key}": "3"}}'))  # the running session, re-configured
        assert spark.conf.get(key) == "3"
    finally:
        get_spark(settings_for(lake_root))
    assert spark.conf.get(key) == "2"
