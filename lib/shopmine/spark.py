"""The one SparkSession factory: Delta extensions and jars, UTC, AQE, shuffle partitions sized to the cores.

Under ``spark-submit`` or in a Databricks notebook a session already exists: it is reused, never rebuilt.
"""

from __future__ import annotations

import logging
import os
import sys

from pyspark.sql import SparkSession

from shopmine.conf import Settings

log = logging.getLogger(__name__)

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"


def get_spark(settings: Settings) -> SparkSession:
    """Return the active session (configured for Shopmine) or build one.

    A session that exists already (spark-submit's, a notebook's, the test suite's) is reused; only runtime SQL
    settings are applied to it. A new one gets the Delta jars through ``configure_spark_with_delta_pip`` unless
    they are on the classpath already (``SHOPMINE_DELTA_JARS_PRESENT=1``, e.g. on Databricks).
    """
    active = SparkSession.getActiveSession()
    if active is not None:
        _apply_runtime_conf(active, settings)
        return active

    sc = settings.spark
    # Python workers (UDFs, mapInPandas, Horovod ranks) must run this interpreter, with this environment's packages,
    # not whatever `python3` is first on the PATH; a cluster sets PYSPARK_PYTHON itself.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.appName(sc.app_name)
        .config("spark.sql.extensions", DELTA_EXTENSION)
        .config("spark.sql.catalog.spark_catalog", DELTA_CATALOG)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", sc.driver_memory)
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.sql.adaptive.coalescePartitions.enabled", "true")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.debug.maxToStringFields", "500")
        # Reads of tables we are about to overwrite in the same job must not see a cached file listing.
        .config("spark.databricks.delta.schema.autoMerge.enabled", "false")
        # Deletion vectors make tables unreadable for delta-rs/polars readers; keep them off for every new table.
        .config("spark.databricks.delta.properties.defaults.enableDeletionVectors", "false")
    )
    # spark-submit.sh passes its --master to spark-submit and says so: that master wins over the overlay's (so
    # `--master spark://… --overlay local` runs on the cluster with the local overlay's sizes).
    if sc.master and not os.environ.get("SHOPMINE_SUBMIT_MASTER"):
        builder = builder.master(sc.master)
    for key, value in sc.extra.items():
        builder = builder.config(key, value)
    if os.environ.get("SHOPMINE_DELTA_JARS_PRESENT") != "1":
        from delta import configure_spark_with_delta_pip

        builder = configure_spark_with_delta_pip(builder)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(sc.log_level)
    _apply_runtime_conf(spark, settings)
    log.info("spark %s started: master=%s, default parallelism=%d", spark.version, spark.sparkContext.master,
             spark.sparkContext.defaultParallelism)
    return spark


def _apply_runtime_conf(spark: SparkSession, settings: Settings) -> None:
    parts = settings.spark.shuffle_partitions or max(2, 2 * spark.sparkContext.defaultParallelism)
    spark.conf.set("spark.sql.shuffle.partitions", str(parts))
    # Delta rebuilds a table's state from its log in a job of this many tasks (default 50) on every read and commit.
    # In local mode one task per core suffices and more are empty overhead (at 20k events, 2 tasks instead of 8 took
    # a warm pipeline run from 35 s to 29 s). On a cluster the cores are not known yet when executors are still
    # registering, so the shuffle partitions are the guide there. Capped at Delta's default (spark.extra overrides).
    if "spark.databricks.delta.snapshotPartitions" not in settings.spark.extra:
        sc = spark.sparkContext
        tasks = sc.defaultParallelism if sc.master.startswith("local") else parts
        spark.conf.set("spark.databricks.delta.snapshotPartitions", str(max(1, min(50, tasks))))
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    # Key material (pseudonym / encryption sub-keys) travels in plans as binary literals: blank it in explain and UI.
    if "spark.sql.redaction.string.regex" not in settings.spark.extra:
        from shopmine.governance.privacy import REDACTION_REGEX

        spark.conf.set("spark.sql.redaction.string.regex", REDACTION_REGEX)
    # Runtime settings (Spark SQL's and Delta's) also reach a session that exists already; the others (memory, jars)
    # only take effect when a session is built, and Spark refuses to change them later.
    for key, value in settings.spark.extra.items():
        if key.startswith(("spark.sql.", "spark.databricks.delta.")):
            spark.conf.set(key, value)
