"""``bronze.events_raw`` -> ``silver.events`` + ``silver.quarantine``, reconciled per batch in ``ops.clean_batches``.

Every bronze row ends in exactly one *disposition*: ``accepted`` (silver), ``quarantine`` (with a reason code and a
detail naming the field and value), ``duplicate_exact`` or ``duplicate_near`` (dropped, counted).

* :data:`RULES` is the one ordered list of quarantine reasons (code, meaning, condition, detail): it builds the
  parse-time reason expression and the docs' reason table; the first rule that applies is the row's reason.
* The steps are pure DataFrame -> DataFrame functions, each testable alone: ``parse_and_validate`` ->
  ``mark_duplicates`` / ``mark_seen`` -> ``impute_missing`` -> ``flag_outliers`` -> ``flag_bots``. What they need
  from the whole run (fill values, outlier bounds, bot users, ids already in silver) is computed explicitly by
  :func:`statistics` / :func:`seen_ids` and passed in.
* :func:`classify` runs them; a :class:`Staging` (chosen once, by :func:`run_clean`) decides what is materialised.
* :func:`reconcile` checks the counts (pure); :func:`run_clean` reads, writes and records the batches.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from shopmine.conf import BotConf, CleanConf, MissingPolicy, OutlierConf, SourceConf
from shopmine.io.sources import PII_COLUMNS, SourceFormat, get_format, parse_fields, record_text, rows_per_line
from shopmine.logs import step
from shopmine.governance.privacy import KEY_PROPERTY, Privacy, check_key
from shopmine.vocab import EVENT_TYPES

log = logging.getLogger(__name__)
c = F.col

# -- the rules --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RowChecks:
    """What a parse rule may look at: the row's raw and typed columns (see :func:`parse_and_validate`) and the
    format, source, clean settings and privacy that the row is checked under."""

    fmt: SourceFormat
    source: SourceConf
    conf: CleanConf
    privacy: Privacy

    @property
    def shape_bad(self) -> Column:
        return ~F.col("shape_ok") | ~F.col("quotes_ok") | ~F.col("json_ok")

    @property
    def min_time(self) -> Column:
        return F.lit(self.source.min_time.isoformat()).cast("timestamp")

    @property
    def latest(self) -> Column:
        return F.col("ingested_at") + F.make_interval(hours=F.lit(self.conf.future_tolerance_hours))


@dataclass(frozen=True)
class Rule:
    """One quarantine reason: its code, what it means (the docs' reason table), and -- for the rules checked while
    parsing -- the condition and the detail text, both built from a :class:`RowChecks`. The later rules (missing
    values dropped, outliers quarantined) are applied by their steps, which only touch rows no earlier rule took."""

    code: str
    meaning: str
    when: Callable[[RowChecks], Column] | None = None
    detail: Callable[[RowChecks], Column] | None = None
    step: str = "parse"


def _price_bad(x: RowChecks) -> Column:
    p = c("price_raw")
    return c("f_price").isNotNull() & (p.isNull() | F.isnan(p) | (p <= 0) | (p > x.conf.limits.max_price))


def _qty_bad(x: RowChecks) -> Column:
    q = c("qty_raw")
    return c("f_quantity").isNotNull() & (q.isNull() | (q <= 0) | (q > x.conf.limits.max_quantity))


def _rating_bad(x: RowChecks) -> Column:
    r = c("rating_raw")
    return (c("event_type") == "review") & c("f_rating").isNotNull() & (r.isNull() | F.isnan(r) | (r < 0) | (r > 10))


# In the order they are checked: the first rule that applies is the row's reason.
RULES: tuple[Rule, ...] = (
    Rule("null_only_row", "every field is empty (blank line, or only separators)",
         lambda x: c("all_empty"), lambda x: F.lit("every field is empty")),
    Rule("duplicate_header", "a copy of the header line in the middle of a file",
         lambda x: c("is_header") & (c("line_number") > 1), lambda x: F.lit("header line repeated")),
    Rule("invalid_utf8", "the line has bytes that are not valid UTF-8",
         lambda x: c("bad_utf8"), lambda x: F.lit("invalid UTF-8 bytes (replaced by U+FFFD in raw_record)")),
    Rule("truncated_line", "the file's last line is cut short (wrong field count, open quote or broken JSON)",
         lambda x: x.shape_bad & c("is_last_line"),
         lambda x: _fmt("last line of the file is cut short (%s fields)", c("n_fields"))),
    Rule("broken_quoting", "an odd number of double quotes: a quoted field is never closed",
         lambda x: ~c("quotes_ok"), lambda x: F.lit("unbalanced double quote")),
    Rule("wrong_column_count", "the line does not have the format's number of fields",
         lambda x: ~c("shape_ok"),
         lambda x: _fmt("%s fields, expected " + " or ".join(map(str, x.fmt.widths)), c("n_fields"))),
    Rule("malformed_json", "a JSON-lines record that is not a JSON object (for nested JSON: the line, or one record)",
         lambda x: ~c("json_ok"),
         lambda x: F.when(c("record_number").isNull(), F.lit("not a JSON object"))
                    .otherwise(_fmt("record %s is not a JSON object", c("record_number")))),
    Rule("no_records", "a nested JSON line (a format with records) whose array of records is missing or empty",
         lambda x: c("no_records"), lambda x: F.lit(f"no records in '{x.fmt.records}'")),
    Rule("missing_user", "no user id", lambda x: c("f_user_id").isNull(), lambda x: F.lit("user_id is empty")),
    Rule("invalid_user_id",
         "user id not an integer, or overflows 64 bits (integer-id formats), or not a printable code",
         lambda x: c("user_problem").isNotNull(),
         # a pseudonymising lake never echoes the raw user id
         lambda x: _fmt("user_id %s", c("user_problem")) if x.privacy.pseudonymising
         else _fmt("user_id '%s' %s", c("f_user_id"), c("user_problem"))),
    Rule("missing_item", "no item id (allowed only for search events)",
         lambda x: c("f_item_id").isNull() & (F.coalesce(c("event_type"), F.lit("")) != "search"),
         lambda x: F.lit("item_id is empty")),
    Rule("invalid_item_id",
         "item id not an integer, or overflows 64 bits (integer-id formats), or not a printable code",
         lambda x: c("item_problem").isNotNull(), lambda x: _fmt("item_id '%s' %s", c("f_item_id"), c("item_problem"))),
    Rule("invalid_category_id", "category not an integer (a declared source with category_id_kind integer), or not a "
         "printable code", lambda x: c("category_problem").isNotNull(),
         lambda x: _fmt("category_id '%s' %s", c("f_category_id"), c("category_problem"))),
    Rule("unknown_event_type", "event type missing or not in the format's vocabulary",
         lambda x: c("event_type").isNull(),
         lambda x: _fmt("event type '%s' is not known for format " + x.fmt.name, c("f_event_type"))),
    Rule("unparseable_timestamp", "the time is in none of the accepted formats / epoch units",
         lambda x: c("event_time").isNull(), lambda x: _fmt("time '%s' cannot be parsed", c("f_event_time"))),
    Rule("timestamp_before_range", "earlier than the source's min_time (conf sources.<format>.min_time)",
         lambda x: c("event_time") < x.min_time,
         lambda x: _fmt("time %s is before " + x.source.min_time.isoformat(), c("event_time"))),
    Rule("future_timestamp", "later than the ingest time plus clean.future_tolerance_hours",
         lambda x: c("event_time") > x.latest,
         lambda x: _fmt("time %s is after the ingest time %s", c("event_time"), c("ingested_at"))),
    Rule("cancellation", "a cancelled invoice line (UCI Online Retail invoice numbers starting with C)",
         lambda x: F.lit(x.fmt.name == "online_retail") & F.coalesce(c("f_invoice"), F.lit("")).startswith("C"),
         lambda x: _fmt("invoice %s is a cancellation", c("f_invoice"))),
    Rule("invalid_price", "price not a number, zero, negative, or above clean.limits.max_price", _price_bad,
         lambda x: _fmt("price '%s' must be a number in (0, " + f"{x.conf.limits.max_price:g}]", c("f_price"))),
    Rule("invalid_quantity", "quantity not an integer, zero, negative, or above clean.limits.max_quantity", _qty_bad,
         lambda x: _fmt("quantity '%s' must be an integer in [1, " + f"{x.conf.limits.max_quantity}]",
                        c("f_quantity"))),
    Rule("invalid_rating", "review rating not a number in [0, 10]", _rating_bad,
         lambda x: _fmt("rating '%s' must be a number in [0, 10]", c("f_rating"))),
    Rule("missing_price", "price missing and clean.missing.price.strategy is drop", step="missing values"),
    Rule("missing_quantity", "quantity missing and clean.missing.quantity.strategy is drop", step="missing values"),
    Rule("outlier_price", "price outside its category's robust bounds and clean.outliers.action is quarantine",
         step="outliers"),
    Rule("outlier_quantity", "quantity outside its category's robust bounds and clean.outliers.action is quarantine",
         step="outliers"),
)
REASONS: dict[str, str] = {r.code: r.meaning for r in RULES}
PARSE_RULES = tuple(r for r in RULES if r.step == "parse")


def reasons_markdown() -> str:
    """The quarantine reason table of docs/quarantine-reasons.md, in priority order (generated from :data:`RULES`)."""
    rows = [f"| `{r.code}` | {r.meaning} |" for r in RULES]
    return "\n".join(["| reason | meaning |", "|---|---|"] + rows)


def quarantine_where(df: DataFrame, flag: Column, code: str, detail: Column) -> DataFrame:
    """Rows where ``flag`` holds go to the quarantine as ``code`` (a later-step rule of :data:`RULES`)."""
    if code not in REASONS:
        raise KeyError(f"{code} is not a rule in RULES")
    df = df.withColumn("_q", flag)
    return (df.withColumn("reason", F.when(c("_q"), F.lit(code)).otherwise(c("reason")))
              .withColumn("detail", F.when(c("_q"), detail).otherwise(c("detail")))
              .withColumn("disposition", F.when(c("_q"), "quarantine").otherwise(c("disposition")))
              .drop("_q"))


DISPOSITIONS = ("accepted", "quarantine", "duplicate_exact", "duplicate_near")

# Accepted text time formats, tried in order after Spark's own ISO-8601 cast (which takes 'T', fractions, zones).
TEXT_TIME_FORMATS = ("yyyy/MM/dd HH:mm:ss", "M/d/yyyy H:mm[:ss]", "dd-MMM-yyyy HH:mm:ss")
_ZONED = r"(?i)(z|[+-]\d\d(:?\d\d)?|\s(utc|gmt)|[a-z]+/[a-z_]+)$"
_INTEGRAL = r"^\+?\d+(\.0+)?$"
_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"


# -- typing helpers ------------------------------------------------------------------------------------------------

def normalise_id(raw: Column, kind: str) -> tuple[Column, Column]:
    """(normalised id or null, problem text or null). Integer ids: '17850.0' and ' 17850 ' -> '17850'."""
    if kind == "integer":
        digits = F.regexp_replace(F.regexp_replace(raw, r"\.0+$", ""), r"^\+", "")
        as_long = digits.try_cast("bigint")
        ok = raw.rlike(_INTEGRAL) & as_long.isNotNull()
        problem = F.when(raw.isNotNull() & ~raw.rlike(_INTEGRAL), F.lit("is not an integer")) \
                   .when(raw.isNotNull() & as_long.isNull(), F.lit("overflows 64 bits"))
        return F.when(ok, as_long.cast("string")), problem
    ok = (F.length(raw) <= 128) & ~raw.rlike(r"[\x00-\x1f\x7f]")
    return F.when(ok, raw), F.when(raw.isNotNull() & ~ok, F.lit("is not a printable code of at most 128 characters"))


def _pattern_has_zone(pattern: str) -> bool:
    """Whether a Spark datetime pattern parses a zone or offset (letters outside quotes: V z O X x Z)."""
    return re.search(r"[VzOXxZ]", re.sub(r"'[^']*'", "", pattern)) is not None


def parse_event_time(raw: Column, time_kind: str, tz: str, time_format: str | None = None) -> Column:
    """Timestamp (UTC) from epoch seconds/ms/µs/ns or text; naive text is in the source's zone ``tz``. With
    ``time_format`` (a Spark datetime pattern) text is parsed with that pattern only."""
    if time_format is not None:
        parsed = F.try_to_timestamp(raw, F.lit(time_format))
        return parsed if _pattern_has_zone(time_format) else F.to_utc_timestamp(parsed, tz)
    is_num = raw.rlike(r"^\d+(\.\d+)?$")
    num = raw.try_cast("decimal(38,6)")
    if time_kind == "epoch_s":
        micros = num * 1_000_000
    elif time_kind == "epoch_ms":
        micros = num * 1_000
    elif time_kind == "epoch_us":
        micros = num
    else:  # auto: the unit follows from the magnitude (s < 1e11 <= ms < 1e14 <= µs < 1e17 <= ns)
        micros = (F.when(num < 1e11, num * 1_000_000).when(num < 1e14, num * 1_000)
                  .when(num < 1e17, num).otherwise(num / 1_000))
    epoch = F.timestamp_micros(micros.try_cast("bigint"))
    if time_kind in ("epoch_s", "epoch_ms", "epoch_us"):
        return F.when(is_num, epoch)
    # The regexes run only where a cheap test says they may match: most text times end in Z, or in a digit.
    cleaned = F.when(F.upper(F.substring(raw, -3, 3)).isin("UTC", "GMT"),
                     F.regexp_replace(raw, r"(?i)\s+(utc|gmt)$", "Z")).otherwise(raw)
    text = reduce(lambda acc, fmt: F.coalesce(acc, F.try_to_timestamp(cleaned, F.lit(fmt))),
                  TEXT_TIME_FORMATS, cleaned.try_cast("timestamp"))
    zoned = F.when(raw.endswith("Z") | raw.endswith("z"), F.lit(True)).otherwise(raw.rlike(_ZONED))
    local = F.when(zoned, text).otherwise(F.to_utc_timestamp(text, tz))
    return F.when(is_num, epoch).otherwise(local)


def _fmt(template: str, *cols: Column) -> Column:
    return F.format_string(template, *[F.coalesce(c.cast("string"), F.lit("<empty>")) for c in cols])


# -- step 1: parse + validate ----------------------------------------------------------------------------------------

def parse_and_validate(bronze: DataFrame, fmt: SourceFormat, source: SourceConf, conf: CleanConf,
                       privacy: Privacy | None = None) -> DataFrame:
    """Bronze rows of one format -> typed canonical columns + ``reason``/``detail`` (null when the row is valid).

    With ``privacy`` pseudonymising, ``user_id`` is the keyed pseudonym from here on (dedupe keys, derived event ids,
    bot detection and every later table use it), and a rejected user id is not echoed in ``detail``; the optional PII
    fields become ``pii_sealed`` (or nothing) per ``privacy.pii``.

    Built in stages (parse, type, one boolean per check, reason) so that no expression is repeated inside another:
    that keeps the generated code small and every expensive function evaluated once per row.
    """
    p = parse_fields(bronze, fmt)
    privacy = privacy or Privacy(None, None, {}, False)
    user, user_problem = normalise_id(c("f_user_id"), fmt.user_id_kind)
    user = privacy.pseudonymise(user)
    item, item_problem = normalise_id(c("f_item_id"), fmt.item_id_kind)
    if fmt.category_id_kind is None:  # the built-ins keep the category as it is
        category, category_problem = c("f_category_id"), F.lit(None).cast("string")
    else:
        category, category_problem = normalise_id(c("f_category_id"), fmt.category_id_kind)
    type_map = F.create_map(*[F.lit(x) for kv in fmt.event_types.items() for x in kv]) if fmt.event_types else None
    etype = F.lit(fmt.constant_event_type) if fmt.constant_event_type else type_map[F.lower(c("f_event_type"))]
    typed = p.select(
        "*", user.alias("user_id"), user_problem.alias("user_problem"), item.alias("item_id"),
        item_problem.alias("item_problem"), category.alias("category_norm"), category_problem.alias("category_problem"),
        etype.alias("event_type"),
        parse_event_time(c("f_event_time"), fmt.time_kind, source.timezone, fmt.time_format).alias("event_time"),
        c("f_price").try_cast("double").alias("price_raw"),
        F.when(c("f_quantity").rlike(r"^[+-]?\d+(\.0+)?$"),
               F.regexp_replace("f_quantity", r"\.0+$", "").try_cast("bigint")).alias("qty_raw"),
        c("f_rating").try_cast("double").alias("rating_raw"),
    )
    checks = RowChecks(fmt, source, conf, privacy)
    flagged = typed.select("*", *[F.coalesce(r.when(checks), F.lit(False)).alias(f"k_{r.code}") for r in PARSE_RULES])
    # reason and detail are siblings over the same boolean columns: neither refers to the other, so the optimizer
    # never inlines one chain into the other (which multiplied the plan size).
    reason = F.lit(None).cast("string")
    detail = F.lit(None).cast("string")
    for r in reversed(PARSE_RULES):
        reason = F.when(c(f"k_{r.code}"), F.lit(r.code)).otherwise(reason)
        detail = F.when(c(f"k_{r.code}"), r.detail(checks)).otherwise(detail)
    with_reason = flagged.select("*", reason.alias("reason"), detail.alias("detail"))
    derived_id = F.sha2(F.concat_ws("\u0001", F.lit(fmt.name), c("user_id"), c("item_id"), c("event_type"),
                                    c("event_time").cast("string"), c("f_price"), c("f_quantity"), c("f_session_id"),
                                    c("f_search_query"), c("f_rating")), 256).substr(1, 32)
    return with_reason.select(
        "raw_line", "source_format", "source_file", "line_number", "record_number", "ingest_batch_id",
        F.coalesce(c("f_event_id"), derived_id).alias("event_id"),
        "user_id", c("f_session_id").alias("session_id"), "item_id", c("category_norm").alias("category_id"),
        c("f_brand").alias("brand"), c("price_raw").alias("price"), c("qty_raw").cast("int").alias("quantity"),
        "event_type", c("f_search_query").alias("search_query"),
        F.when(c("event_type") == "review", c("rating_raw")).alias("rating"), "event_time",
        F.to_date("event_time").alias("event_date"), F.lit(fmt.name).alias("source"),
        privacy.sealed_pii({f: c(f"f_{f}") for f in PII_COLUMNS}).alias("pii_sealed"),
        "reason", "detail",
    )


# -- where intermediate results live -----------------------------------------------------------------------------

class Staging:
    """How the runner keeps a step's result: as a lazy plan (no folder: tests, small frames) or written under
    ``folder`` as Parquet and read back (``clean`` itself).

    Staged Parquet is read a batch at a time, so the memory a task needs does not grow with the input (an in-memory
    cache's blocks do), each staged step runs once however many branches read it, and a small staged table (the
    duplicates' positions, the outlier bounds, the bot users) shows the planner its size, so it is broadcast instead
    of the wide rows being shuffled to meet it. The runner decides what is staged; the steps only name their parts.
    """

    def __init__(self, folder: str | None = None):
        self.folder = folder

    def __call__(self, df: DataFrame, name: str) -> DataFrame:
        if self.folder is None:
            return df
        path = f"{self.folder}/{name}"
        df.write.mode("overwrite").parquet(path)  # replaces what a crashed run left
        return df.sparkSession.read.parquet(path)

    def step(self, what: str):
        """A logged, timed step when the work is staged (it runs here); a lazy plan has nothing to log yet."""
        return nullcontext() if self.folder is None else step(log, what)


LAZY = Staging()


# -- step 2: duplicates ----------------------------------------------------------------------------------------------

def positioned(valid: DataFrame) -> DataFrame | None:
    """Valid rows with ``_pos``: the rank of their (file, batch), then their line number, and ``_rec``, their
    record in the line (0 for one event per line) -- unique in the run and in (file, line, record) order, the order
    that decides which copy of a duplicate is kept. None when there are none."""
    # bounded: one row per input file of the run
    files = sorted((r[0], r[1]) for r in valid.select("source_file", "ingest_batch_id").distinct().collect())
    if not files:
        return None
    ranks = valid.sparkSession.createDataFrame([(f, b, i) for i, (f, b) in enumerate(files)],
                                               "source_file string, ingest_batch_id string, _rank long")
    return valid.join(F.broadcast(ranks), ["source_file", "ingest_batch_id"]) \
                .withColumn("_pos", c("_rank") * (1 << 40) + c("line_number")).drop("_rank") \
                .withColumn("_rec", F.coalesce(c("record_number"), F.lit(0)))


POSITION = ("_pos", "_rec")


def exact_duplicates(keys: DataFrame) -> DataFrame:
    """(_pos, _rec, _exact) of every row whose ``event_id`` an earlier position already has."""
    first = F.row_number().over(Window.partitionBy("event_id").orderBy(*POSITION))
    return keys.withColumn("_rn", first).where(c("_rn") > 1).select(*POSITION, F.lit("duplicate_exact").alias("_exact"))


def near_duplicates(keys: DataFrame, exact: DataFrame, window_seconds: int, types: list[str]) -> DataFrame:
    """(_pos, _rec, _near) of rows (of ``types``, not exact copies) within ``window_seconds`` of the previous event
    with the same user, item and type."""
    candidates = keys.where(c("event_type").isin(*types)).join(exact, list(POSITION), "left_anti")
    key = Window.partitionBy("user_id", "item_id", "event_type").orderBy("event_time", *POSITION)
    gap = c("event_time").cast("double") - F.lag("event_time").over(key).cast("double")
    return candidates.withColumn("_gap", gap).where(c("_gap") <= window_seconds) \
                     .select(*POSITION, F.lit("duplicate_near").alias("_near"))


def mark_duplicates(df: DataFrame, near_window_seconds: int, near_types: list[str],
                    staging: Staging = LAZY) -> DataFrame:
    """Add ``disposition``: quarantine (has a reason), duplicate_exact, duplicate_near or accepted.

    Exact: same ``event_id`` (the source's id, or the hash of every canonical field) as an earlier line of this run
    (earlier batches: :func:`mark_seen`). Near: same user, item and event type (one of ``near_types``) within
    ``near_window_seconds`` of the previous such event. The first line (by file, line number) is the one kept.
    Only narrow keys are shuffled: the windows return the positions of the duplicates, a small set that ``staging``
    may keep so that it is broadcast to mark the wide rows.
    """
    invalid = df.where(c("reason").isNotNull()).withColumn("disposition", F.lit("quarantine"))
    rows = positioned(df.where(c("reason").isNull()))
    if rows is None:
        return invalid
    keys = rows.select(*POSITION, "event_id", "user_id", "item_id", "event_type", "event_time")
    exact = staging(exact_duplicates(keys), "duplicates/exact")
    near = staging(near_duplicates(keys, exact, near_window_seconds, near_types), "duplicates/near")
    marked = (rows.join(exact, list(POSITION), "left").join(near, list(POSITION), "left")
              .withColumn("disposition", F.coalesce("_exact", "_near", F.lit("accepted")))
              .drop(*POSITION, "_exact", "_near"))
    return invalid.unionByName(marked)


def seen_ids(valid: DataFrame, existing: DataFrame) -> DataFrame | None:
    """The ``event_id`` s of ``valid`` that an earlier batch already put in ``existing`` (silver); None when
    ``valid`` is empty. Only silver's partitions in ``valid`` 's event-date range are read (partition pruning keeps
    the join small), and only ids meet silver."""
    lo, hi = valid.agg(F.min("event_date"), F.max("event_date")).first()  # two dates
    if lo is None:
        return None
    in_range = existing.where(c("event_date").between(lo, hi)).select("event_id")
    return valid.select("event_id").join(in_range, "event_id", "left_semi").distinct()


def mark_seen(df: DataFrame, seen: DataFrame) -> DataFrame:
    """Accepted rows whose ``event_id`` is in ``seen`` (:func:`seen_ids`) become duplicate_exact."""
    accepted = c("disposition") == "accepted"
    return (df.join(seen.withColumn("_seen", F.lit(True)), ["event_id"], "left")
              .withColumn("disposition", F.when(accepted & c("_seen").isNotNull(), "duplicate_exact")
                          .otherwise(c("disposition")))
              .drop("_seen"))


# -- step 3: missing values ------------------------------------------------------------------------------------------

QUANTITY_TYPES = ("cart", "remove_from_cart", "purchase")


def _average(strategy: str):
    return F.avg if strategy == "mean" else (lambda x: F.percentile_approx(x, 0.5))


def global_fills(df: DataFrame, policies: dict[str, MissingPolicy]) -> dict[str, float | None]:
    """The global mean / median of each column whose policy needs one (the fallback of the per-item value)."""
    needed = {col: p.strategy for col, p in policies.items() if p.strategy in ("mean", "median")}
    if not needed:
        return {}
    row = df.where(c("disposition") == "accepted") \
            .agg(*[_average(s)(c(col)).alias(col) for col, s in needed.items()]).first()  # one row
    return {col: row[col] for col in needed}


def impute_missing(df: DataFrame, policies: dict[str, MissingPolicy],
                   fills: dict[str, float | None] | None = None) -> DataFrame:
    """Fill or drop missing price / quantity of accepted rows per policy; record filled columns in ``imputed``.

    Quantity applies to cart, remove_from_cart and purchase events only. mean / median are per item, falling back to
    the global value (``fills``, from :func:`global_fills`); interpolate is linear in time between the user's
    neighbouring known values.
    """
    if fills is None:
        fills = global_fills(df, policies)
    if "imputed" not in df.columns:
        df = df.withColumn("imputed", F.array().cast("array<string>"))
    accepted = c("disposition") == "accepted"
    for column, policy in policies.items():
        applies = accepted & c(column).isNull()
        if column == "quantity":
            applies = applies & c("event_type").isin(*QUANTITY_TYPES)
        if policy.strategy == "keep":
            continue
        if policy.strategy == "drop":
            df = quarantine_where(df, applies, f"missing_{column}", F.lit(f"{column} is empty"))
            continue
        known = F.when(accepted, c(column))
        if policy.strategy == "constant":
            fill = F.lit(policy.value if policy.value is not None else 0)
        elif policy.strategy in ("mean", "median"):
            fill = F.coalesce(_average(policy.strategy)(known).over(Window.partitionBy("item_id")),
                              F.lit(fills[column]))
        else:  # interpolate
            w = Window.partitionBy("user_id").orderBy("event_time", "source_file", "line_number", "record_number")
            before = w.rowsBetween(Window.unboundedPreceding, -1)
            after = w.rowsBetween(1, Window.unboundedFollowing)
            known_at = F.when(known.isNotNull(), c("event_time"))
            pv, pt = F.last(known, True).over(before), F.last(known_at, True).over(before)
            nv, nt = F.first(known, True).over(after), F.first(known_at, True).over(after)
            span = nt.cast("double") - pt.cast("double")
            frac = F.when(span > 0, (c("event_time").cast("double") - pt.cast("double")) / span).otherwise(0.0)
            fill = F.coalesce(pv + (nv - pv) * frac, pv, nv)
        if column == "quantity":
            fill = F.round(fill).cast("int")
        df = (df.withColumn("_fill", F.when(applies, fill))
                .withColumn("imputed", F.when(c("_fill").isNotNull(), F.array_union("imputed", F.array(F.lit(column))))
                            .otherwise(c("imputed")))
                .withColumn(column, F.coalesce(c(column), c("_fill")).cast(df.schema[column].dataType))
                .drop("_fill"))
    return df


# -- step 4: outliers ------------------------------------------------------------------------------------------------

OUTLIER_COLUMNS = ("price", "quantity")
_ALL = "\u0000all"


def robust_bounds(df: DataFrame, column: str, conf: OutlierConf) -> DataFrame:
    """Per category: [median - t*1.4826*MAD, median + t*1.4826*MAD] over accepted rows, and the global bounds
    (``cat`` = ``_ALL``). Output is bounded by the number of categories."""
    vals = df.where((c("disposition") == "accepted") & c(column).isNotNull()) \
             .select(F.coalesce("category_id", F.lit(_ALL)).alias("cat"), c(column).cast("double").alias("v"))
    both = vals.unionByName(vals.withColumn("cat", F.lit(_ALL)))
    med = both.groupBy("cat").agg(F.percentile_approx("v", 0.5).alias("med"), F.count("v").alias("n"))
    mad = both.join(med, "cat").groupBy("cat", "med", "n") \
              .agg(F.percentile_approx(F.abs(c("v") - c("med")), 0.5).alias("mad"))
    # a MAD of 0 (one price in the category) would flag every other value: floor the spread at 1% of the median
    spread = F.greatest(c("mad") * 1.4826, F.abs(c("med")) * 0.01) * conf.mad_threshold
    return mad.select("cat", "n", (c("med") - spread).alias("lo"), (c("med") + spread).alias("hi"))


@dataclass(frozen=True)
class Bounds:
    """One column's outlier bounds: per category (categories with at least ``min_category_events`` values) and the
    global pair every other category gets."""

    per_category: DataFrame  # cat, lo, hi
    lo: float | None
    hi: float | None


def outlier_bounds(df: DataFrame, conf: OutlierConf, staging: Staging = LAZY) -> dict[str, Bounds]:
    """Each outlier column's :class:`Bounds` over ``df`` 's accepted rows. With ``staging`` each column's bounds are
    computed once (one row per category) and every later use reads them instead of recomputing the percentiles."""
    out = {}
    for column in OUTLIER_COLUMNS:
        b = staging(robust_bounds(df, column, conf), f"bounds/{column}")
        g = b.where(c("cat") == _ALL).first()  # one row (or none when nothing has a value)
        per_cat = b.where((c("cat") != _ALL) & (c("n") >= conf.min_category_events)).select("cat", "lo", "hi")
        out[column] = Bounds(per_cat, g["lo"] if g else None, g["hi"] if g else None)
    return out


def flag_outliers(df: DataFrame, conf: OutlierConf, bounds: dict[str, Bounds] | None = None) -> DataFrame:
    """``price_outlier`` / ``quantity_outlier`` against ``bounds`` (default: :func:`outlier_bounds` of ``df``);
    with action cap the value is clipped, with quarantine the row goes."""
    if bounds is None:
        bounds = outlier_bounds(df, conf)
    out = df
    for column in OUTLIER_COLUMNS:
        b = bounds[column]
        out = (out.withColumn("_cat", F.coalesce("category_id", F.lit(_ALL)))
                  .join(F.broadcast(b.per_category), c("_cat") == c("cat"), "left")
                  .withColumn("lo", F.coalesce("lo", F.lit(b.lo).cast("double")))
                  .withColumn("hi", F.coalesce("hi", F.lit(b.hi).cast("double"))))
        flag = f"{column}_outlier"
        is_out = (c("disposition") == "accepted") & c(column).isNotNull() & \
                 ((c(column) < c("lo")) | (c(column) > c("hi")))
        out = out.withColumn(flag, F.coalesce(is_out, F.lit(False)))
        if conf.action == "cap":
            capped = F.least(F.greatest(c(column), c("lo")), c("hi"))
            if column == "quantity":
                capped = F.greatest(F.round(capped), F.lit(1))
            out = out.withColumn(column, F.when(c(flag), capped).otherwise(c(column)).cast(df.schema[column].dataType))
        elif conf.action == "quarantine":
            detail = F.format_string(f"{column} %s outside [%.4g, %.4g] for category %s", c(column).cast("string"),
                                     c("lo"), c("hi"), F.coalesce("category_id", F.lit("<none>")))
            out = quarantine_where(out, c(flag), f"outlier_{column}", detail)
        out = out.drop("_cat", "cat", "lo", "hi")
    return out


# -- step 5: bots ----------------------------------------------------------------------------------------------------

def bot_users(df: DataFrame, conf: BotConf) -> DataFrame:
    """Users whose accepted events in this run look inhuman: (user_id, bot_reason).

    Rules: more than ``max_events_per_minute`` in one minute, more than ``max_events_per_day`` in one day, or at
    least ``min_events_for_regularity`` events whose gaps have a coefficient of variation below ``max_gap_cv``.

    One shuffle: the (user, time) pairs are partitioned by user and sorted by time for the gaps, and the per minute,
    per day and per user aggregates group by keys that start with the user, so they run where the rows already are.
    The gaps' spread is carried up as count, sum and sum of squares; their cancellation error is ~1e-16 of the mean
    squared, far below any usable ``max_gap_cv``.
    """
    # Browsing events only: invoice lines share one timestamp and a rating page takes many ratings a minute.
    ev = df.where((c("disposition") == "accepted") & ~c("event_type").isin("purchase", "review")) \
           .select("user_id", "event_time")
    gap = c("event_time").cast("double") \
        - F.lag("event_time").over(Window.partitionBy("user_id").orderBy("event_time")).cast("double")
    sums = ("n", "s", "ss")
    per_minute = ev.withColumn("gap", gap) \
        .groupBy("user_id", F.date_trunc("minute", "event_time").alias("m")) \
        .agg(F.count(F.lit(1)).alias("c"), F.count("gap").alias("n"), F.sum("gap").alias("s"),
             F.sum(c("gap") * c("gap")).alias("ss"))
    per_day = per_minute.groupBy("user_id", F.to_date("m").alias("d")) \
        .agg(F.sum("c").alias("c"), F.max("c").alias("peak_minute"), *[F.sum(x).alias(x) for x in sums])
    per_user = per_day.groupBy("user_id") \
        .agg(F.max("peak_minute").alias("peak_minute"), F.max("c").alias("peak_day"), *[F.sum(x).alias(x) for x in sums])
    mean = c("s") / c("n")
    stats = per_user.select("user_id", "peak_minute", "peak_day", c("n").alias("n_gaps"), mean.alias("mean_gap"),
                            F.sqrt(F.greatest(c("ss") / c("n") - mean * mean, F.lit(0.0))).alias("sd_gap"))
    reasons = F.concat_ws(
        "; ",
        F.when(c("peak_minute") > conf.max_events_per_minute, F.format_string("%d events in one minute", "peak_minute")),
        F.when(c("peak_day") > conf.max_events_per_day, F.format_string("%d events in one day", "peak_day")),
        F.when((c("n_gaps") + 1 >= conf.min_events_for_regularity) & (c("mean_gap") > 0)
               & (c("sd_gap") / c("mean_gap") < conf.max_gap_cv),
               F.format_string("machine-regular gaps (mean %.1fs, cv %.3f)", "mean_gap", c("sd_gap") / c("mean_gap"))),
    )
    return stats.select("user_id", reasons.alias("bot_reason")).where(c("bot_reason") != "")


def flag_bots(df: DataFrame, bots: DataFrame) -> DataFrame:
    """``is_bot`` / ``bot_reason`` from ``bots`` (:func:`bot_users`). Staged, the planner knows the (small) table's
    size and broadcasts it, so the wide rows are not shuffled by user for the join; a large bot table still joins."""
    return df.join(bots, "user_id", "left").withColumn("is_bot", c("bot_reason").isNotNull())


# -- the runner ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Statistics:
    """What the row-wise steps after the duplicate marks need from the whole run, computed once, explicitly."""

    fills: dict[str, float | None]
    bounds: dict[str, Bounds]
    bots: DataFrame


def statistics(marked: DataFrame, conf: CleanConf, staging: Staging = LAZY) -> Statistics:
    """Global fill values, outlier bounds and bot users of the marked rows (each a small aggregate)."""
    return Statistics(global_fills(marked, conf.missing), outlier_bounds(marked, conf.outliers, staging),
                      staging(bot_users(marked, conf.bots), "bots"))


def formats_in(bronze: DataFrame, settings) -> dict[str, SourceFormat]:
    """The formats of the rows of ``bronze``, by name."""
    names = [r[0] for r in bronze.select("source_format").distinct().collect()]  # bounded: a few formats
    return {n: get_format(n, settings) for n in sorted(names)}


def typed_rows(bronze: DataFrame, settings, privacy: Privacy,
               formats: dict[str, SourceFormat] | None = None) -> DataFrame:
    """:func:`parse_and_validate` of every format in ``bronze`` (``formats``, when the caller knows them already),
    one union (without the raw line)."""
    formats = formats_in(bronze, settings) if formats is None else formats
    parts = [parse_and_validate(bronze.where(c("source_format") == name), fmt, settings.source(name),
                                settings.clean, privacy).drop("raw_line")
             for name, fmt in formats.items()]
    if not parts:
        raise ValueError("nothing to clean")
    return reduce(DataFrame.unionByName, parts)


def classify(bronze: DataFrame, settings, existing: DataFrame | None = None, staging: Staging = LAZY,
             privacy: Privacy | None = None, formats: dict[str, SourceFormat] | None = None) -> DataFrame:
    """All bronze rows -> one row each with a disposition; the accepted ones carry every silver column.

    parse and validate -> mark duplicates (and events already in ``existing`` silver) -> statistics -> fill missing
    values, flag outliers, flag bots. ``staging`` decides what is materialised: after the parse (so it runs once
    however many branches use it) and after the duplicate marks (every statistic is a small aggregate of that frame),
    plus the small tables (duplicates' positions, seen ids, bounds, bots). The returned frame is the marked rows plus
    row-wise steps and broadcast joins, so the counts, silver and the quarantine each read the marked rows again (only
    the columns each needs) instead of a fourth wide copy being written and read back: at 10M events that copy cost
    about half a minute. The raw line is not carried along (it would ride through every shuffle):
    :func:`quarantine_rows` joins it back from bronze for the rejected rows only.
    """
    conf: CleanConf = settings.clean
    privacy = privacy or Privacy.from_settings(settings)
    with staging.step("parse and validate"):
        typed = staging(typed_rows(bronze, settings, privacy, formats), "typed")
    with staging.step("mark exact and near duplicates"):
        marked = mark_duplicates(typed, conf.dedupe.near_window_seconds, conf.dedupe.near_types, staging)
        seen = None if existing is None else seen_ids(typed.where(c("reason").isNull()), existing)
        if seen is not None:
            marked = mark_seen(marked, staging(seen, "seen"))
        marked = staging(marked, "marked")
    with staging.step("outlier bounds and bot users"):
        stats = statistics(marked, conf, staging)
    filled = impute_missing(marked, conf.missing, stats.fills)
    return flag_bots(flag_outliers(filled, conf.outliers, stats.bounds), stats.bots)


def _no_counts() -> dict[str, int]:
    """A batch's counts before any row: each disposition, and the lines the rows come from."""
    return {**dict.fromkeys(DISPOSITIONS, 0), "lines_out": 0}


def count_dispositions(classified: DataFrame) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """Per batch and disposition counts (plus ``lines_out``: the bronze lines the rows come from), and per reason
    counts (both bounded)."""
    first_of_line = (F.coalesce(c("record_number"), F.lit(1)) == 1).cast("long")
    rows = classified.groupBy("ingest_batch_id", "disposition", "reason") \
                     .agg(F.count(F.lit(1)).alias("count"), F.sum(first_of_line).alias("lines")).collect()
    per_batch: dict[str, dict[str, int]] = {}
    reasons: dict[str, int] = {}
    for r in rows:
        d = per_batch.setdefault(r["ingest_batch_id"], _no_counts())
        d[r["disposition"]] += r["count"]
        d["lines_out"] += r["lines"]
        if r["reason"]:
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + r["count"]
    return per_batch, reasons


def silver_rows(classified: DataFrame) -> DataFrame:
    return classified.where(c("disposition") == "accepted")


def quarantine_rows(classified: DataFrame, privacy: Privacy | None = None, bronze: DataFrame | None = None,
                    formats: dict[str, SourceFormat] | None = None) -> DataFrame:
    """Rejected rows, the raw line verbatim (sealed with AES-GCM when ``privacy.seal_quarantine``); for a record of
    a nested format among ``formats``, that record's JSON (the line and record number locate it).

    ``classified`` may carry ``raw_line``; otherwise it is joined back from ``bronze`` by batch, file and line.
    """
    rejected = classified.where(c("disposition") == "quarantine")
    if "raw_line" not in classified.columns:
        if bronze is None:
            raise ValueError("quarantine_rows needs bronze when the classified rows carry no raw_line")
        keys = ["ingest_batch_id", "source_file", "line_number"]
        rejected = rejected.join(bronze.select(*keys, "raw_line"), keys, "left")
    raw = c("raw_line")
    for fmt in (formats or {}).values():
        if fmt.nested:
            record = (c("source") == fmt.name) & c("record_number").isNotNull()
            raw = F.when(record, record_text(fmt, c("raw_line"), c("record_number"))).otherwise(raw)
    # invalid bytes become U+FFFD: Arrow-based readers (delta-rs, polars, DuckDB) refuse invalid UTF-8
    raw = F.make_valid_utf8(raw)
    if privacy is not None and privacy.seal_quarantine:
        raw = privacy.seal(raw)
    return rejected.select(
        raw.alias("raw_record"), c("source").alias("source_format"), "source_file", "line_number", "record_number",
        "ingest_batch_id", "reason", "detail")


@dataclass(frozen=True)
class CleanReport:
    batches: list[str]
    per_batch: dict[str, dict[str, int]]
    reasons: dict[str, int]

    @property
    def totals(self) -> dict[str, int]:
        out = dict.fromkeys(("rows_in", "lines_in", "lines_out") + DISPOSITIONS, 0)
        for d in self.per_batch.values():
            for k, v in d.items():
                out[k] = out.get(k, 0) + v
        return out


class ReconciliationError(RuntimeError):
    pass


def reconcile(totals: dict[str, int], silver_written: int, quarantine_written: int) -> list[str]:
    """What does not add up (empty when everything does): the dispositions against the rows in, and the rows each
    output table got against the rows given that disposition."""
    problems = []
    if sum(totals[d] for d in DISPOSITIONS) != totals["rows_in"]:
        problems.append(f"dispositions add up to {sum(totals[d] for d in DISPOSITIONS):,}, "
                        f"bronze has {totals['rows_in']:,}")
    if totals.get("lines_out", 0) != totals.get("lines_in", 0):
        problems.append(f"the rows come from {totals.get('lines_out', 0):,} lines, bronze has "
                        f"{totals.get('lines_in', 0):,}")
    if silver_written != totals["accepted"]:
        problems.append(f"silver got {silver_written:,} rows, {totals['accepted']:,} were accepted")
    if quarantine_written != totals["quarantine"]:
        problems.append(f"quarantine got {quarantine_written:,} rows, {totals['quarantine']:,} were rejected")
    return problems


def expected_rows(bronze: DataFrame, formats: dict[str, SourceFormat], lines: dict[str, int]) -> dict[str, int]:
    """Rows each batch of ``bronze`` should give (:func:`shopmine.io.sources.rows_per_line`), counted from bronze
    alone: its ``lines`` where every format has one event per line; nested formats' lines are opened (their batches
    only) and their records counted."""
    nested = [f for f in formats.values() if f.nested]
    if not nested:
        return dict(lines)
    per_line = F.lit(1)
    for fmt in nested:
        per_line = F.when(c("source_format") == fmt.name, rows_per_line(fmt, c("raw_line"))).otherwise(per_line)
    opened = bronze.where(c("source_format").isin(*[f.name for f in nested]))
    extra = {r[0]: r[1] for r in opened.groupBy("ingest_batch_id")  # one row per batch
             .agg((F.sum(per_line) - F.count(F.lit(1))).alias("extra")).collect()}
    return {b: n + extra.get(b, 0) for b, n in lines.items()}


def run_clean(lake, settings, run_id: str, reprocess: bool = False) -> CleanReport:
    """Clean the bronze batches not cleaned yet (all with ``reprocess``), replacing their rows in every output.

    Idempotent: outputs are replaced per batch (``replaceWhere``) and the batch is marked done in
    ``ops.clean_batches`` last, so a crash anywhere leaves the batch pending and the rerun converges.
    """
    from shopmine.io.tables import BRONZE_EVENTS_RAW, OPS_CLEAN_BATCHES, SILVER_EVENTS, SILVER_QUARANTINE

    privacy = Privacy.from_settings(settings)
    check_key(lake, privacy, reprocess)
    bronze = lake.read(BRONZE_EVENTS_RAW.name)
    # bounded: a row per batch (an ingest batch has one format)
    per_format = bronze.groupBy("ingest_batch_id", "source_format").count().collect()
    lines_in: dict[str, int] = {}
    for r in per_format:
        lines_in[r[0]] = lines_in.get(r[0], 0) + r[2]
    done: set[str] = set()
    if not reprocess and lake.exists(OPS_CLEAN_BATCHES.name):
        done = {r[0] for r in lake.read(OPS_CLEAN_BATCHES.name).select("ingest_batch_id").distinct().collect()}
    todo = sorted(set(lines_in) - done)
    if not todo:
        return CleanReport([], {}, {})
    in_todo = c("ingest_batch_id").isin(todo)
    existing = lake.read(SILVER_EVENTS.name).where(~in_todo) if lake.exists(SILVER_EVENTS.name) else None
    staging = Staging(f"{lake.root}/_staging/clean-{run_id}")
    todo_rows = bronze.where(in_todo)
    formats = {n: get_format(n, settings) for n in sorted({r[1] for r in per_format if r[0] in todo})}
    rows_in = expected_rows(todo_rows, formats, lines_in)
    with step(log, f"parse, validate, dedupe and flag {len(todo)} batch(es)") as info:
        classified = classify(todo_rows, settings, existing, staging, privacy, formats)
        per_batch, reasons = count_dispositions(classified)
        info["rows"] = sum(sum(d[k] for k in DISPOSITIONS) for d in per_batch.values())
    for b in todo:
        d = per_batch.setdefault(b, _no_counts())
        d["rows_in"], d["lines_in"] = rows_in[b], lines_in[b]
    predicate = "ingest_batch_id IN (" + ", ".join(f"'{b}'" for b in todo) + ")"

    with step(log, f"write {SILVER_EVENTS.name}") as info:
        metrics = lake.replace_where(silver_rows(classified), SILVER_EVENTS.name, predicate)
        silver_written = info["rows"] = metrics.get("numOutputRows", 0)
    with step(log, f"write {SILVER_QUARANTINE.name}") as info:
        metrics = lake.replace_where(quarantine_rows(classified, privacy, todo_rows, formats), SILVER_QUARANTINE.name,
                                     predicate)
        quarantine_written = info["rows"] = metrics.get("numOutputRows", 0)
    report = CleanReport(todo, per_batch, reasons)
    problems = reconcile(report.totals, silver_written, quarantine_written)
    if problems:
        raise ReconciliationError("counts do not reconcile: " + "; ".join(problems))
    rec = lake.spark.createDataFrame(
        [(b, run_id, d["rows_in"], d["accepted"], d["quarantine"], d["duplicate_exact"], d["duplicate_near"],
          d["lines_in"]) for b, d in per_batch.items()], OPS_CLEAN_BATCHES.schema)
    lake.replace_where(rec, OPS_CLEAN_BATCHES.name, predicate)
    lake.remove_folder(staging.folder)
    lake.set_properties(SILVER_EVENTS.name, {KEY_PROPERTY: privacy.fingerprint or "none"})
    return report


__all__ = ["RULES", "REASONS", "EVENT_TYPES", "Staging", "classify", "count_dispositions", "silver_rows",
           "quarantine_rows", "reconcile", "run_clean", "CleanReport"]
