"""The registry of every Delta table: name, schema (defined once, here), partitioning, description, invariants.

NOT NULL invariants come from the schema's nullability; CHECK constraints are added with ``ALTER TABLE``. The README's
table reference is generated from this module (``python -m shopmine.io.tables``), so it cannot drift from the code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DataType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

EVENT_TYPES = ("view", "search", "favourite", "cart", "remove_from_cart", "purchase", "review")


@dataclass(frozen=True)
class TableSpec:
    name: str  # "layer.table"
    schema: StructType
    description: str
    partition_by: tuple[str, ...] = ()
    constraints: dict[str, str] = field(default_factory=dict)
    column_docs: dict[str, str] = field(default_factory=dict)

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
        _f("ingest_batch_id", StringType(), False),
        _f("is_bot", BooleanType(), False),
        _f("bot_reason", StringType()),
        _f("price_outlier", BooleanType(), False),
        _f("quantity_outlier", BooleanType(), False),
        _f("imputed", ArrayType(StringType()), False),
    ]),
    partition_by=("event_date",),
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
        "user_id": "normalised id (integral ids without '.0' or spaces)",
        "event_time": "UTC",
        "source_file": "file and line the event came from (lineage back to bronze)",
        "is_bot": "the user's behaviour in this batch is inhuman (see bot_reason)",
        "imputed": "columns whose value was filled by a missing-value strategy",
    },
))

SILVER_QUARANTINE = _register(TableSpec(
    name="silver.quarantine",
    description="Every rejected input line, verbatim, with a reason code and a human-readable detail.",
    schema=StructType([
        _f("raw_record", StringType()),
        _f("source_format", StringType(), False),
        _f("source_file", StringType(), False),
        _f("line_number", LongType(), False),
        _f("ingest_batch_id", StringType(), False),
        _f("reason", StringType(), False),
        _f("detail", StringType()),
    ]),
    column_docs={"reason": "a reason code from the README's quarantine table", "detail": "names the field and value"},
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
    ]),
    constraints={"reconciles": "rows_in = accepted + quarantined + duplicates_exact + duplicates_near"},
))

OPS_GENERATOR_TRUTH = _register(TableSpec(
    name="ops.generator_truth",
    description="Ground truth of what the synthetic generator injected: bots, duplicates, malformed lines.",
    schema=StructType([
        _f("kind", StringType(), False),
        _f("expected", StringType(), False),
        _f("raw_line", StringType()),
        _f("user_id", StringType()),
        _f("event_id", StringType()),
    ]),
    constraints={"kind_known": "kind IN ('malformed', 'duplicate_exact', 'duplicate_near', 'bot')"},
    column_docs={"expected": "the reason code (malformed), 'duplicate_exact'/'duplicate_near', or 'bot'"},
))


def spec(name: str) -> TableSpec:
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; known tables: {', '.join(sorted(TABLES))}") from None


def markdown_reference() -> str:
    """The README's table reference, generated from the registry."""
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
        if s.constraints:
            out.append("Constraints: " + "; ".join(f"`{k}`: `{v}`" for k, v in s.constraints.items()))
    return "\n\n".join(out) + "\n"


if __name__ == "__main__":
    print(markdown_reference())  # noqa: T201 - a developer tool, not a job
