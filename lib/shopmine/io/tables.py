"""The registry of every Delta table: name, schema (defined once, here), partitioning, description, invariants.

NOT NULL invariants come from the schema's nullability; CHECK constraints are ``delta.constraints.<name>`` table
properties set when the table is created. docs/tables.md is generated from this module
(``python -m shopmine.docs``), so it cannot drift from the code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DataType,
    DateType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from shopmine.vocab import EVENT_TYPES, FUNNEL


@dataclass(frozen=True)
class TableSpec:
    name: str  # "layer.table"
    schema: StructType
    description: str
    partition_by: tuple[str, ...] = ()
    constraints: dict[str, str] = field(default_factory=dict)
    column_docs: dict[str, str] = field(default_factory=dict)
    # Columns Delta keeps min / max / null-count statistics for (data skipping); empty: Delta's default (the first
    # 32). Statistics on a column nobody filters or Z-orders on only cost write time: on the big tables they took a
    # fifth of the write (silver.events at 10M events: 45 -> 37 s with the six columns below instead of all 23).
    stats_columns: tuple[str, ...] = ()

    @property
    def layer(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def short(self) -> str:
        return self.name.split(".", 1)[1]


def _f(name: str, dtype: DataType, nullable: bool = True) -> StructField:
    return StructField(name, dtype, nullable)


_types_sql = ", ".join(f"'{t}'" for t in EVENT_TYPES)

TABLES: dict[str, TableSpec] = {}


def _register(spec: TableSpec) -> TableSpec:
    TABLES[spec.name] = spec
    return spec


BRONZE_EVENTS_RAW = _register(TableSpec(
    name="bronze.events_raw",
    description="Every data line of every ingested file, verbatim, with where it came from.",
    schema=StructType([
        _f("raw_line", StringType()),
        _f("line_number", LongType(), False),
        _f("is_last_line", BooleanType(), False),
        _f("source_file", StringType(), False),
        _f("source_fingerprint", StringType(), False),
        _f("source_format", StringType(), False),
        _f("ingest_batch_id", StringType(), False),
        _f("ingested_at", TimestampType(), False),
    ]),
    partition_by=("source_format", "ingest_batch_id"),
    stats_columns=("line_number", "source_file", "source_fingerprint", "ingested_at"),
    constraints={"line_number_positive": "line_number >= 1"},
    column_docs={
        "raw_line": "the line as read (UTF-8 decoded; invalid bytes become U+FFFD); JSON of the row for Parquet input",
        "line_number": "1-based line number in the source file (the header is line 1 where there is one)",
        "is_last_line": "whether this is the file's last line (a failing last line is reported as truncated)",
        "source_fingerprint": "hash of path, size and modification time: the same file is never ingested twice",
        "ingest_batch_id": "hash of the fingerprints of the files ingested together",
    },
))

SILVER_EVENTS = _register(TableSpec(
    name="silver.events",
    description="Clean events in the canonical schema: typed, deduplicated, validated, bot-flagged.",
    schema=StructType([
        _f("event_id", StringType(), False),
        _f("user_id", StringType(), False),
        _f("session_id", StringType()),
        _f("item_id", StringType()),
        _f("category_id", StringType()),
        _f("brand", StringType()),
        _f("price", DoubleType()),
        _f("quantity", IntegerType()),
        _f("event_type", StringType(), False),
        _f("search_query", StringType()),
        _f("rating", DoubleType()),
        _f("event_time", TimestampType(), False),
        _f("event_date", DateType(), False),
        _f("source", StringType(), False),
        _f("source_file", StringType(), False),
        _f("line_number", LongType(), False),
        _f("record_number", IntegerType()),
        _f("ingest_batch_id", StringType(), False),
        _f("is_bot", BooleanType(), False),
        _f("bot_reason", StringType()),
        _f("price_outlier", BooleanType(), False),
        _f("quantity_outlier", BooleanType(), False),
        _f("imputed", ArrayType(StringType()), False),
        _f("pii_sealed", StringType()),
    ]),
    partition_by=("event_date",),
    stats_columns=("user_id", "item_id", "event_type", "event_time", "ingest_batch_id", "source_file"),
    constraints={
        "event_type_known": f"event_type IN ({_types_sql})",
        "item_unless_search": "event_type = 'search' OR item_id IS NOT NULL",
        "price_positive": "price IS NULL OR price > 0",
        "quantity_positive": "quantity IS NULL OR quantity > 0",
        "rating_only_reviews": "rating IS NULL OR event_type = 'review'",
        "event_date_matches": "event_date = CAST(event_time AS DATE)",
    },
    column_docs={
        "event_id": "the source's event id, else a hash of the canonical fields (exact duplicates share it)",
        "user_id": "normalised id (integral ids without '.0' or spaces); with a pseudonym key set, its keyed "
                   "pseudonym HMAC-SHA256(key, id) (32 hex digits) instead, here and in every later table",
        "event_time": "UTC",
        "source_file": "file and line the event came from (lineage back to bronze)",
        "record_number": "for nested JSON (one line per session), the event's place (from 1) in the line's records; "
                         "null for formats with one event per line",
        "is_bot": "the user's behaviour in this batch is inhuman (see bot_reason)",
        "imputed": "columns whose value was filled by a missing-value strategy",
        "pii_sealed": "the input's email / phone / IP columns that privacy.pii encrypts, as one JSON object sealed "
                      "with AES-256-GCM (base64); null when they are dropped or absent",
    },
))

SILVER_QUARANTINE = _register(TableSpec(
    name="silver.quarantine",
    description="Every rejected input line, verbatim (for nested JSON, the rejected record), with a reason code and a "
                "human-readable detail.",
    schema=StructType([
        _f("raw_record", StringType()),
        _f("source_format", StringType(), False),
        _f("source_file", StringType(), False),
        _f("line_number", LongType(), False),
        _f("record_number", IntegerType()),
        _f("ingest_batch_id", StringType(), False),
        _f("reason", StringType(), False),
        _f("detail", StringType()),
    ]),
    column_docs={"reason": "a reason code of docs/quarantine-reasons.md", "detail": "names the field and value",
                 "record_number": "for nested JSON, the record's place (from 1) in the line's records; null for "
                                  "formats with one event per line, and for a whole line rejected"},
))

OPS_RUNS = _register(TableSpec(
    name="ops.runs",
    description="One row per job run: what it read and wrote (table versions), counts, seconds, outcome.",
    schema=StructType([
        _f("run_id", StringType(), False),
        _f("job", StringType(), False),
        _f("started_at", TimestampType(), False),
        _f("seconds", DoubleType(), False),
        _f("status", StringType(), False),
        _f("conf_hash", StringType(), False),
        _f("input_versions", MapType(StringType(), LongType()), False),
        _f("output_versions", MapType(StringType(), LongType()), False),
        _f("rows_read", LongType(), False),
        _f("rows_written", LongType(), False),
        _f("rows_rejected", LongType(), False),
        _f("counts", MapType(StringType(), LongType()), False),
        _f("message", StringType()),
    ]),
    constraints={"status_known": "status IN ('ok', 'failed', 'noop')"},
))

OPS_CLEAN_BATCHES = _register(TableSpec(
    name="ops.clean_batches",
    description="Reconciliation per ingest batch: rows in = accepted + quarantined + duplicates dropped.",
    schema=StructType([
        _f("ingest_batch_id", StringType(), False),
        _f("run_id", StringType(), False),
        _f("rows_in", LongType(), False),
        _f("accepted", LongType(), False),
        _f("quarantined", LongType(), False),
        _f("duplicates_exact", LongType(), False),
        _f("duplicates_near", LongType(), False),
        _f("lines_in", LongType()),
    ]),
    constraints={"reconciles": "rows_in = accepted + quarantined + duplicates_exact + duplicates_near"},
    column_docs={"rows_in": "rows the batch's lines give: one per line, one per record for nested JSON (a nested "
                            "line that is broken or has no records: one)",
                 "lines_in": "the batch's lines in bronze (every one is accounted for by its rows)"},
))

OPS_GENERATOR_TRUTH = _register(TableSpec(
    name="ops.generator_truth",
    description="Ground truth of the synthetic generator: what it injected (bots, duplicates, malformed lines) and "
                "each human user's tastes and purchase propensity.",
    schema=StructType([
        _f("kind", StringType(), False),
        _f("expected", StringType(), False),
        _f("raw_line", StringType()),
        _f("user_id", StringType()),
        _f("event_id", StringType()),
    ]),
    constraints={"kind_known": "kind IN ('malformed', 'duplicate_exact', 'duplicate_near', 'bot', 'taste', "
                               "'propensity')"},
    column_docs={"expected": "the reason code (malformed), 'duplicate_exact'/'duplicate_near', 'bot', the liked "
                             "category (taste) or the user's propensity factor (mean ~1)",
                 "raw_line": "the injected line (malformed, duplicates) or the taste's weight (the user's three sum "
                             "to 1)"},
))


OPS_PROCESSED_BATCHES = _register(TableSpec(
    name="ops.processed_batches",
    description="Which cleaned batches each incremental job (sessionize, featurize) has folded into its tables.",
    schema=StructType([
        _f("job", StringType(), False),
        _f("ingest_batch_id", StringType(), False),
        _f("clean_run_id", StringType(), False),
        _f("run_id", StringType(), False),
        _f("processed_at", TimestampType(), False),
        _f("conf_hash", StringType(), False),
    ]),
    column_docs={"conf_hash": "hash of the job's configuration section: a change triggers a full rebuild",
                 "clean_run_id": "the clean run that produced the batch's silver rows (a re-clean makes it pending again)"},
))
OPS_ARTIFACTS = _register(TableSpec(
    name="ops.artifacts",
    description="Models and fitted pipelines saved by runs (Spark ML format), newest last: later jobs load from here.",
    schema=StructType([
        _f("run_id", StringType(), False),
        _f("job", StringType(), False),
        _f("kind", StringType(), False),
        _f("path", StringType(), False),
        _f("as_of", DateType()),
        _f("created_at", TimestampType(), False),
        _f("details", StringType()),
    ]),
    column_docs={"kind": "e.g. feature_pipeline", "details": "JSON: input columns, output columns, training rows"},
))
OPS_MAINTENANCE = _register(TableSpec(
    name="ops.maintenance",
    description="What each maintain run did to each table: OPTIMIZE (compaction, Z-order) and VACUUM, with file "
                "counts and sizes before and after.",
    schema=StructType([
        _f("run_id", StringType(), False),
        _f("table_name", StringType(), False),
        _f("zorder_by", StringType()),
        _f("files_before", LongType(), False),
        _f("bytes_before", LongType(), False),
        _f("files_after", LongType(), False),
        _f("bytes_after", LongType(), False),
        _f("files_removed", LongType(), False),
        _f("files_added", LongType(), False),
        _f("files_vacuumed", LongType(), False),
        _f("retention_hours", DoubleType()),
        _f("seconds", DoubleType(), False),
        _f("created_at", TimestampType(), False),
    ]),
    column_docs={"zorder_by": "comma-separated Z-order columns (null: compaction only, or OPTIMIZE off)",
                 "files_before": "files of the current version before OPTIMIZE (after: once OPTIMIZE committed)",
                 "files_vacuumed": "unreferenced files VACUUM deleted (null retention: VACUUM off)"},
))

OPS_DATA_QUALITY = _register(TableSpec(
    name="ops.data_quality",
    description="Data-quality checks of each monitor run on the batches of the latest clean run, against conf "
                "bounds and the earlier batches: one row per check and subject.",
    schema=StructType([
        _f("run_id", StringType(), False),
        _f("check_name", StringType(), False),
        _f("table_name", StringType(), False),
        _f("subject", StringType(), False),
        _f("value", DoubleType()),
        _f("lower", DoubleType()),
        _f("upper", DoubleType()),
        _f("status", StringType(), False),
        _f("detail", StringType()),
        _f("created_at", TimestampType(), False),
    ]),
    constraints={"status_known": "status IN ('pass', 'warn', 'fail', 'skipped')"},
    column_docs={"check_name": "row_count, quarantine_share, duplicate_share, bot_share, null_share, event_mix_psi",
                 "subject": "the ingest batch, or the column for null_share",
                 "lower": "the bound the value must not fall below (null: none); upper likewise",
                 "detail": "what was compared, in words (e.g. the history's median)"},
))
OPS_DRIFT = _register(TableSpec(
    name="ops.drift",
    description="Population stability index (PSI) of each monitored column between the table version the previous "
                "monitor run read and the current one, per segment (e.g. task and model for scores).",
    schema=StructType([
        _f("run_id", StringType(), False),
        _f("table_name", StringType(), False),
        _f("column_name", StringType(), False),
        _f("segment", StringType(), False),
        _f("reference_version", LongType(), False),
        _f("current_version", LongType(), False),
        _f("rows_reference", LongType(), False),
        _f("rows_current", LongType(), False),
        _f("psi", DoubleType()),
        _f("status", StringType(), False),
        _f("buckets", StringType()),
        _f("created_at", TimestampType(), False),
    ]),
    constraints={"status_known": "status IN ('pass', 'warn', 'fail', 'skipped')"},
    column_docs={"segment": "the `by` columns' values, e.g. `task=purchase, model=lr` (empty: the whole table)",
                 "psi": "sum over buckets of (cur - ref) x ln(cur / ref), shares floored at 1e-4; null when skipped",
                 "buckets": "JSON list of [bucket, reference share, current share] (deciles of the reference for "
                            "numbers, its top values for strings)"},
))

_COUNT_COLS = [f"n_{t}" for t in EVENT_TYPES]


def _counts() -> list[StructField]:
    return [_f(c, LongType(), False) for c in _COUNT_COLS]


GOLD_SESSIONS = _register(TableSpec(
    name="gold.sessions",
    description="Sessions: the source's session id where it has one, else a new session after an inactivity gap; "
                "split at midnight UTC so each date's sessions depend on that date's events only.",
    schema=StructType([
        _f("session_id", StringType(), False),
        _f("user_id", StringType(), False),
        _f("session_date", DateType(), False),
        _f("start_time", TimestampType(), False),
        _f("end_time", TimestampType(), False),
        _f("duration_seconds", LongType(), False),
        _f("n_events", LongType(), False),
        *_counts(),
        _f("n_items", LongType(), False),
        _f("n_categories", LongType(), False),
        _f("converted", BooleanType(), False),
        _f("funnel_step", StringType(), False),
        _f("is_bot", BooleanType(), False),
        _f("from_source", BooleanType(), False),
    ]),
    partition_by=("session_date",),
    stats_columns=("session_id", "user_id", "start_time"),
    constraints={"ends_after_start": "end_time >= start_time",
                 "funnel_known": "funnel_step IN ('none', " + ", ".join(f"'{s}'" for s in FUNNEL) + ")"},
    column_docs={
        "session_id": "the source's id, or `<user_id>:<epoch seconds of the first event>` when sessions are derived",
        "funnel_step": "deepest step reached: none (search only) < view < favourite < cart < purchase",
        "from_source": "true when the id came from the source, false when derived from the inactivity gap",
        "is_bot": "any event of the session is bot-flagged",
    },
))
GOLD_INTERACTIONS_DAILY = _register(TableSpec(
    name="gold.interactions_daily",
    description="Per user, item and day: event counts, weighted strength decayed to the end of that day, prices. "
                "The incremental building block of gold.interactions, item and category features.",
    schema=StructType([
        _f("user_id", StringType(), False),
        _f("item_id", StringType(), False),
        _f("event_date", DateType(), False),
        _f("category_id", StringType()),
        _f("brand", StringType()),
        _f("n_events", LongType(), False),
        *_counts(),
        _f("weight", DoubleType(), False),
        _f("decayed_weight", DoubleType(), False),
        _f("rating", DoubleType()),
        _f("first_event_time", TimestampType(), False),
        _f("last_event_time", TimestampType(), False),
        _f("revenue", DoubleType(), False),
        _f("price_sum", DoubleType(), False),
        _f("price_n", LongType(), False),
        _f("price_min", DoubleType()),
        _f("price_max", DoubleType()),
        _f("price_sumsq", DoubleType(), False),
    ]),
    partition_by=("event_date",),
    stats_columns=("user_id", "item_id", "category_id", "last_event_time"),
    column_docs={
        "weight": "sum of features.event_weights over the day's events",
        "decayed_weight": "sum of weight x 2^-(end of day - event time)/half-life: decays exactly to any later as-of",
        "rating": "the user's last review rating of the item that day",
        "revenue": "sum of price x quantity over purchases (unknown prices count 0)",
    },
))
GOLD_USER_DAILY = _register(TableSpec(
    name="gold.user_daily",
    description="Per user and day: event counts, money, prices seen and paid, activity by hour. Bots included.",
    schema=StructType([
        _f("user_id", StringType(), False),
        _f("event_date", DateType(), False),
        _f("n_events", LongType(), False),
        *_counts(),
        _f("bot_events", LongType(), False),
        _f("revenue", DoubleType(), False),
        _f("units", LongType(), False),
        _f("viewed_price_sum", DoubleType(), False),
        _f("viewed_price_n", LongType(), False),
        _f("bought_price_sum", DoubleType(), False),
        _f("bought_price_n", LongType(), False),
        _f("hour_counts", ArrayType(LongType()), False),
        _f("first_event_time", TimestampType(), False),
        _f("last_event_time", TimestampType(), False),
    ]),
    partition_by=("event_date",),
    stats_columns=("user_id", "last_event_time"),
    column_docs={"hour_counts": "24 counts: events per UTC hour of day"},
))
GOLD_INTERACTIONS = _register(TableSpec(
    name="gold.interactions",
    description="Implicit feedback per user and item as of a date: time-decayed strength, counts, the explicit "
                "rating where there is one. The input of every recommender.",
    schema=StructType([
        _f("user_id", StringType(), False),
        _f("item_id", StringType(), False),
        _f("category_id", StringType()),
        _f("brand", StringType()),
        _f("strength", DoubleType(), False),
        _f("n_events", LongType(), False),
        *_counts(),
        _f("rating", DoubleType()),
        _f("first_event_time", TimestampType(), False),
        _f("last_event_time", TimestampType(), False),
        _f("as_of", DateType(), False),
    ]),
    stats_columns=("user_id", "item_id", "category_id", "last_event_time"),
    constraints={"strength_non_negative": "strength >= 0"},
    column_docs={
        "strength": "sum over events of weight(event type) x 2^-(as_of end - event time)/half_life_days (6 decimals)",
        "rating": "the user's most recent review rating of the item (explicit signal, null when never rated)",
        "as_of": "features use events up to the end of this day",
    },
))
GOLD_USER_FEATURES = _register(TableSpec(
    name="gold.user_features",
    description="One row per user: activity, RFM inputs, conversion, diversity, price level, time habits, bot score.",
    schema=StructType([
        _f("user_id", StringType(), False),
        _f("n_events", LongType(), False),
        *_counts(),
        *[_f(f"rate_{t}", DoubleType(), False) for t in EVENT_TYPES],
        _f("active_days", LongType(), False),
        _f("first_seen", DateType(), False),
        _f("last_seen", DateType(), False),
        _f("recency_days", IntegerType(), False),
        _f("purchase_recency_days", IntegerType()),
        _f("frequency", LongType(), False),
        _f("monetary", DoubleType(), False),
        _f("units", LongType(), False),
        _f("sessions", LongType(), False),
        _f("avg_session_seconds", DoubleType()),
        _f("avg_session_events", DoubleType()),
        _f("view_to_cart", DoubleType()),
        _f("cart_to_purchase", DoubleType()),
        _f("category_entropy", DoubleType()),
        _f("n_categories", LongType(), False),
        _f("top_category", StringType()),
        _f("avg_viewed_price", DoubleType()),
        _f("avg_bought_price", DoubleType()),
        _f("hour_share", ArrayType(DoubleType()), False),
        _f("weekday_share", ArrayType(DoubleType()), False),
        _f("peak_hour", IntegerType(), False),
        _f("share_night", DoubleType(), False),
        _f("share_morning", DoubleType(), False),
        _f("share_afternoon", DoubleType(), False),
        _f("share_evening", DoubleType(), False),
        _f("weekend_share", DoubleType(), False),
        _f("bot_score", DoubleType(), False),
        _f("as_of", DateType(), False),
    ]),
    column_docs={
        "rate_view": "share of the user's events of that type (likewise every rate_*)",
        "recency_days": "days from the last active day to as_of (0 = active on the as-of day)",
        "purchase_recency_days": "days since the last purchase day (null: never purchased)",
        "frequency": "distinct days with a purchase (orders proxy)",
        "monetary": "sum of price x quantity over purchases",
        "view_to_cart": "n_cart / n_view, at most 1 (null without views); cart_to_purchase likewise",
        "category_entropy": "Shannon entropy (bits) of the user's events over categories (bots excluded)",
        "top_category": "category with the highest interaction strength",
        "hour_share": "24 shares of events per UTC hour; weekday_share: 7 shares, Monday first",
        "share_night": "hours 0-5; morning 6-11; afternoon 12-17; evening 18-23",
        "bot_score": "share of the user's events flagged as bot traffic",
    },
))


def _popularity() -> list[StructField]:
    return [*_counts(),
            _f("views_recent", LongType(), False), _f("views_earlier", LongType(), False),
            _f("purchases_recent", LongType(), False), _f("purchases_earlier", LongType(), False),
            _f("trend", DoubleType(), False),
            _f("distinct_users", LongType(), False), _f("viewers", LongType(), False), _f("buyers", LongType(), False),
            _f("conversion_rate", DoubleType()),
            _f("revenue", DoubleType(), False),
            _f("price_mean", DoubleType()), _f("price_min", DoubleType()), _f("price_max", DoubleType()),
            _f("price_std", DoubleType())]


_POPULARITY_DOCS = {
    "views_recent": "views in the last features.trend_window_days days up to as_of; *_earlier: the window before",
    "trend": "(events recent + 1) / (events earlier + 1): above 1 is rising",
    "conversion_rate": "buyers / viewers (null without viewers)",
    "price_std": "population standard deviation of observed prices",
}
GOLD_ITEM_FEATURES = _register(TableSpec(
    name="gold.item_features",
    description="One row per item: popularity by event type and window, trend, users, conversion, price stats.",
    schema=StructType([_f("item_id", StringType(), False), _f("category_id", StringType()), _f("brand", StringType()),
                       *_popularity(), _f("as_of", DateType(), False)]),
    column_docs={"category_id": "the category (and brand) of the item's latest event", **_POPULARITY_DOCS},
))
GOLD_CATEGORY_FEATURES = _register(TableSpec(
    name="gold.category_features",
    description="One row per category: the item features aggregated, plus the number of distinct items.",
    schema=StructType([_f("category_id", StringType(), False), _f("n_items", LongType(), False),
                       *_popularity(), _f("as_of", DateType(), False)]),
    column_docs=_POPULARITY_DOCS,
))
_WEIGHTED = lambda key: ArrayType(StructType([_f(key, StringType()), _f("weight", DoubleType())]))  # noqa: E731
GOLD_USER_PROFILES = _register(TableSpec(
    name="gold.user_profiles",
    description="One row per user: interests, purchase preferences, spending power, RFM segment, lifecycle. "
                "MERGEd: a row is rewritten only when its content changed; Delta time travel gives earlier profiles.",
    schema=StructType([
        _f("user_id", StringType(), False),
        _f("top_categories", _WEIGHTED("category_id"), False),
        _f("top_brands", _WEIGHTED("brand"), False),
        _f("preferred_price_band", StringType(), False),
        _f("brand_loyalty", DoubleType()),
        _f("favourite_rate", DoubleType(), False),
        _f("cart_rate", DoubleType(), False),
        _f("cart_abandonment", DoubleType()),
        _f("preferred_time_of_day", StringType(), False),
        _f("spending_power", StringType(), False),
        _f("monetary", DoubleType(), False),
        _f("r_score", IntegerType(), False),
        _f("f_score", IntegerType(), False),
        _f("m_score", IntegerType(), False),
        _f("segment", StringType(), False),
        _f("lifecycle_stage", StringType(), False),
        _f("is_bot", BooleanType(), False),
        _f("as_of", DateType(), False),
        _f("profile_hash", StringType(), False),
        _f("profile_version", IntegerType(), False),
        _f("updated_by_run", StringType(), False),
        _f("updated_at", TimestampType(), False),
    ]),
    constraints={
        "scores_in_range": "r_score BETWEEN 0 AND 5 AND f_score BETWEEN 0 AND 5 AND m_score BETWEEN 0 AND 5",
        "tier_known": "spending_power IN ('none', 'low', 'medium', 'high', 'premium')",
        "stage_known": "lifecycle_stage IN ('new', 'active', 'lapsing', 'churned')",
    },
    column_docs={
        "top_categories": "up to profile.top_n categories by time-decayed interaction strength, weight = share of the "
                          "user's strength; top_brands likewise",
        "preferred_price_band": "budget / mid / premium: the user's average bought (else viewed) price against the "
                                "tertiles of item mean prices; unknown without prices",
        "brand_loyalty": "share of the user's strength on their top brand",
        "cart_abandonment": "1 - cart_to_purchase, clipped to [0, 1] (null without carts)",
        "preferred_time_of_day": "night / morning / afternoon / evening with most events",
        "spending_power": "none (no purchase), else the buyer quartile of monetary: low, medium, high; premium = top 10%",
        "r_score": "1-5 quintile scores among buyers (5 best: recent, frequent, high spend); 0 for non-buyers",
        "segment": "champions, loyal, potential_loyalist, new_customer, at_risk, cant_lose, hibernating, "
                   "need_attention (buyers); browser (never purchased); bot",
        "lifecycle_stage": "new (first seen within profile.new_user_days), active, lapsing, churned by recency",
        "profile_hash": "hash of the profile content: a MERGE rewrites the row only when it changes",
        "profile_version": "1 on the first profile, +1 each time the content changed",
    },
))


GOLD_ITEM_NEIGHBOURS = _register(TableSpec(
    name="gold.item_neighbours",
    description="Top-K most similar items per item (item-similarity CF), from co-occurrence within users.",
    schema=StructType([
        _f("item_id", StringType(), False),
        _f("neighbour_id", StringType(), False),
        _f("rank", IntegerType(), False),
        _f("similarity", DoubleType(), False),
        _f("co_users", LongType(), False),
        _f("similarity_kind", StringType(), False),
        _f("run_id", StringType(), False),
    ]),
    constraints={"not_self": "item_id <> neighbour_id", "rank_positive": "rank >= 1"},
    column_docs={"co_users": "users (after the heavy-user cap) who interacted with both items",
                 "similarity_kind": "recommend.item_cf.similarity: cosine, jaccard or conditional"},
))
GOLD_RECS_TOPN = _register(TableSpec(
    name="gold.recs_topn",
    description="Top-N recommendations per user and model; each model's rows are replaced by its latest run.",
    schema=StructType([
        _f("user_id", StringType(), False),
        _f("model", StringType(), False),
        _f("rank", IntegerType(), False),
        _f("item_id", StringType(), False),
        _f("score", DoubleType(), False),
        _f("run_id", StringType(), False),
        _f("generated_at", TimestampType(), False),
    ]),
    partition_by=("model",),
    constraints={"rank_positive": "rank >= 1"},
    column_docs={"score": "the model's score (comparable within a model and user only)"},
))
OPS_MODEL_METRICS = _register(TableSpec(
    name="ops.model_metrics",
    description="Offline evaluation: one row per model, run, split, cut-off and metric.",
    schema=StructType([
        _f("run_id", StringType(), False),
        _f("job", StringType(), False),
        _f("model", StringType(), False),
        _f("split", StringType(), False),
        _f("k", IntegerType()),
        _f("metric", StringType(), False),
        _f("value", DoubleType()),
        _f("details", StringType()),
        _f("created_at", TimestampType(), False),
    ]),
    column_docs={"k": "cut-off (null for metrics without one)",
                 "details": "JSON: users evaluated, hyper-parameters, selection"},
))
GOLD_PROPENSITY_SCORES = _register(TableSpec(
    name="gold.propensity_scores",
    description="Purchase propensity for the days after the last event date, per user (task purchase) or per item the "
                "user touched (task item_purchase), from every model and rule; model `served` holds the one chosen on "
                "validation (predict.select_by). Scores are isotonic-calibrated probabilities (predict.calibration); "
                "each task and model replaced by its latest run.",
    schema=StructType([
        _f("user_id", StringType(), False),
        _f("item_id", StringType()),
        _f("task", StringType(), False),
        _f("model", StringType(), False),
        _f("score", DoubleType(), False),
        _f("predicted", BooleanType(), False),
        _f("threshold", DoubleType(), False),
        _f("horizon_days", IntegerType(), False),
        _f("as_of", DateType(), False),
        _f("run_id", StringType(), False),
        _f("generated_at", TimestampType(), False),
        _f("reasons", ArrayType(StringType())),
    ]),
    partition_by=("task", "model"),
    constraints={"score_probability": "score >= 0 AND score <= 1"},
    column_docs={"item_id": "null for the per-user task", "score": "probability of a purchase within horizon_days",
                 "model": "lr, nb_multinomial, nb_bernoulli, gbt, a rule (predict/rules.py) or served",
                 "predicted": "score >= threshold (the threshold with the best F1 on validation users)",
                 "as_of": "the features' date: the prediction is for the horizon_days after it",
                 "reasons": "at most three inputs that lift this score above the average training row, strongest "
                            "first (LR and naive Bayes: exact shares of the log-odds; GBT: importance times the "
                            "deviation in the buyers' direction; a rule: its name when it fires)"},
))
GOLD_BEHAVIOUR_PREDICTIONS = _register(TableSpec(
    name="gold.behaviour_predictions",
    description="Multi-class behaviour predictions for the days after the last event date: the next action type and the "
                "category group of the next purchase, per user, model (MLlib or the Horovod CNN) and task.",
    schema=StructType([
        _f("user_id", StringType(), False),
        _f("task", StringType(), False),
        _f("model", StringType(), False),
        _f("predicted_class", IntegerType(), False),
        _f("predicted_label", StringType(), False),
        _f("probability", DoubleType(), False),
        _f("probabilities", ArrayType(DoubleType()), False),
        _f("as_of", DateType(), False),
        _f("run_id", StringType(), False),
        _f("generated_at", TimestampType(), False),
    ]),
    partition_by=("task", "model"),
    column_docs={"probabilities": "per class, index = class (see predicted_label for the name of the top one)"},
))
OPS_MODEL_EXPLANATIONS = _register(TableSpec(
    name="ops.model_explanations",
    description="What the models learnt, by feature name: the behaviour models' strongest logistic-regression "
                "coefficients, gradient-boosted tree importances and naive-Bayes class-conditional "
                "log-probabilities, and the recommend ranker's feature importances (task recommend).",
    schema=StructType([
        _f("run_id", StringType(), False),
        _f("task", StringType(), False),
        _f("model", StringType(), False),
        _f("class_label", StringType(), False),
        _f("feature", StringType(), False),
        _f("value", DoubleType(), False),
        _f("kind", StringType(), False),
        _f("created_at", TimestampType(), False),
    ]),
    column_docs={"kind": "lr_coefficient (on standardised numeric features, 0/1 one-hot slots), nb_log_prob "
                         "(log P(feature | class)) or gbt_importance (the recommend ranker's feature importance, "
                         "summing to 1)"},
))
GOLD_BEHAVIOUR_IMAGES = _register(TableSpec(
    name="gold.behaviour_images",
    description="Per-user behaviour images for the CNN: log1p event counts over category group x time bucket x event "
                "type before a cutoff, flattened row-major, with the next-purchase category group as label.",
    schema=StructType([
        _f("user_id", StringType(), False),
        _f("split", StringType(), False),
        _f("cutoff", DateType(), False),
        _f("image", ArrayType(FloatType()), False),
        _f("label", IntegerType()),
    ]),
    partition_by=("split",),
    column_docs={"split": "train / test (labelled) or serve (features up to the last date, no label)",
                 "image": "groups x time_buckets x 4 (view, favourite, cart, purchase) values, row-major"},
))


GOLD_RISK_FLAGS = _register(TableSpec(
    name="gold.risk_flags",
    description="Risk control: one row per user and flag raised (bot, scraper, click_farming, abnormal_purchase, "
                "anomaly), with a score and the reasons in words; replaced by each risk run.",
    schema=StructType([
        _f("user_id", StringType(), False),
        _f("flag", StringType(), False),
        _f("score", DoubleType(), False),
        _f("reasons", ArrayType(StringType()), False),
        _f("as_of", DateType(), False),
        _f("run_id", StringType(), False),
        _f("generated_at", TimestampType(), False),
    ]),
    constraints={"flag_known": "flag IN ('bot', 'scraper', 'click_farming', 'abnormal_purchase', 'anomaly')"},
    column_docs={"score": "bot: share of the user's events flagged; scraper: events per session; click_farming: new "
                          "accounts in the user's largest burst; abnormal_purchase and anomaly: the largest robust z",
                 "reasons": "up to 5 findings in words (which rule, which item or column, the values)",
                 "as_of": "the user features' as-of date"},
))


GOLD_CAMPAIGN_TARGETS = _register(TableSpec(
    name="gold.campaign_targets",
    description="Marketing target lists: one row per campaign and user (profile condition x purchase propensity), "
                "with the expected conversion and a fixed holdout group per campaign; replaced by each campaigns run.",
    schema=StructType([
        _f("campaign", StringType(), False),
        _f("user_id", StringType(), False),
        _f("propensity", DoubleType(), False),
        _f("expected_conversion", DoubleType(), False),
        _f("segment", StringType(), False),
        _f("spending_power", StringType(), False),
        _f("lifecycle_stage", StringType(), False),
        _f("holdout", BooleanType(), False),
        _f("offer", StringType()),
        _f("model", StringType(), False),
        _f("as_of", DateType(), False),
        _f("run_id", StringType(), False),
        _f("generated_at", TimestampType(), False),
    ]),
    partition_by=("campaign",),
    constraints={"propensity_probability": "propensity >= 0 AND propensity <= 1"},
    column_docs={"propensity": "purchase probability within predict.horizon_days (gold.propensity_scores)",
                 "expected_conversion": "purchase rate the model's test users in the same score tenth showed",
                 "holdout": "true: keep out of the campaign (control group; a fixed hash draw per campaign and user)",
                 "model": "the propensity model (campaigns.model)"},
))


GOLD_PURCHASE_PATTERNS = _register(TableSpec(
    name="gold.purchase_patterns",
    description="When purchases happen: per category, weekday and hour (UTC), the purchases, units and the share "
                "of the category's purchases; replaced by each demand run. (No region: the canonical schema has none.)",
    schema=StructType([
        _f("category_id", StringType(), False),
        _f("weekday", IntegerType(), False),
        _f("hour", IntegerType(), False),
        _f("purchases", LongType(), False),
        _f("units", LongType(), False),
        _f("share", DoubleType(), False),
        _f("as_of", DateType(), False),
        _f("run_id", StringType(), False),
    ]),
    constraints={"weekday_range": "weekday BETWEEN 1 AND 7", "hour_range": "hour BETWEEN 0 AND 23"},
    column_docs={"weekday": "1 = Monday ... 7 = Sunday", "units": "sum of quantities (1 where missing); bots left out"},
))
GOLD_DEMAND_FORECAST = _register(TableSpec(
    name="gold.demand_forecast",
    description="Daily units forecast per category for the days after the last event date (seasonal weekday "
                "baseline + damped trend); replaced by each demand run, evaluated in ops.model_metrics.",
    schema=StructType([
        _f("category_id", StringType(), False),
        _f("forecast_date", DateType(), False),
        _f("horizon", IntegerType(), False),
        _f("units_forecast", DoubleType(), False),
        _f("level", DoubleType(), False),
        _f("trend", DoubleType(), False),
        _f("weekday_index", DoubleType(), False),
        _f("as_of", DateType(), False),
        _f("run_id", StringType(), False),
        _f("generated_at", TimestampType(), False),
    ]),
    constraints={"forecast_non_negative": "units_forecast >= 0", "horizon_positive": "horizon >= 1"},
    column_docs={"horizon": "days after as_of", "level": "deseasonalised daily units over the last level_days",
                 "trend": "change of the level per day (damped in the forecast)",
                 "weekday_index": "the forecast day's weekday factor (1 = an average day)"},
))


OPS_REC_FEEDBACK = _register(TableSpec(
    name="ops.rec_feedback",
    description="The feedback loop: per served recommendation list (recommend run), model and rank, what users did "
                "with the served items after the list's data cut: views, carts, purchases and their rates.",
    schema=StructType([
        _f("run_id", StringType(), False),
        _f("recs_run_id", StringType(), False),
        _f("model", StringType(), False),
        _f("rank", IntegerType(), False),
        _f("cut", DateType(), False),
        _f("window_end", DateType(), False),
        _f("served", LongType(), False),
        _f("served_to_returning", LongType(), False),
        _f("viewed", LongType(), False),
        _f("carted", LongType(), False),
        _f("purchased", LongType(), False),
        _f("viewed_rate", DoubleType()),
        _f("carted_rate", DoubleType()),
        _f("purchased_rate", DoubleType()),
        _f("created_at", TimestampType(), False),
    ]),
    column_docs={"cut": "the data cut of the lists: as_of of the gold.interactions version the recommend run read",
                 "window_end": "behaviour from the day after the cut up to this day counts",
                 "served_to_returning": "served items whose user had any event in the window",
                 "viewed_rate": "viewed / served_to_returning (carted_rate, purchased_rate likewise; null: nobody "
                                "came back)"},
))


_DP_DOCS = {
    "epsilon": "the table's privacy budget ε (conf privacy.dp.<table>.epsilon), split evenly over its measures",
    "confidence": "the probability with which each value is within its *_error of the (contribution-bounded) truth",
    "run_id": "the publish run",
}

BI_DAILY_CATEGORY_ACTIVITY = _register(TableSpec(
    name="bi.daily_category_activity",
    description="Differentially private activity per day and category (Laplace mechanism, bots excluded): every "
                "(day, category) of the catalogue and date range, each user counted in at most max_cells cells.",
    schema=StructType([
        _f("event_date", DateType(), False),
        _f("category_id", StringType(), False),
        _f("visitors", LongType(), False),
        _f("buyers", LongType(), False),
        _f("revenue", DoubleType(), False),
        _f("visitors_error", DoubleType(), False),
        _f("buyers_error", DoubleType(), False),
        _f("revenue_error", DoubleType(), False),
        _f("epsilon", DoubleType(), False),
        _f("confidence", DoubleType(), False),
        _f("run_id", StringType(), False),
        _f("generated_at", TimestampType(), False),
    ]),
    constraints={"non_negative": "visitors >= 0 AND buyers >= 0 AND revenue >= 0"},
    column_docs={**_DP_DOCS,
                 "visitors": "noisy count of users with an event in the cell (rounded, clamped at 0)",
                 "buyers": "noisy count of users who bought in the cell",
                 "revenue": "noisy sum of purchases (price x quantity), each user's clamped to max_revenue per cell",
                 "visitors_error": "half-width of the interval holding the true value with probability `confidence`"},
))

BI_SEGMENT_SUMMARY = _register(TableSpec(
    name="bi.segment_summary",
    description="Differentially private size and spend of every profile segment (Laplace mechanism).",
    schema=StructType([
        _f("segment", StringType(), False),
        _f("users", LongType(), False),
        _f("total_spend", DoubleType(), False),
        _f("avg_spend", DoubleType()),
        _f("users_error", DoubleType(), False),
        _f("total_spend_error", DoubleType(), False),
        _f("epsilon", DoubleType(), False),
        _f("confidence", DoubleType(), False),
        _f("run_id", StringType(), False),
        _f("generated_at", TimestampType(), False),
    ]),
    column_docs={**_DP_DOCS,
                 "total_spend": "noisy sum of monetary, each user's clamped to max_spend",
                 "avg_spend": "total_spend / users (post-processing: no extra privacy cost); null when users is 0"},
))

OPS_ERASURES = _register(TableSpec(
    name="ops.erasures",
    description="Audit of forget-user requests: what was deleted where, without the user's id.",
    schema=StructType([
        _f("erasure_id", StringType(), False),
        _f("subject_token", StringType(), False),
        _f("requested_at", TimestampType(), False),
        _f("rows_deleted", MapType(StringType(), LongType()), False),
        _f("table_versions", MapType(StringType(), LongType()), False),
        _f("vacuum_retention_hours", DoubleType(), False),
        _f("vacuumed", BooleanType(), False),
        _f("run_id", StringType(), False),
    ]),
    column_docs={"subject_token": "HMAC of the raw id under an erasure-only sub-key: matches no pseudonym in any "
                                  "table; recomputable by whoever holds the key, to prove the request was done",
                 "rows_deleted": "table -> rows deleted",
                 "table_versions": "table -> the version the DELETE committed",
                 "vacuumed": "whether VACUUM ran after the deletes (old files holding the rows removed when their "
                             "age passed the retention)"},
))


def spec(name: str) -> TableSpec:
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; known tables: {', '.join(sorted(TABLES))}") from None


def markdown_reference() -> str:
    """docs/tables.md's table reference, generated from the registry (``python -m shopmine.docs``)."""
    out = []
    for s in TABLES.values():
        out.append(f"#### `{s.name}`\n\n{s.description}")
        if s.partition_by:
            out.append(f"Partitioned by {', '.join(f'`{c}`' for c in s.partition_by)}.")
        rows = ["| column | type | null | notes |", "|---|---|---|---|"]
        for fld in s.schema.fields:
            rows.append(f"| `{fld.name}` | {fld.dataType.simpleString()} | {'yes' if fld.nullable else 'no'} "
                        f"| {s.column_docs.get(fld.name, '')} |")
        out.append("\n".join(rows))
        if s.stats_columns:
            out.append("Data-skipping statistics on " + ", ".join(f"`{c}`" for c in s.stats_columns) + ".")
        if s.constraints:
            out.append("Constraints: " + "; ".join(f"`{k}`: `{v}`" for k, v in s.constraints.items()))
    return "\n\n".join(out) + "\n"
