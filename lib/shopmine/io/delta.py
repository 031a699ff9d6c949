"""The one Delta I/O layer: where tables live, creating them from the registry, idempotent writes, versions.

A table ``layer.name`` is the path-based Delta table ``<lake.root>/<layer>/<name>``, or the metastore table
``<catalog>.<layer>.<name>`` when ``lake.catalog`` is set (Unity Catalog / Hive metastore on Databricks).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from delta.exceptions import (
    ConcurrentAppendException,
    ConcurrentDeleteDeleteException,
    ConcurrentDeleteReadException,
    ConcurrentWriteException,
    DeltaConcurrentModificationException,
    MetadataChangedException,
    ProtocolChangedException,
)
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shopmine.conf import Settings
from shopmine.io import fs
from shopmine.io.tables import TableSpec, spec

log = logging.getLogger(__name__)
T = TypeVar("T")

# Another writer committed between this write's read and its commit. Every write here is a whole operation that can
# run again against the new version (MERGE recomputes its matches, replaceWhere replaces the same rows), so it does.
CONFLICTS = (ConcurrentAppendException, ConcurrentDeleteReadException, ConcurrentDeleteDeleteException,
             ConcurrentWriteException, MetadataChangedException, ProtocolChangedException,
             DeltaConcurrentModificationException)
ATTEMPTS = 5


CONFLICT_NAMES = {c.__name__ for c in CONFLICTS}


def is_conflict(exc: BaseException) -> bool:
    """A Delta commit conflict: Delta's Python exception, or the Java one as py4j raises it from DeltaTable calls
    (which bypass PySpark's exception conversion)."""
    if isinstance(exc, CONFLICTS):
        return True
    java = getattr(exc, "java_exception", None)
    try:
        return java is not None and java.getClass().getSimpleName() in CONFLICT_NAMES
    except Exception:  # noqa: BLE001 - a dead gateway: not a conflict
        return False


def retry_conflicts(name: str, what: str, op: Callable[[], T], attempts: int = ATTEMPTS) -> T:
    """Run ``op``; on a Delta commit conflict, wait a little (growing, jittered) and run it again, ``attempts`` times
    in all, then let the conflict through."""
    for attempt in range(1, attempts + 1):
        try:
            return op()
        except Exception as exc:  # noqa: BLE001 - only conflicts are retried; the rest is re-raised at once
            if not is_conflict(exc) or attempt == attempts:
                raise
            java = getattr(exc, "java_exception", None)
            kind = java.getClass().getSimpleName() if java is not None else type(exc).__name__
            log.warning("%s %s: a concurrent commit conflicted (%s); retrying (%d of %d)", what, name, kind,
                        attempt + 1, attempts)
            time.sleep(0.2 * attempt + random.random() * 0.3)
    raise AssertionError("unreachable")


class Lake:
    def __init__(self, spark: SparkSession, settings: Settings):
        self.spark = spark
        self.settings = settings
        self.root = settings.lake.resolved_root()
        self.catalog = settings.lake.catalog
        # called with a table's name after every write through this Lake: a job's RunContext records the version
        # it wrote for ops.runs, so no job lists its outputs by hand
        self.on_write: Callable[[str], None] | None = None

    def _wrote(self, name: str) -> None:
        if self.on_write is not None:
            self.on_write(name)

    # -- where ---------------------------------------------------------------------------------------------------
    def path(self, name: str) -> str:
        layer, short = spec(name).name.split(".", 1)
        return f"{self.root}/{layer}/{short}"

    def ident(self, name: str) -> str:
        """A SQL identifier for the table: ``delta.`<path>``` or ``catalog.layer.name``."""
        s = spec(name)
        if self.catalog:
            return f"{self.catalog}.{s.layer}.{s.short}"
        return f"delta.`{self.path(name)}`"

    def _delta_table(self, name: str) -> DeltaTable:
        if self.catalog:
            return DeltaTable.forName(self.spark, self.ident(name))
        return DeltaTable.forPath(self.spark, self.path(name))

    def exists(self, name: str) -> bool:
        if self.catalog:
            return self.spark.catalog.tableExists(self.ident(name))
        return DeltaTable.isDeltaTable(self.spark, self.path(name))

    # -- create --------------------------------------------------------------------------------------------------
    def ensure(self, name: str) -> None:
        """Create the table from its spec if it does not exist, with its constraints. Safe to call every run."""
        s = spec(name)
        if self.exists(name):
            self._evolve(name)
            return
        builder = DeltaTable.createIfNotExists(self.spark)
        if self.catalog:
            self.spark.sql(f"CREATE SCHEMA IF NOT EXISTS {self.catalog}.{s.layer}")
            builder = builder.tableName(self.ident(name))
        else:
            builder = builder.location(self.path(name))
        builder = builder.addColumns(s.schema).comment(s.description)
        if s.partition_by:
            builder = builder.partitionedBy(*s.partition_by)
        # Readers without Spark (delta-rs, polars, DuckDB via Arrow) cannot read deletion vectors: keep them off.
        builder = builder.property("delta.enableDeletionVectors", "false")
        if s.stats_columns:
            builder = builder.property("delta.dataSkippingStatsColumns", ",".join(s.stats_columns))
        # CHECK constraints go in with the table (Delta keeps them as delta.constraints.<name> properties and raises
        # the writer protocol to 3): one commit, where an ALTER TABLE ADD CONSTRAINT per constraint cost a commit,
        # a snapshot rebuild and a scan each (six for silver.events).
        for cname, expr in s.constraints.items():
            builder = builder.property(f"delta.constraints.{cname.lower()}", expr)
        builder.execute()
        log.info("created table %s at %s", name, self.ident(name))

    def _evolve(self, name: str) -> None:
        """Bring a table made by an older release up to its spec, once per Lake and table: nullable columns the spec
        gained are added (a column the table lacks but the spec requires is a migration and stays an error), and
        the data-skipping statistics columns are set (files written from then on carry those statistics)."""
        checked = self.__dict__.setdefault("_evolved", set())
        if name in checked:
            return
        checked.add(name)
        stats = spec(name).stats_columns
        if stats:
            self.set_properties(name, {"delta.dataSkippingStatsColumns": ",".join(stats)})
        have = set(self.read(name).columns)
        new = [f for f in spec(name).schema.fields if f.name not in have and f.nullable]
        if new:
            cols = ", ".join(f"{f.name} {f.dataType.simpleString()}" for f in new)
            self.spark.sql(f"ALTER TABLE {self.ident(name)} ADD COLUMNS ({cols})")
            log.info("table %s: added column(s) %s", name, cols)

    def properties(self, name: str) -> dict[str, str]:
        """The table's properties (TBLPROPERTIES)."""
        return dict(self.spark.sql(f"DESCRIBE DETAIL {self.ident(name)}").first()["properties"] or {})

    def set_properties(self, name: str, props: dict[str, str]) -> None:
        """Set table properties, committing only when one changes (a no-op rerun leaves the version alone)."""
        current = self.properties(name)
        todo = {k: v for k, v in props.items() if current.get(k) != v}
        if todo:
            pairs = ", ".join(f"'{k}' = '{v}'" for k, v in todo.items())
            retry_conflicts(name, "set properties of", lambda: self.spark.sql(
                f"ALTER TABLE {self.ident(name)} SET TBLPROPERTIES ({pairs})"))
            self._wrote(name)

    # -- read ----------------------------------------------------------------------------------------------------
    def read(self, name: str, version: int | None = None) -> DataFrame:
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        if self.catalog:
            if version is not None:
                return self.spark.sql(f"SELECT * FROM {self.ident(name)} VERSION AS OF {int(version)}")
            return self.spark.table(self.ident(name))
        return reader.load(self.path(name))

    def version(self, name: str) -> int | None:
        """The table's current version, or None if it does not exist yet."""
        if not self.exists(name):
            return None
        return int(self._delta_table(name).history(1).select("version").first()[0])

    # -- write ---------------------------------------------------------------------------------------------------
    def _conform(self, df: DataFrame, s: TableSpec) -> DataFrame:
        """Select the spec's columns in order and cast to its types; a missing column is a programming error."""
        missing = [f.name for f in s.schema.fields if f.name not in df.columns]
        if missing:
            raise ValueError(f"cannot write {s.name}: the frame lacks columns {missing}")
        return df.select([df[f.name].cast(f.dataType).alias(f.name) for f in s.schema.fields])

    def append(self, df: DataFrame, name: str, txn: tuple[str, int] | None = None) -> None:
        """Append. With ``txn=(app_id, version)`` Delta skips the write if that app already committed that version."""
        self.ensure(name)
        writer = self._conform(df, spec(name)).write.format("delta").mode("append")
        if txn is not None:
            writer = writer.option("txnAppId", txn[0]).option("txnVersion", txn[1])
        retry_conflicts(name, "append to", lambda: self._save(writer, name))
        self._wrote(name)

    def replace_where(self, df: DataFrame, name: str, predicate: str) -> dict[str, int]:
        """Atomically replace the rows matching ``predicate`` with ``df`` (one commit; reruns converge).
        Returns the commit's operationMetrics ({} when Delta had nothing to commit: no rows in, none replaced)."""
        self.ensure(name)
        before = self.version(name)
        writer = self._conform(df, spec(name)).write.format("delta").mode("overwrite").option("replaceWhere", predicate)
        retry_conflicts(name, "replaceWhere on", lambda: self._save(writer, name))
        self._wrote(name)
        return self.last_write_metrics(name) if self.version(name) != before else {}

    def overwrite(self, df: DataFrame, name: str) -> None:
        self.ensure(name)
        writer = self._conform(df, spec(name)).write.format("delta").mode("overwrite")
        retry_conflicts(name, "overwrite of", lambda: self._save(writer, name))
        self._wrote(name)

    def upsert(self, df: DataFrame, name: str, keys: tuple[str, ...] | list[str], *,
               compare: tuple[str, ...] | list[str] | None = None, update_exprs: dict[str, str] | None = None,
               delete_missing: bool = False) -> dict[str, int]:
        """MERGE ``df`` into the table by ``keys``: insert new keys; rewrite a matched row only when one of the
        ``compare`` columns (default: every non-key column) differs, null-safely; with ``delete_missing`` delete the
        rows whose key is absent from ``df``. ``update_exprs`` overrides the SET expression of some columns
        (``t.`` = the table, ``s.`` = the new row). An empty table gets a plain write of ``df`` (the same rows).
        Returns Delta's operationMetrics of the commit (a MERGE's names also for the plain write)."""
        s = spec(name)
        self.ensure(name)
        cols = [f.name for f in s.schema.fields]
        compare = list(compare) if compare is not None else [c for c in cols if c not in keys]
        changed = " OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in compare)
        update = {c: f"s.`{c}`" for c in cols if c not in keys}
        update.update(update_exprs or {})
        source = self._conform(df, s).alias("s")

        def merge() -> None:  # built afresh on every attempt: it must read the table's newest version
            if self.detail(name)["files"] == 0:
                # An empty table (the first fill) has nothing to match: an overwrite writes the same rows without
                # MERGE's join and rewrite passes. It reads the whole (empty) table, so a concurrent commit makes
                # it fail with a conflict like the MERGE would, and the retry finds rows and merges.
                self._save(source.write.format("delta").mode("overwrite"), name)
                return
            m = (self._delta_table(name).alias("t")
                 .merge(source, " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys))
                 .whenMatchedUpdate(condition=changed, set=update)
                 .whenNotMatchedInsert(values={c: f"s.`{c}`" for c in cols}))
            if delete_missing:
                m = m.whenNotMatchedBySourceDelete()
            m.execute()

        before = self.version(name)
        retry_conflicts(name, "MERGE into", merge)
        self._wrote(name)
        if self.version(name) == before:
            return {}
        metrics = self.last_write_metrics(name)
        if "numTargetRowsInserted" not in metrics:  # the first fill: an overwrite, reported as a MERGE's inserts
            metrics.update(numTargetRowsInserted=metrics.get("numOutputRows", 0), numTargetRowsUpdated=0,
                           numTargetRowsDeleted=0)
        return metrics

    def _save(self, writer, name: str) -> None:
        if self.catalog:
            writer.saveAsTable(self.ident(name))
        else:
            writer.save(self.path(name))

    # -- maintenance ---------------------------------------------------------------------------------------------
    def detail(self, name: str) -> dict[str, int]:
        """Files and bytes of the table's current version (Delta's DESCRIBE DETAIL)."""
        r = self._delta_table(name).detail().select("numFiles", "sizeInBytes").first()
        return {"files": int(r["numFiles"] or 0), "bytes": int(r["sizeInBytes"] or 0)}

    def optimize(self, name: str, zorder_by: list[str] | tuple[str, ...] = ()) -> dict[str, int]:
        """Compact small files (OPTIMIZE), clustering by ``zorder_by`` when given. Returns Delta's metrics."""
        builder = self._delta_table(name).optimize()
        out = builder.executeZOrderBy(*zorder_by) if zorder_by else builder.executeCompaction()
        m = out.select("metrics.numFilesAdded", "metrics.numFilesRemoved").first()
        return {"files_added": int(m[0] or 0), "files_removed": int(m[1] or 0)}

    def vacuum(self, name: str, retention_hours: float) -> int:
        """Delete files no longer referenced by versions newer than the retention (VACUUM). Returns files deleted.
        Below Delta's 7-day safety minimum the check is switched off for this call only."""
        check = "spark.databricks.delta.retentionDurationCheck.enabled"
        # VACUUM lists the table's folders in a Spark job of this many tasks: 10,000 by default, a minute of task
        # overhead for a small table; twice the cluster's cores still lists in parallel.
        listing = "spark.sql.sources.parallelPartitionDiscovery.parallelism"
        saved = {k: self.spark.conf.get(k, None) for k in (check, listing)}
        if retention_hours < 168:
            self.spark.conf.set(check, "false")
        self.spark.conf.set(listing, str(max(8, 2 * self.spark.sparkContext.defaultParallelism)))
        try:
            self._delta_table(name).vacuum(retention_hours)
        finally:
            for k, v in saved.items():
                if v is None:
                    self.spark.conf.unset(k)
                else:
                    self.spark.conf.set(k, v)
        row = (self._delta_table(name).history(5).where("operation = 'VACUUM END'")
               .orderBy("version", ascending=False).select("operationMetrics").first())
        return int((row[0] or {}).get("numDeletedFiles", 0)) if row else 0

    def delete_where(self, name: str, condition: str) -> int:
        """Delta DELETE of the rows matching a SQL condition (deletion vectors are off: the files are rewritten, so
        a later VACUUM removes the old ones). Returns the rows deleted."""
        retry_conflicts(name, "delete from", lambda: self._delta_table(name).delete(condition))
        self._wrote(name)
        return int(self.last_write_metrics(name).get("numDeletedRows", 0))

    def delete_matching(self, name: str, keys: DataFrame, on: list[str]) -> int:
        """Delete the rows whose ``on`` columns match a row of ``keys`` (a MERGE ... WHEN MATCHED THEN DELETE; keys
        small enough to broadcast). Returns the rows deleted."""
        cond = " AND ".join(f"t.{c} = s.{c}" for c in on)
        retry_conflicts(name, "delete from", lambda: self._delta_table(name).alias("t").merge(
            F.broadcast(keys).alias("s"), cond).whenMatchedDelete().execute())
        self._wrote(name)
        return int(self.last_write_metrics(name).get("numTargetRowsDeleted", 0))

    def remove_folder(self, path: str) -> None:
        """Delete a scratch folder (staging data of one run) through Hadoop's FileSystem."""
        fs.delete(self.spark, path)

    def last_write_metrics(self, name: str) -> dict[str, int]:
        """operationMetrics of the table's last commit (rows written etc.), read from the Delta log."""
        row = self._delta_table(name).history(1).select("operationMetrics").first()
        metrics = (row[0] or {}) if row else {}
        return {k: int(v) for k, v in metrics.items() if str(v).isdigit()}
