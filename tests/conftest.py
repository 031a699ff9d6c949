"""One SparkSession for the whole test run (local[2], 4 shuffle partitions); jobs run in-process on it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the jobs package
SHARED_DATA = ROOT.parent / "shared" / "data"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
ARTIFACTS = ROOT / "test-artifacts"  # screenshots and other outputs worth keeping from a run (git-ignored)

# 4g as in conf/local.yaml: with 2g the one session of the whole run (driver and executor in one JVM) ran out of heap
# in the Taobao 814-user recommender test (ALS grid + item-CF; old generation at 1.5 of 2 GiB when run alone), the
# JVM exited and every later test failed to connect.
BASE_CONF = ["spark.master=local[2]", "spark.shuffle_partitions=4", "spark.driver_memory=4g"]


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true",
                     help="fault tests at full size (20 kills per job, 5 fuzz seeds) instead of CI's small version")


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from shopmine.conf import load_settings
    from shopmine.logs import setup_logging
    from shopmine.spark import get_spark

    setup_logging()
    settings = load_settings("local", BASE_CONF + [f"lake.root={tmp_path_factory.mktemp('lake0')}"])
    session = get_spark(settings)
    yield session
    session.stop()


@pytest.fixture
def lake_root(tmp_path) -> str:
    return str(tmp_path / "lake")


def job_args(lake_root: str, *extra: str) -> list[str]:
    """--conf arguments for running a job in-process against a test lake."""
    out = []
    for kv in BASE_CONF + [f"lake.root={lake_root}", *extra]:
        out += ["--conf", kv]
    return out


def settings_for(lake_root: str, *extra: str):
    from shopmine.conf import load_settings

    return load_settings("local", BASE_CONF + [f"lake.root={lake_root}", *extra])


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public samples. They are never copied into the project; CI has them at ../shared/data."""
    if not SHARED_DATA.is_dir():
        message = (f"the real data samples are not at {SHARED_DATA}: these tests read ../shared/data beside the "
                   "project checkout (see README, 'Data')")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return SHARED_DATA


@pytest.fixture(scope="session")
def chromium() -> str:
    """Headless Chromium for the report test. ``spark-submit.sh test`` installs Debian's package when it can."""
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = ("no chromium on PATH: `./spark-submit.sh test` installs Debian's chromium when run as root with "
                   "apt-get; otherwise install it (apt-get install chromium)")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def spec_frame(spark, spec, rows: list[dict]):
    """A DataFrame of ``spec``'s schema from partial rows: every column a row leaves out is null, or a neutral value
    of its type where the column is NOT NULL (so a test states only the columns it is about)."""
    from datetime import date, datetime

    from pyspark.sql import types as T

    def neutral(dtype):
        if isinstance(dtype, T.StringType):
            return "x"
        if isinstance(dtype, T.BooleanType):
            return False
        if isinstance(dtype, (T.IntegerType, T.LongType)):
            return 0
        if isinstance(dtype, (T.DoubleType, T.FloatType)):
            return 0.0
        if isinstance(dtype, T.TimestampType):
            return datetime(2025, 11, 1)
        if isinstance(dtype, T.DateType):
            return date(2025, 11, 1)
        if isinstance(dtype, T.ArrayType):
            return []
        if isinstance(dtype, T.MapType):
            return {}
        raise TypeError(f"no neutral value for {dtype}")

    unknown = {k for r in rows for k in r} - set(spec.schema.fieldNames())
    if unknown:
        raise KeyError(f"{spec.name} has no column(s) {sorted(unknown)}")
    data = [tuple(r[f.name] if f.name in r else None if f.nullable else neutral(f.dataType) for f in spec.schema.fields)
            for r in rows]
    return spark.createDataFrame(data, spec.schema)
