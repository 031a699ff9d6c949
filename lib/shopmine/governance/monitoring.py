"""Monitoring: data-quality checks on the latest clean run and drift (PSI) of features and model scores between runs.

Everything is computed as Spark aggregates whose size is bounded by batches, columns, segments and buckets; only
those small results reach the driver. PSI (population stability index) of a column between a reference and a
current sample, over buckets b with shares r_b and c_b (each floored at ``EPS`` so an empty bucket stays finite)::

    PSI = sum_b (c_b - r_b) * ln(c_b / r_b)

Numeric columns are bucketed by the reference's deciles (``bins`` quantiles, duplicates merged, plus a bucket for
nulls); string columns by value, keeping the reference's ``categories`` most frequent values and pooling the rest.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from datetime import datetime, timezone

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import NumericType

from shopmine.conf import ConfError, DriftConf, QualityConf, Settings
from shopmine.io.delta import Lake
from shopmine.io.tables import OPS_CLEAN_BATCHES, OPS_DATA_QUALITY, OPS_DRIFT, SILVER_EVENTS, TABLES

log = logging.getLogger("shopmine.monitor")

EPS = 1e-4
NULL = "(null)"
OTHER = "(other)"
MAX_ROWS = 20_000  # guard on every collected aggregate: bounded by construction, a mistake fails loudly
STATUS_ORDER = {"pass": 0, "skipped": 0, "warn": 1, "fail": 2}


def psi(reference: dict[str, int], current: dict[str, int]) -> float:
    """PSI between two bucket -> count maps (shares floored at ``EPS``)."""
    n_ref, n_cur = sum(reference.values()), sum(current.values())
    total = 0.0
    for b in set(reference) | set(current):
        r = max(reference.get(b, 0) / n_ref, EPS)
        c = max(current.get(b, 0) / n_cur, EPS)
        total += (c - r) * math.log(c / r)
    return total


def psi_status(value: float | None, warn: float, fail: float) -> str:
    if value is None:
        return "skipped"
    return "fail" if value >= fail else "warn" if value >= warn else "pass"


def _collect(df: DataFrame) -> list:
    rows = df.limit(MAX_ROWS + 1).collect()
    if len(rows) > MAX_ROWS:
        raise ValueError(f"monitor aggregate exceeded {MAX_ROWS} rows: {df.columns}")
    return rows


# -- drift -----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ColumnDrift:
    table: str
    column: str
    segment: str
    rows_reference: int
    rows_current: int
    psi: float | None
    status: str
    buckets: list  # [bucket label, reference share, current share]


def _edges(ref: DataFrame, numeric: list[str], by: list[str], conf: DriftConf) -> DataFrame:
    probs = [i / conf.bins for i in range(1, conf.bins)]
    aggs = [F.coalesce(F.array_distinct(F.percentile_approx(F.col(c).cast("double"), probs, conf.accuracy)),
                       F.array().cast("array<double>")).alias(f"_e_{c}") for c in numeric]
    return ref.groupBy(*by).agg(*aggs)


def _bucketed(df: DataFrame, numeric: list[str], categorical: list[str], by: list[str], edges: DataFrame | None):
    """(by..., column, bucket) for every row and monitored column. Numeric bucket i holds edge[i-1] < v <= edge[i]."""
    if numeric:
        df = df.join(F.broadcast(edges), by, "left") if by else df.crossJoin(F.broadcast(edges))
    parts = []
    for c in numeric:
        v = F.col(c).cast("double")
        edge = F.coalesce(F.col(f"_e_{c}"), F.array().cast("array<double>"))
        idx = F.size(F.filter(edge, lambda e: e < v))
        parts.append((c, F.when(v.isNull() | F.isnan(v), F.lit(NULL)).otherwise(F.lpad(idx.cast("string"), 3, "0"))))
    for c in categorical:
        parts.append((c, F.coalesce(F.col(c).cast("string"), F.lit(NULL))))
    cells = F.explode(F.array(*[F.struct(F.lit(c).alias("column"), b.alias("bucket")) for c, b in parts]))
    return df.select(*by, cells.alias("_x")).select(*by, "_x.column", "_x.bucket")


def bucket_counts(ref: DataFrame, cur: DataFrame, columns: list[str], by: list[str], conf: DriftConf):
    """Per segment, column and bucket: reference and current counts (string columns beyond the reference's top
    ``categories`` pooled as OTHER). Returns (rows, edges by (segment, column)) - both small."""
    numeric = [c for c in columns if isinstance(ref.schema[c].dataType, NumericType)]
    categorical = [c for c in columns if c not in numeric]
    edges = _edges(ref, numeric, by, conf) if numeric else None
    keys = [*by, "column", "bucket"]
    counts = (_bucketed(ref, numeric, categorical, by, edges).groupBy(*keys).agg(F.count("*").alias("n_ref"))
              .join(_bucketed(cur, numeric, categorical, by, edges).groupBy(*keys).agg(F.count("*").alias("n_cur")),
                    keys, "full")
              .fillna(0, ["n_ref", "n_cur"]))
    rank = F.row_number().over(Window.partitionBy(*by, "column").orderBy(F.desc("n_ref"), "bucket"))
    keep = F.col("column").isin(numeric) if numeric else F.lit(False)
    counts = (counts.withColumn("bucket", F.when(keep | (rank <= conf.categories) | (F.col("bucket") == NULL),
                                                 F.col("bucket")).otherwise(F.lit(OTHER)))
              .groupBy(*keys).agg(F.sum("n_ref").alias("n_ref"), F.sum("n_cur").alias("n_cur")))
    edge_rows = _collect(edges) if edges is not None else []
    edge_map = {(_segment(r, by), c): list(r[f"_e_{c}"] or []) for r in edge_rows for c in numeric}
    return _collect(counts), edge_map


def _segment(row, by: list[str]) -> str:
    return ", ".join(f"{b}={row[b]}" for b in by)


def _label(bucket: str, edges: list[float]) -> str:
    if bucket in (NULL, OTHER) or not bucket.isdigit():
        return bucket
    i = int(bucket)
    if not edges:
        return "all"
    if i == 0:
        return f"<= {edges[0]:.4g}"
    if i >= len(edges):
        return f"> {edges[-1]:.4g}"
    return f"({edges[i - 1]:.4g}, {edges[i]:.4g}]"


def column_drift(table: str, ref: DataFrame, cur: DataFrame, columns: list[str], by: list[str],
                 conf: DriftConf, warn: float | None = None, fail: float | None = None) -> list[ColumnDrift]:
    """PSI of every column (per segment of ``by``) between two frames."""
    rows, edges = bucket_counts(ref, cur, columns, by, conf)
    groups: dict[tuple[str, str], dict[str, tuple[int, int]]] = {}
    for r in rows:
        groups.setdefault((_segment(r, by), r["column"]), {})[r["bucket"]] = (int(r["n_ref"]), int(r["n_cur"]))
    out = []
    for (segment, column), b in sorted(groups.items()):
        reference = {k: v[0] for k, v in b.items()}
        current = {k: v[1] for k, v in b.items()}
        n_ref, n_cur = sum(reference.values()), sum(current.values())
        value = psi(reference, current) if min(n_ref, n_cur) >= conf.min_rows else None
        shares = [[_label(k, edges.get((segment, column), [])), round(reference[k] / n_ref, 6) if n_ref else None,
                   round(current[k] / n_cur, 6) if n_cur else None] for k in sorted(b, key=lambda k: (k in (NULL, OTHER), k))]
        out.append(ColumnDrift(table, column, segment, n_ref, n_cur, None if value is None else round(value, 6),
                               psi_status(value, warn or conf.warn_psi, fail or conf.fail_psi), shares))
    return out


def drift_plan(settings: Settings) -> dict[str, tuple[list[str], list[str]]]:
    """table -> (columns, by) from ``monitor.drift.tables``; unknown tables or columns name the key."""
    plan = {}
    for name, t in settings.monitor.drift.tables.items():
        if name not in TABLES:
            raise ConfError(f"config key 'monitor.drift.tables': unknown table {name!r}; known: {sorted(TABLES)}")
        fields = TABLES[name].schema.fieldNames()
        bad = [c for c in [*t.columns, *t.by] if c not in fields]
        if bad:
            raise ConfError(f"config key 'monitor.drift.tables.{name}': no column(s) {bad} in {name}")
        plan[name] = (list(t.columns), list(t.by))
    return plan


# -- data quality ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    check_name: str
    table_name: str
    subject: str
    value: float | None
    lower: float | None
    upper: float | None
    status: str
    detail: str


def _bounded(name, table, subject, value, lower, upper, detail) -> Check:
    ok = value is not None and (lower is None or value >= lower) and (upper is None or value <= upper)
    return Check(name, table, subject, None if value is None else round(float(value), 6), lower, upper,
                 "skipped" if value is None else "pass" if ok else "fail", detail)


def quality_checks(lake: Lake, conf: QualityConf, drift: DriftConf) -> list[Check]:
    """Checks on the batches of the latest clean run; history = every batch cleaned earlier."""
    bad = [c for c in conf.max_null_share if c not in SILVER_EVENTS.schema.fieldNames()]
    if bad:
        raise ConfError(f"config key 'monitor.quality.max_null_share': no column(s) {bad} in {SILVER_EVENTS.name}")
    batches = lake.read(OPS_CLEAN_BATCHES.name)
    latest = batches.agg(F.max("run_id")).first()[0]
    if latest is None:
        return []
    current = _collect(batches.where(F.col("run_id") == latest))
    ids = [r["ingest_batch_id"] for r in current]
    median = batches.where(F.col("run_id") != latest).agg(F.percentile_approx("accepted", 0.5).alias("m"),
                                                          F.count("*").alias("n")).first()
    checks = []
    lo, hi = conf.row_count_ratio
    for r in current:
        b, rows_in = r["ingest_batch_id"], r["rows_in"]
        share = (lambda n: n / rows_in if rows_in else None)
        checks.append(_bounded("quarantine_share", OPS_CLEAN_BATCHES.name, b, share(r["quarantined"]), None,
                               conf.max_quarantine_share, f"{r['quarantined']:,} of {rows_in:,} lines quarantined"))
        dups = r["duplicates_exact"] + r["duplicates_near"]
        checks.append(_bounded("duplicate_share", OPS_CLEAN_BATCHES.name, b, share(dups), None,
                               conf.max_duplicate_share, f"{dups:,} of {rows_in:,} lines were duplicates"))
        if median["n"]:
            m = median["m"] or 0
            checks.append(_bounded("row_count", OPS_CLEAN_BATCHES.name, b, r["accepted"] / m if m else None, lo, hi,
                                   f"{r['accepted']:,} rows accepted; earlier batches' median {m:,} "
                                   f"({median['n']} batches); value = the ratio"))
        else:
            checks.append(Check("row_count", OPS_CLEAN_BATCHES.name, b, None, lo, hi, "skipped",
                                "no earlier batch to compare with"))
    events = lake.read(SILVER_EVENTS.name)
    new = events.where(F.col("ingest_batch_id").isin(ids))
    aggs = [F.count("*").alias("_n"), F.sum(F.col("is_bot").cast("long")).alias("_bots")]
    aggs += [F.sum(F.col(c).isNull().cast("long")).alias(c) for c in conf.max_null_share]
    for r in _collect(new.groupBy("ingest_batch_id").agg(*aggs)):
        b, n = r["ingest_batch_id"], r["_n"]
        checks.append(_bounded("bot_share", SILVER_EVENTS.name, b, r["_bots"] / n if n else None, None,
                               conf.max_bot_share, f"{r['_bots']:,} of {n:,} accepted events bot-flagged"))
        for c, limit in conf.max_null_share.items():
            checks.append(_bounded("null_share", SILVER_EVENTS.name, f"{b}: {c}", r[c] / n if n else None, None,
                                   limit, f"{r[c]:,} of {n:,} events without {c}"))
    subject = f"clean run {latest}"
    if median["n"]:
        mix = column_drift(SILVER_EVENTS.name, events.where(~F.col("ingest_batch_id").isin(ids)), new,
                           ["event_type"], [], drift.model_copy(update={"min_rows": 1}),
                           conf.mix_warn_psi, conf.mix_fail_psi)[0]
        checks.append(Check("event_mix_psi", SILVER_EVENTS.name, subject, mix.psi, None, conf.mix_warn_psi,
                            mix.status, "event-type shares new vs earlier batches: " + json.dumps(mix.buckets)))
    else:
        checks.append(Check("event_mix_psi", SILVER_EVENTS.name, subject, None, None, conf.mix_warn_psi, "skipped",
                            "no earlier batch to compare with"))
    return checks


# -- the job ---------------------------------------------------------------------------------------------------------

@dataclass
class MonitorResult:
    checks: list[Check]
    drift: list[ColumnDrift]
    baseline: list[str]  # tables seen for the first time (no reference version yet)

    def worst(self) -> str:
        statuses = [c.status for c in self.checks] + [d.status for d in self.drift]
        return max(statuses, key=STATUS_ORDER.get, default="pass")

    def breaches(self, fail_on: str) -> list[str]:
        if fail_on == "never":
            return []
        level = STATUS_ORDER[fail_on]
        out = [f"{c.check_name} {c.subject} = {c.value} ({c.detail}; bounds {c.lower}..{c.upper})"
               for c in self.checks if STATUS_ORDER[c.status] >= level]
        out += [f"PSI {d.table}.{d.column}{f' [{d.segment}]' if d.segment else ''} = {d.psi} ({d.status})"
                for d in self.drift if STATUS_ORDER[d.status] >= level]
        return out


def _vacuumed(exc: Exception) -> bool:
    text = str(exc)
    return any(k in text for k in ("FileNotFoundException", "FILE_NOT_EXIST", "does not exist", "DELTA_FILE_NOT_FOUND"))


def run_monitor(lake: Lake, settings: Settings, run_id: str, current: dict[str, int],
                reference: dict[str, int]) -> MonitorResult:
    """Run the checks, compute drift for every planned table against ``reference`` versions, write both tables."""
    conf = settings.monitor
    plan = drift_plan(settings)
    checks = quality_checks(lake, conf.quality, conf.drift) if OPS_CLEAN_BATCHES.name in current else []
    drift, baseline = [], []
    for name, (columns, by) in plan.items():
        if name not in current:
            log.info("drift: %s does not exist yet, skipped", name)
            continue
        ref_version = reference.get(name)
        if ref_version is None:
            baseline.append(name)
            log.info("drift: %s v%d is the baseline (no earlier monitor run read it)", name, current[name])
            continue
        try:
            results = column_drift(name, lake.read(name, ref_version), lake.read(name, current[name]), columns, by,
                                   conf.drift)
        except Exception as exc:  # noqa: BLE001 - only "the old version's files are gone" is handled here
            if not _vacuumed(exc):
                raise
            baseline.append(name)
            log.warning("drift: %s v%d is no longer readable (its files were vacuumed, e.g. by maintain or "
                        "forget-user): v%d becomes the baseline", name, ref_version, current[name])
            continue
        drift += [(d, ref_version, current[name]) for d in results]
        log.info("drift: %s v%d -> v%d: %s", name, ref_version, current[name],
                 ", ".join(f"{d.column}{f'[{d.segment}]' if d.segment else ''}={d.psi}" for d in results))
    now = datetime.now(timezone.utc)
    if checks:
        lake.append(lake.spark.createDataFrame(
            [(run_id, c.check_name, c.table_name, c.subject, c.value, c.lower, c.upper, c.status, c.detail, now)
             for c in checks], OPS_DATA_QUALITY.schema), OPS_DATA_QUALITY.name)
    if drift:
        lake.append(lake.spark.createDataFrame(
            [(run_id, d.table, d.column, d.segment, int(rv), int(cv), d.rows_reference, d.rows_current, d.psi,
              d.status, json.dumps(d.buckets), now) for d, rv, cv in drift], OPS_DRIFT.schema), OPS_DRIFT.name)
    return MonitorResult(checks, [d for d, _, _ in drift], baseline)
