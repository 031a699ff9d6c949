"""Incremental runs of the feature jobs: which dates to recompute, and the writes of ``sessionize``, ``featurize``
and ``profile``.

A daily run recomputes only the event dates that received rows from batches cleaned since the job last ran
(``ops.processed_batches``), replacing those partitions of the per-day tables; the as-of tables are then folded from
the per-day tables and MERGEd, rewriting only rows whose content changed. A backfill (``--dates``) recomputes a
date range; ``--full`` rebuilds everything, and is chosen automatically when the job's configuration section
changed since its last run. Every path gives the same tables for the same silver events.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shopmine.conf import Settings
from shopmine.features import aggregates
from shopmine.features.daily import interactions_daily, user_daily
from shopmine.features.pipeline import fit_and_save
from shopmine.features.profiles import build_profiles
from shopmine.features.sessions import sessionize
from shopmine.io.delta import Lake
from shopmine.io.tables import (
    GOLD_CATEGORY_FEATURES,
    GOLD_INTERACTIONS,
    GOLD_INTERACTIONS_DAILY,
    GOLD_ITEM_FEATURES,
    GOLD_SESSIONS,
    GOLD_USER_DAILY,
    GOLD_USER_FEATURES,
    GOLD_USER_PROFILES,
    OPS_CLEAN_BATCHES,
    OPS_PROCESSED_BATCHES,
)
from shopmine.logs import step

log = logging.getLogger(__name__)


@dataclass
class Scope:
    """What a run recomputes: every date (``full``) or the listed ones; the batches it folds in."""

    full: bool
    dates: list[date] = field(default_factory=list)
    batches: list[tuple[str, str]] = field(default_factory=list)
    reason: str = ""

    @property
    def empty(self) -> bool:
        return not self.full and not self.dates

    def predicate(self, column: str) -> str:
        return f"{column} IN ({', '.join(f'DATE{d.isoformat()!r}' for d in sorted(self.dates))})"


def date_range(text: str) -> list[date]:
    """``2025-11-03`` or ``2025-11-03..2025-11-05`` (inclusive) -> the dates; ValueError with a clear message."""
    first, _, last = text.partition("..")
    try:
        lo = date.fromisoformat(first.strip())
        hi = date.fromisoformat(last.strip()) if last else lo
    except ValueError:
        raise ValueError(f"{text!r} is not a date or a range like 2025-11-03..2025-11-05") from None
    if hi < lo:
        raise ValueError(f"{text!r}: the range ends before it starts")
    if (hi - lo).days > 3660:
        raise ValueError(f"{text!r}: more than ten years; use --full for a rebuild")
    return [date.fromordinal(o) for o in range(lo.toordinal(), hi.toordinal() + 1)]


def section_hash(settings: Settings, section: str) -> str:
    blob = json.dumps(settings.model_dump(mode="json")[section], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def pending_batches(lake: Lake, job: str) -> list[tuple[str, str]]:
    """(ingest batch, clean run) pairs cleaned but not yet folded in by ``job``. One row per batch: bounded."""
    if not lake.exists(OPS_CLEAN_BATCHES.name):
        return []
    cleaned = lake.read(OPS_CLEAN_BATCHES.name).select("ingest_batch_id", F.col("run_id").alias("clean_run_id"))
    if lake.exists(OPS_PROCESSED_BATCHES.name):
        done = lake.read(OPS_PROCESSED_BATCHES.name).where(F.col("job") == job).select("ingest_batch_id", "clean_run_id")
        cleaned = cleaned.join(done, ["ingest_batch_id", "clean_run_id"], "left_anti")
    return sorted((r[0], r[1]) for r in cleaned.collect())


def last_conf_hash(lake: Lake, job: str) -> str | None:
    if not lake.exists(OPS_PROCESSED_BATCHES.name):
        return None
    row = (lake.read(OPS_PROCESSED_BATCHES.name).where(F.col("job") == job)
           .orderBy(F.desc("processed_at")).select("conf_hash").first())
    return row[0] if row else None


def dates_of(events: DataFrame, batches: list[tuple[str, str]]) -> list[date]:
    """The event dates holding rows of the given batches (one value per day: bounded)."""
    if not batches:
        return []
    ids = [b for b, _ in batches]
    return sorted(r[0] for r in events.where(F.col("ingest_batch_id").isin(ids)).select("event_date").distinct().collect())


def plan(lake: Lake, settings: Settings, job: str, section: str, events: DataFrame, full: bool = False,
         dates: list[date] | None = None) -> Scope:
    """Decide what ``job`` recomputes: a full rebuild, a backfill of ``dates``, or the dates of pending batches."""
    pending = pending_batches(lake, job)
    previous = last_conf_hash(lake, job)
    if full:
        return Scope(full=True, batches=pending, reason="--full")
    if previous is not None and previous != section_hash(settings, section):
        return Scope(full=True, batches=pending, reason=f"the '{section}' configuration changed since the last run")
    if dates:
        return Scope(full=False, dates=sorted(set(dates)), reason="backfill of the requested dates")
    if previous is None and pending:
        return Scope(full=True, batches=pending, reason="first run")
    return Scope(full=False, dates=dates_of(events, pending), batches=pending, reason="new batches")


def mark_processed(lake: Lake, settings: Settings, job: str, section: str, scope: Scope, run_id: str) -> None:
    if not scope.batches:
        return
    now = datetime.now(timezone.utc)
    conf_hash = section_hash(settings, section)
    rows = [(job, b, c, run_id, now, conf_hash) for b, c in scope.batches]
    df = lake.spark.createDataFrame(rows, OPS_PROCESSED_BATCHES.schema)
    ids = ", ".join(repr(b) for b, _ in scope.batches)
    lake.replace_where(df, OPS_PROCESSED_BATCHES.name, f"job = '{job}' AND ingest_batch_id IN ({ids})")


def _write_partitions(lake: Lake, df: DataFrame, name: str, column: str, scope: Scope) -> int:
    """Write the recomputed dates (every date with ``full``); returns the rows written."""
    if scope.full:
        lake.overwrite(df, name)
        return lake.last_write_metrics(name).get("numOutputRows", 0)
    return lake.replace_where(df, name, scope.predicate(column)).get("numOutputRows", 0)


def _scoped(events: DataFrame, scope: Scope) -> DataFrame:
    return events if scope.full else events.where(scope.predicate("event_date"))


# -- sessionize -----------------------------------------------------------------------------------------------------


def run_sessionize(lake: Lake, settings: Settings, events: DataFrame, scope: Scope, run_id: str) -> dict[str, int]:
    with step(log, f"sessions for {'every date' if scope.full else f'{len(scope.dates)} date(s)'}") as info:
        info["rows"] = _write_partitions(lake, sessionize(_scoped(events, scope), settings.features.session_gap_minutes),
                                         GOLD_SESSIONS.name, "session_date", scope)
    mark_processed(lake, settings, "sessionize", "features", scope, run_id)
    return {"rows_written": info["rows"], "rows_read": _events_in_scope(lake, scope, "gold.sessions", "session_date"),
            "dates": len(scope.dates)}


def _events_in_scope(lake: Lake, scope: Scope, name: str, column: str) -> int:
    """Events the run read, from the per-day table it just wrote (small: one row per user or session and day)."""
    df = lake.read(name)
    if not scope.full:
        df = df.where(scope.predicate(column))
    return int(df.agg(F.sum("n_events")).first()[0] or 0)


# -- featurize ------------------------------------------------------------------------------------------------------


def resolve_as_of(settings: Settings, user_day: DataFrame) -> date | None:
    """``features.as_of`` when set, else the last event date (one value)."""
    if settings.features.as_of is not None:
        return settings.features.as_of
    return user_day.agg(F.max("event_date")).first()[0]


@dataclass
class FeaturizeReport:
    as_of: date | None
    counts: dict[str, int]
    pipeline_path: str | None = None


def run_featurize(lake: Lake, settings: Settings, events: DataFrame, scope: Scope, run_id: str) -> FeaturizeReport:
    conf = settings.features
    counts: dict[str, int] = {"dates": len(scope.dates)}
    scoped = _scoped(events, scope)
    with step(log, "gold.interactions_daily"):
        _write_partitions(lake, interactions_daily(scoped, conf), GOLD_INTERACTIONS_DAILY.name, "event_date", scope)
    with step(log, "gold.user_daily"):
        _write_partitions(lake, user_daily(scoped), GOLD_USER_DAILY.name, "event_date", scope)
    counts["rows_read"] = _events_in_scope(lake, scope, GOLD_USER_DAILY.name, "event_date")
    daily = lake.read(GOLD_INTERACTIONS_DAILY.name)
    user_day = lake.read(GOLD_USER_DAILY.name)
    as_of = resolve_as_of(settings, user_day)
    if as_of is None:
        mark_processed(lake, settings, "featurize", "features", scope, run_id)
        return FeaturizeReport(None, counts)
    log.info("features as of %s (window: %s)", as_of,
             f"{conf.window_days} days" if conf.window_days else "all history")
    with step(log, "gold.interactions"):
        m = lake.upsert(aggregates.interactions(daily, as_of, conf), GOLD_INTERACTIONS.name, ["user_id", "item_id"],
                        delete_missing=True)
        _merge_counts(counts, "interactions", m)
    inter = lake.read(GOLD_INTERACTIONS.name)
    sessions = lake.read(GOLD_SESSIONS.name)
    with step(log, "gold.user_features"):
        uf = aggregates.user_features(user_day, sessions, daily, inter, as_of, conf)
        _merge_counts(counts, "user_features", lake.upsert(uf, GOLD_USER_FEATURES.name, ["user_id"], delete_missing=True))
    with step(log, "gold.item_features"):
        m = lake.upsert(aggregates.item_features(daily, as_of, conf), GOLD_ITEM_FEATURES.name, ["item_id"],
                        delete_missing=True)
        _merge_counts(counts, "item_features", m)
    with step(log, "gold.category_features"):
        m = lake.upsert(aggregates.category_features(daily, as_of, conf), GOLD_CATEGORY_FEATURES.name,
                        ["category_id"], delete_missing=True)
        _merge_counts(counts, "category_features", m)
    with step(log, "feature pipeline (fit + save)"):
        _, path = fit_and_save(lake, lake.read(GOLD_USER_FEATURES.name), run_id, "featurize", as_of)
    mark_processed(lake, settings, "featurize", "features", scope, run_id)
    counts["rows_written"] = sum(v for k, v in counts.items() if k.endswith(("_inserted", "_updated")))
    return FeaturizeReport(as_of, counts, path)


def _merge_counts(counts: dict[str, int], table: str, metrics: dict[str, int]) -> None:
    counts[f"{table}_inserted"] = metrics.get("numTargetRowsInserted", 0)
    counts[f"{table}_updated"] = metrics.get("numTargetRowsUpdated", 0)
    counts[f"{table}_deleted"] = metrics.get("numTargetRowsDeleted", 0)


# -- profile --------------------------------------------------------------------------------------------------------


def run_profile(lake: Lake, settings: Settings, features: DataFrame, inter: DataFrame, items: DataFrame,
                run_id: str) -> dict[str, int]:
    profiles = build_profiles(features, inter, items, settings.profile, run_id, datetime.now(timezone.utc))
    with step(log, "gold.user_profiles MERGE"):
        m = lake.upsert(profiles, GOLD_USER_PROFILES.name, ["user_id"], compare=["profile_hash"],
                        update_exprs={"profile_version": "t.profile_version + 1"})
    counts: dict[str, int] = {}
    _merge_counts(counts, "profiles", m)
    counts["rows_written"] = counts["profiles_inserted"] + counts["profiles_updated"]
    return counts



def add_scope_arguments(parser) -> None:
    """``--full`` and ``--dates`` for the incremental jobs."""
    import argparse

    def _dates(text: str) -> list[date]:
        try:
            return date_range(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    group = parser.add_mutually_exclusive_group()
    group.add_argument("--full", action="store_true", help="rebuild every date instead of only the new ones")
    group.add_argument("--dates", type=_dates, metavar="FROM[..TO]",
                       help="backfill: recompute these event dates (inclusive), e.g. 2025-11-03..2025-11-05")
