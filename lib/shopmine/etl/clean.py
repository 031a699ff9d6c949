"""``bronze.events_raw`` -> ``silver.events`` + ``silver.quarantine``, reconciled per batch in ``ops.clean_batches``.

Every bronze row ends in exactly one *disposition*: ``accepted`` (silver), ``quarantine`` (with a reason code and a
detail naming the field and value), ``duplicate_exact`` or ``duplicate_near`` (dropped, counted). The steps are pure
DataFrame -> DataFrame functions so each can be tested alone:

``parse_and_validate`` -> ``mark_duplicates`` -> ``impute_missing`` -> ``flag_outliers`` -> ``flag_bots``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from shopmine.conf import BotConf, CleanConf, MissingPolicy, OutlierConf, SourceConf
from shopmine.io.sources import PII_COLUMNS, SourceFormat, get_format, parse_fields
from shopmine.logs import step
from shopmine.privacy import Privacy
from shopmine.vocab import EVENT_TYPES

log = logging.getLogger(__name__)

# Reason codes, in the order they are checked (the first that applies is the row's reason).
REASONS: dict[str, str] = {
    "null_only_row": "every field is empty (blank line, or only separators)",
    "duplicate_header": "a copy of the header line in the middle of a file",
    "invalid_utf8": "the line has bytes that are not valid UTF-8",
    "truncated_line": "the file's last line is cut short (wrong field count, open quote or broken JSON)",
    "broken_quoting": "an odd number of double quotes: a quoted field is never closed",
    "wrong_column_count": "the line does not have the format's number of fields",
    "malformed_json": "a JSON-lines record that is not a JSON object",
    "missing_user": "no user id",
    "invalid_user_id": "user id not an integer, or overflows 64 bits (integer-id formats), or not a printable code",
    "missing_item": "no item id (allowed only for search events)",
    "invalid_item_id": "item id not an integer, or overflows 64 bits (integer-id formats), or not a printable code",
    "unknown_event_type": "event type missing or not in the format's vocabulary",
    "unparseable_timestamp": "the time is in none of the accepted formats / epoch units",
    "timestamp_before_range": "earlier than the source's min_time (conf sources.<format>.min_time)",
    "future_timestamp": "later than the ingest time plus clean.future_tolerance_hours",
    "cancellation": "a cancelled invoice line (UCI Online Retail invoice numbers starting with C)",
    "invalid_price": "price not a number, zero, negative, or above clean.limits.max_price",
    "invalid_quantity": "quantity not an integer, zero, negative, or above clean.limits.max_quantity",
    "invalid_rating": "review rating not a number in [0, 10]",
    "missing_price": "price missing and clean.missing.price.strategy is drop",
    "missing_quantity": "quantity missing and clean.missing.quantity.strategy is drop",
    "outlier_price": "price outside its category's robust bounds and clean.outliers.action is quarantine",
    "outlier_quantity": "quantity outside its category's robust bounds and clean.outliers.action is quarantine",
}


def reasons_markdown() -> str:
    """The quarantine reason table of docs/quarantine-reasons.md, in priority order (generated)."""
    return "\n".join(["| reason | meaning |", "|---|---|"] + [f"| `{k}` | {v} |" for k, v in REASONS.items()])


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


def parse_event_time(raw: Column, time_kind: str, tz: str) -> Column:
    """Timestamp (UTC) from epoch seconds/ms/µs/ns or text; naive text is in the source's zone ``tz``."""
    is_num = raw.rlike(r"^\d+(\.\d+)?$")
    num = raw.try_cast("decimal(38,6)")
    if time_kind == "epoch_s":
        micros = num * 1_000_000
    elif time_kind == "epoch_ms":
        micros = num * 1_000
    else:  # auto: the unit follows from the magnitude (s < 1e11 <= ms < 1e14 <= µs < 1e17 <= ns)
        micros = (F.when(num < 1e11, num * 1_000_000).when(num < 1e14, num * 1_000)
                  .when(num < 1e17, num).otherwise(num / 1_000))
    epoch = F.timestamp_micros(micros.try_cast("bigint"))
    if time_kind in ("epoch_s", "epoch_ms"):
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
    c = F.col
    p = parse_fields(bronze, fmt)
    privacy = privacy or Privacy(None, None, {}, False)
    user, user_problem = normalise_id(c("f_user_id"), fmt.user_id_kind)
    user = privacy.pseudonymise(user)
    item, item_problem = normalise_id(c("f_item_id"), fmt.item_id_kind)
    type_map = F.create_map(*[F.lit(x) for kv in fmt.event_types.items() for x in kv]) if fmt.event_types else None
    etype = F.lit(fmt.constant_event_type) if fmt.constant_event_type else type_map[F.lower(c("f_event_type"))]
    typed = p.select(
        "*", user.alias("user_id"), user_problem.alias("user_problem"), item.alias("item_id"),
        item_problem.alias("item_problem"), etype.alias("event_type"),
        parse_event_time(c("f_event_time"), fmt.time_kind, source.timezone).alias("event_time"),
        c("f_price").try_cast("double").alias("price_raw"),
        F.when(c("f_quantity").rlike(r"^[+-]?\d+(\.0+)?$"),
               F.regexp_replace("f_quantity", r"\.0+$", "").try_cast("bigint")).alias("qty_raw"),
        c("f_rating").try_cast("double").alias("rating_raw"),
    )
    lim = conf.limits
    min_time = F.lit(source.min_time.isoformat()).cast("timestamp")
    latest = c("ingested_at") + F.make_interval(hours=F.lit(conf.future_tolerance_hours))
    shape_bad = ~c("shape_ok") | ~c("quotes_ok") | ~c("json_ok")
    is_review = c("event_type") == "review"
    # (check column, reason code, detail) in priority order: the first true check is the row's reason.
    checks = [
        ("k_empty", c("all_empty"), "null_only_row", F.lit("every field is empty")),
        ("k_header", c("is_header") & (c("line_number") > 1), "duplicate_header", F.lit("header line repeated")),
        ("k_utf8", c("bad_utf8"), "invalid_utf8", F.lit("invalid UTF-8 bytes (replaced by U+FFFD in raw_record)")),
        ("k_trunc", shape_bad & c("is_last_line"), "truncated_line",
         _fmt("last line of the file is cut short (%s fields)", c("n_fields"))),
        ("k_quote", ~c("quotes_ok"), "broken_quoting", F.lit("unbalanced double quote")),
        ("k_width", ~c("shape_ok"), "wrong_column_count",
         _fmt("%s fields, expected " + " or ".join(map(str, fmt.widths)), c("n_fields"))),
        ("k_json", ~c("json_ok"), "malformed_json", F.lit("not a JSON object")),
        ("k_nouser", c("f_user_id").isNull(), "missing_user", F.lit("user_id is empty")),
        ("k_baduser", c("user_problem").isNotNull(), "invalid_user_id",
         _fmt("user_id %s", c("user_problem")) if privacy.pseudonymising
         else _fmt("user_id '%s' %s", c("f_user_id"), c("user_problem"))),
        ("k_noitem", c("f_item_id").isNull() & (F.coalesce(c("event_type"), F.lit("")) != "search"), "missing_item",
         F.lit("item_id is empty")),
        ("k_baditem", c("item_problem").isNotNull(), "invalid_item_id",
         _fmt("item_id '%s' %s", c("f_item_id"), c("item_problem"))),
        ("k_type", c("event_type").isNull(), "unknown_event_type",
         _fmt("event type '%s' is not known for format " + fmt.name, c("f_event_type"))),
        ("k_time", c("event_time").isNull(), "unparseable_timestamp", _fmt("time '%s' cannot be parsed", c("f_event_time"))),
        ("k_early", c("event_time") < min_time, "timestamp_before_range",
         _fmt("time %s is before " + source.min_time.isoformat(), c("event_time"))),
        ("k_future", c("event_time") > latest, "future_timestamp",
         _fmt("time %s is after the ingest time %s", c("event_time"), c("ingested_at"))),
        ("k_cancel", F.lit(fmt.name == "online_retail") & F.coalesce(c("f_invoice"), F.lit("")).startswith("C"),
         "cancellation", _fmt("invoice %s is a cancellation", c("f_invoice"))),
        ("k_price", c("f_price").isNotNull() & (c("price_raw").isNull() | F.isnan("price_raw") | (c("price_raw") <= 0)
                                               | (c("price_raw") > lim.max_price)),
         "invalid_price", _fmt("price '%s' must be a number in (0, " + f"{lim.max_price:g}]", c("f_price"))),
        ("k_qty", c("f_quantity").isNotNull() & (c("qty_raw").isNull() | (c("qty_raw") <= 0)
                                                  | (c("qty_raw") > lim.max_quantity)),
         "invalid_quantity", _fmt("quantity '%s' must be an integer in [1, " + f"{lim.max_quantity}]", c("f_quantity"))),
        ("k_rating", is_review & c("f_rating").isNotNull() & (c("rating_raw").isNull() | F.isnan("rating_raw")
                                                             | (c("rating_raw") < 0) | (c("rating_raw") > 10)),
         "invalid_rating", _fmt("rating '%s' must be a number in [0, 10]", c("f_rating"))),
    ]
    flagged = typed.select("*", *[F.coalesce(cond, F.lit(False)).alias(name) for name, cond, _, _ in checks])
    # reason and detail are siblings over the same boolean columns: neither refers to the other, so the optimizer
    # never inlines one chain into the other (which multiplied the plan size).
    reason = F.lit(None).cast("string")
    detail = F.lit(None).cast("string")
    for name, _, code, text in reversed(checks):
        reason = F.when(c(name), F.lit(code)).otherwise(reason)
        detail = F.when(c(name), text).otherwise(detail)
    with_reason = flagged.select("*", reason.alias("reason"), detail.alias("detail"))
    derived_id = F.sha2(F.concat_ws("\u0001", F.lit(fmt.name), c("user_id"), c("item_id"), c("event_type"),
                                    c("event_time").cast("string"), c("f_price"), c("f_quantity"), c("f_session_id"),
                                    c("f_search_query"), c("f_rating")), 256).substr(1, 32)
    return with_reason.select(
        "raw_line", "source_format", "source_file", "line_number", "ingest_batch_id",
        F.coalesce(c("f_event_id"), derived_id).alias("event_id"),
        "user_id", c("f_session_id").alias("session_id"), "item_id", c("f_category_id").alias("category_id"),
        c("f_brand").alias("brand"), c("price_raw").alias("price"), c("qty_raw").cast("int").alias("quantity"),
        "event_type", c("f_search_query").alias("search_query"),
        F.when(is_review, c("rating_raw")).alias("rating"), "event_time",
        F.to_date("event_time").alias("event_date"), F.lit(fmt.name).alias("source"),
        privacy.sealed_pii({f: c(f"f_{f}") for f in PII_COLUMNS}).alias("pii_sealed"),
        "reason", "detail",
    )


# -- step 2: duplicates ----------------------------------------------------------------------------------------------

def mark_duplicates(df: DataFrame, near_window_seconds: int, near_types: list[str],
                    staging: str | None = None) -> DataFrame:
    """Add ``disposition``: quarantine (has a reason), duplicate_exact, duplicate_near or accepted.

    Exact: same ``event_id`` (the source's id, or the hash of every canonical field) as an earlier line of this run
    (earlier batches: :func:`mark_seen`). Near: same user, item and event type (one of ``near_types``) within
    ``near_window_seconds`` of the previous such event. The first line (by file, line number) is the one kept.

    Only narrow keys are shuffled: each valid row gets a ``_pos`` (its file's rank, then its line number: unique in
    the run and in (file, line) order), the two windows run over the key columns and ``_pos``, and they return the
    positions of the duplicates -- a small set, staged under ``staging`` when given so that the planner sees its
    size and broadcasts it to mark the wide rows without shuffling them.
    """
    invalid = df.where(F.col("reason").isNotNull()).withColumn("disposition", F.lit("quarantine"))
    valid = df.where(F.col("reason").isNull())
    # bounded: one row per input file of the run
    files = sorted((r[0], r[1]) for r in valid.select("source_file", "ingest_batch_id").distinct().collect())
    if not files:
        return invalid
    ranks = df.sparkSession.createDataFrame([(f, b, i) for i, (f, b) in enumerate(files)],
                                            "source_file string, ingest_batch_id string, _rank long")
    positioned = valid.join(F.broadcast(ranks), ["source_file", "ingest_batch_id"]) \
                      .withColumn("_pos", F.col("_rank") * (1 << 40) + F.col("line_number")).drop("_rank")
    keys = positioned.select("_pos", "event_id", "user_id", "item_id", "event_type", "event_time")

    exact = keys.withColumn("_rn", F.row_number().over(Window.partitionBy("event_id").orderBy("_pos"))) \
                .where(F.col("_rn") > 1).select("_pos", F.lit("duplicate_exact").alias("_exact"))
    if staging is not None:
        exact = stage(exact, f"{staging}/exact")
    candidates = keys.where(F.col("event_type").isin(*near_types)).join(exact, "_pos", "left_anti")
    key = Window.partitionBy("user_id", "item_id", "event_type").orderBy("event_time", "_pos")
    gap = F.col("event_time").cast("double") - F.lag("event_time").over(key).cast("double")
    near = candidates.withColumn("_gap", gap) \
                     .where(F.col("_gap") <= near_window_seconds).select("_pos", F.lit("duplicate_near").alias("_near"))
    if staging is not None:
        near = stage(near, f"{staging}/near")
    marked = (positioned.join(exact, "_pos", "left").join(near, "_pos", "left")
              .withColumn("disposition", F.coalesce("_exact", "_near", F.lit("accepted")))
              .drop("_pos", "_exact", "_near"))
    return invalid.unionByName(marked)


def mark_seen(df: DataFrame, existing: DataFrame, basis: DataFrame | None = None,
              staging: str | None = None) -> DataFrame:
    """Accepted rows whose ``event_id`` is already in silver from an earlier batch become duplicate_exact.

    Only silver's partitions in this run's event-date range are read (partition pruning keeps the join small). The
    range and the ids to look up are taken from ``basis`` (default: ``df``'s accepted rows); any frame whose rows
    cover the accepted rows will do, e.g. the valid rows before the duplicate marks, which saves computing ``df``
    twice. Only event ids meet silver: the ids found there (usually none: a re-delivered file) are staged under
    ``staging`` when given, so the planner broadcasts them to the wide rows instead of shuffling those by id.
    """
    accepted = F.col("disposition") == "accepted"
    if basis is None:
        basis = df.where(accepted)
    lo, hi = basis.agg(F.min("event_date"), F.max("event_date")).first()  # two dates
    if lo is None:
        return df
    seen = basis.select("event_id").join(existing.where(F.col("event_date").between(lo, hi)).select("event_id"),
                                         "event_id", "left_semi").distinct()
    if staging is not None:
        seen = stage(seen, staging)
    return (df.join(seen.withColumn("_seen", F.lit(True)), ["event_id"], "left")
              .withColumn("disposition", F.when(accepted & F.col("_seen").isNotNull(), "duplicate_exact")
                          .otherwise(F.col("disposition")))
              .drop("_seen"))


# -- step 3: missing values ------------------------------------------------------------------------------------------

QUANTITY_TYPES = ("cart", "remove_from_cart", "purchase")


def impute_missing(df: DataFrame, policies: dict[str, MissingPolicy]) -> DataFrame:
    """Fill or drop missing price / quantity of accepted rows per policy; record filled columns in ``imputed``.

    Quantity applies to cart, remove_from_cart and purchase events only. mean / median are per item, falling back to
    the global value; interpolate is linear in time between the user's neighbouring known values.
    """
    if "imputed" not in df.columns:
        df = df.withColumn("imputed", F.array().cast("array<string>"))
    accepted = F.col("disposition") == "accepted"
    for column, policy in policies.items():
        applies = accepted & F.col(column).isNull()
        if column == "quantity":
            applies = applies & F.col("event_type").isin(*QUANTITY_TYPES)
        if policy.strategy == "keep":
            continue
        if policy.strategy == "drop":
            df = df.withColumn("_drop", applies)
            df = (df.withColumn("reason", F.when(F.col("_drop"), F.lit(f"missing_{column}")).otherwise(F.col("reason")))
                    .withColumn("detail", F.when(F.col("_drop"), F.lit(f"{column} is empty")).otherwise(F.col("detail")))
                    .withColumn("disposition", F.when(F.col("_drop"), "quarantine").otherwise(F.col("disposition")))
                    .drop("_drop"))
            continue
        known = F.when(accepted, F.col(column))
        if policy.strategy == "constant":
            fill = F.lit(policy.value if policy.value is not None else 0)
        elif policy.strategy in ("mean", "median"):
            agg = F.avg if policy.strategy == "mean" else (lambda x: F.percentile_approx(x, 0.5))
            glob = df.where(accepted).agg(agg(F.col(column)).alias("g")).first()["g"]  # one number
            fill = F.coalesce(agg(known).over(Window.partitionBy("item_id")), F.lit(glob))
        else:  # interpolate
            w = Window.partitionBy("user_id").orderBy("event_time", "source_file", "line_number")
            before = w.rowsBetween(Window.unboundedPreceding, -1)
            after = w.rowsBetween(1, Window.unboundedFollowing)
            pv, pt = F.last(known, True).over(before), F.last(F.when(known.isNotNull(), F.col("event_time")), True).over(before)
            nv, nt = F.first(known, True).over(after), F.first(F.when(known.isNotNull(), F.col("event_time")), True).over(after)
            span = nt.cast("double") - pt.cast("double")
            frac = F.when(span > 0, (F.col("event_time").cast("double") - pt.cast("double")) / span).otherwise(0.0)
            fill = F.coalesce(pv + (nv - pv) * frac, pv, nv)
        if column == "quantity":
            fill = F.round(fill).cast("int")
        df = (df.withColumn("_fill", F.when(applies, fill))
                .withColumn("imputed", F.when(F.col("_fill").isNotNull(), F.array_union("imputed", F.array(F.lit(column))))
                            .otherwise(F.col("imputed")))
                .withColumn(column, F.coalesce(F.col(column), F.col("_fill")).cast(df.schema[column].dataType))
                .drop("_fill"))
    return df


# -- step 4: outliers ------------------------------------------------------------------------------------------------

def robust_bounds(df: DataFrame, column: str, conf: OutlierConf) -> DataFrame:
    """Per category: [median - t*1.4826*MAD, median + t*1.4826*MAD] over accepted rows; small categories get the
    global bounds (category_id null row). Output is bounded by the number of categories."""
    vals = df.where((F.col("disposition") == "accepted") & F.col(column).isNotNull()) \
             .select(F.coalesce("category_id", F.lit("\u0000all")).alias("cat"), F.col(column).cast("double").alias("v"))
    both = vals.unionByName(vals.withColumn("cat", F.lit("\u0000all")))
    med = both.groupBy("cat").agg(F.percentile_approx("v", 0.5).alias("med"), F.count("v").alias("n"))
    mad = both.join(med, "cat").groupBy("cat", "med", "n").agg(F.percentile_approx(F.abs(F.col("v") - F.col("med")), 0.5)
                                                            .alias("mad"))
    # a MAD of 0 (one price in the category) would flag every other value: floor the spread at 1% of the median
    spread = F.greatest(F.col("mad") * 1.4826, F.abs(F.col("med")) * 0.01) * conf.mad_threshold
    return mad.select("cat", "n", (F.col("med") - spread).alias("lo"), (F.col("med") + spread).alias("hi"))


def flag_outliers(df: DataFrame, conf: OutlierConf, basis: DataFrame | None = None,
                  staging: str | None = None) -> DataFrame:
    """``price_outlier`` / ``quantity_outlier``; with action cap the value is clipped, with quarantine the row goes.

    Bounds come from ``basis`` (default ``df``): pass the staged frame so the statistics do not recompute the parse.
    With ``staging`` (a folder) each column's bounds are computed once and staged there (one row per category), so
    the returned plan can run several times -- counts, then each output table -- with the same bounds and without
    recomputing the percentiles.
    """
    out = df
    for column in ("price", "quantity"):
        b = robust_bounds(basis if basis is not None else df, column, conf)
        if staging is not None:
            b = stage(b, f"{staging}/{column}")
        g = b.where(F.col("cat") == "\u0000all").first()  # one row (or none when nothing has a value)
        per_cat = b.where((F.col("cat") != "\u0000all") & (F.col("n") >= conf.min_category_events))
        out = (out.withColumn("_cat", F.coalesce("category_id", F.lit("\u0000all")))
                  .join(F.broadcast(per_cat.select("cat", "lo", "hi")), F.col("_cat") == F.col("cat"), "left")
                  .withColumn("lo", F.coalesce("lo", F.lit(g["lo"] if g else None).cast("double")))
                  .withColumn("hi", F.coalesce("hi", F.lit(g["hi"] if g else None).cast("double"))))
        flag = f"{column}_outlier"
        is_out = (F.col("disposition") == "accepted") & F.col(column).isNotNull() & \
                 ((F.col(column) < F.col("lo")) | (F.col(column) > F.col("hi")))
        out = out.withColumn(flag, F.coalesce(is_out, F.lit(False)))
        if conf.action == "cap":
            capped = F.least(F.greatest(F.col(column), F.col("lo")), F.col("hi"))
            if column == "quantity":
                capped = F.greatest(F.round(capped), F.lit(1))
            out = out.withColumn(column, F.when(F.col(flag), capped).otherwise(F.col(column)).cast(df.schema[column].dataType))
        elif conf.action == "quarantine":
            out = (out.withColumn("reason", F.when(F.col(flag), F.lit(f"outlier_{column}")).otherwise(F.col("reason")))
                      .withColumn("detail", F.when(F.col(flag), F.format_string(
                          f"{column} %s outside [%.4g, %.4g] for category %s", F.col(column).cast("string"),
                          F.col("lo"), F.col("hi"), F.coalesce("category_id", F.lit("<none>")))).otherwise(F.col("detail")))
                      .withColumn("disposition", F.when(F.col(flag), "quarantine").otherwise(F.col("disposition"))))
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
    ev = df.where((F.col("disposition") == "accepted") & ~F.col("event_type").isin("purchase", "review")) \
           .select("user_id", "event_time")
    gap = F.col("event_time").cast("double") \
        - F.lag("event_time").over(Window.partitionBy("user_id").orderBy("event_time")).cast("double")
    sums = ("n", "s", "ss")
    per_minute = ev.withColumn("gap", gap) \
        .groupBy("user_id", F.date_trunc("minute", "event_time").alias("m")) \
        .agg(F.count(F.lit(1)).alias("c"), F.count("gap").alias("n"), F.sum("gap").alias("s"),
             F.sum(F.col("gap") * F.col("gap")).alias("ss"))
    per_day = per_minute.groupBy("user_id", F.to_date("m").alias("d")) \
        .agg(F.sum("c").alias("c"), F.max("c").alias("peak_minute"), *[F.sum(x).alias(x) for x in sums])
    per_user = per_day.groupBy("user_id") \
        .agg(F.max("peak_minute").alias("peak_minute"), F.max("c").alias("peak_day"), *[F.sum(x).alias(x) for x in sums])
    mean = F.col("s") / F.col("n")
    stats = per_user.select("user_id", "peak_minute", "peak_day", F.col("n").alias("n_gaps"), mean.alias("mean_gap"),
                            F.sqrt(F.greatest(F.col("ss") / F.col("n") - mean * mean, F.lit(0.0))).alias("sd_gap"))
    reasons = F.concat_ws(
        "; ",
        F.when(F.col("peak_minute") > conf.max_events_per_minute, F.format_string("%d events in one minute", "peak_minute")),
        F.when(F.col("peak_day") > conf.max_events_per_day, F.format_string("%d events in one day", "peak_day")),
        F.when((F.col("n_gaps") + 1 >= conf.min_events_for_regularity) & (F.col("mean_gap") > 0)
               & (F.col("sd_gap") / F.col("mean_gap") < conf.max_gap_cv),
               F.format_string("machine-regular gaps (mean %.1fs, cv %.3f)", "mean_gap",
                               F.col("sd_gap") / F.col("mean_gap"))),
    )
    return stats.select("user_id", reasons.alias("bot_reason")).where(F.col("bot_reason") != "")


def flag_bots(df: DataFrame, conf: BotConf, basis: DataFrame | None = None, staging: str | None = None) -> DataFrame:
    """``is_bot`` / ``bot_reason`` from :func:`bot_users` of ``basis`` (default ``df``).

    With ``staging`` the bot users are staged first: the planner then knows the (small) table's size from its files
    and broadcasts it, so the wide rows are not shuffled by user for the join. A large bot table still joins."""
    bots = bot_users(basis if basis is not None else df, conf)
    if staging is not None:
        bots = stage(bots, staging)
    return df.join(bots, "user_id", "left") \
             .withColumn("is_bot", F.col("bot_reason").isNotNull())


# -- the whole clean -------------------------------------------------------------------------------------------------

def classify(bronze: DataFrame, settings, existing: DataFrame | None = None, staging: str | None = None,
             privacy: Privacy | None = None) -> DataFrame:
    """All bronze rows -> one row each with a disposition; the accepted ones carry every silver column.

    The raw line is not carried along (it would ride through every shuffle below): :func:`quarantine_rows` joins it
    back from bronze for the rejected rows only.

    With ``staging`` (a folder), each step runs at once, logged and timed, and its result is written there as
    Parquet and read back: after the parse (so the parse runs once however many branches use it) and after the
    duplicate marks (every statistic below -- global fill values, category bounds, bot users -- is a small aggregate
    of that frame). Staged Parquet is read a batch at a time, so the memory a task needs does not grow with the
    input, which an in-memory cache's blocks do. The duplicates' positions, the outlier bounds and the bot users
    are staged too: small tables whose file sizes let the planner broadcast them instead of shuffling the wide rows.
    The returned frame is the marked rows plus row-wise steps and broadcast joins against those small tables, so
    the counts, silver and the quarantine each read the marked rows again (only the columns each needs) instead of
    a fourth wide copy being written and read back: at 10M events that copy cost about half a minute.
    """
    conf: CleanConf = settings.clean
    privacy = privacy or Privacy.from_settings(settings)
    formats = [r[0] for r in bronze.select("source_format").distinct().collect()]  # bounded: a few formats
    parts = [parse_and_validate(bronze.where(F.col("source_format") == f), get_format(f), settings.source(f), conf,
                                privacy).drop("raw_line")
             for f in sorted(formats)]
    if not parts:
        raise ValueError("nothing to clean")
    typed = reduce(DataFrame.unionByName, parts)
    with _step("parse and validate", staging):
        if staging is not None:
            typed = stage(typed, f"{staging}/typed")
    with _step("mark exact and near duplicates", staging):
        marked = mark_duplicates(typed, conf.dedupe.near_window_seconds, conf.dedupe.near_types,
                                 None if staging is None else f"{staging}/duplicates")
        if existing is not None:
            marked = mark_seen(marked, existing, basis=typed.where(F.col("reason").isNull()),
                               staging=None if staging is None else f"{staging}/seen")
        if staging is not None:
            marked = stage(marked, f"{staging}/marked")
    with _step("outlier bounds and bot users", staging):
        filled = impute_missing(marked, conf.missing)
        flagged = flag_outliers(filled, conf.outliers, basis=marked,
                                staging=None if staging is None else f"{staging}/bounds")
        classified = flag_bots(flagged, conf.bots, basis=marked,
                               staging=None if staging is None else f"{staging}/bots")
    return classified


@contextmanager
def _step(what: str, staging: str | None) -> Iterator[None]:
    """A logged, timed step when the work is staged (then it runs here); nothing to log for a lazy plan."""
    if staging is None:
        yield
        return
    with step(log, what):
        yield


def stage(df: DataFrame, path: str) -> DataFrame:
    """Write ``df`` to ``path`` as Parquet (replacing what a crashed run left) and return a scan of it."""
    df.write.mode("overwrite").parquet(path)
    return df.sparkSession.read.parquet(path)


def count_dispositions(classified: DataFrame) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """Per batch and disposition counts, and per reason counts (both bounded)."""
    rows = classified.groupBy("ingest_batch_id", "disposition", "reason").count().collect()
    per_batch: dict[str, dict[str, int]] = {}
    reasons: dict[str, int] = {}
    for r in rows:
        d = per_batch.setdefault(r["ingest_batch_id"], dict.fromkeys(DISPOSITIONS, 0))
        d[r["disposition"]] += r["count"]
        if r["reason"]:
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + r["count"]
    return per_batch, reasons


def silver_rows(classified: DataFrame) -> DataFrame:
    return classified.where(F.col("disposition") == "accepted")


def quarantine_rows(classified: DataFrame, privacy: Privacy | None = None, bronze: DataFrame | None = None) -> DataFrame:
    """Rejected rows, the raw line verbatim (sealed with AES-GCM when ``privacy.seal_quarantine``).

    ``classified`` may carry ``raw_line``; otherwise it is joined back from ``bronze`` by batch, file and line.
    """
    rejected = classified.where(F.col("disposition") == "quarantine")
    if "raw_line" not in classified.columns:
        if bronze is None:
            raise ValueError("quarantine_rows needs bronze when the classified rows carry no raw_line")
        keys = ["ingest_batch_id", "source_file", "line_number"]
        rejected = rejected.join(bronze.select(*keys, "raw_line"), keys, "left")
    # invalid bytes become U+FFFD: Arrow-based readers (delta-rs, polars, DuckDB) refuse invalid UTF-8
    raw = F.make_valid_utf8("raw_line")
    if privacy is not None and privacy.seal_quarantine:
        raw = privacy.seal(raw)
    return rejected.select(
        raw.alias("raw_record"), F.col("source").alias("source_format"), "source_file", "line_number",
        "ingest_batch_id", "reason", "detail")


@dataclass(frozen=True)
class CleanReport:
    batches: list[str]
    per_batch: dict[str, dict[str, int]]
    reasons: dict[str, int]

    @property
    def totals(self) -> dict[str, int]:
        out = dict.fromkeys(("rows_in",) + DISPOSITIONS, 0)
        for d in self.per_batch.values():
            for k, v in d.items():
                out[k] = out.get(k, 0) + v
        return out


class ReconciliationError(RuntimeError):
    pass


def run_clean(lake, settings, run_id: str, reprocess: bool = False) -> CleanReport:
    """Clean the bronze batches not cleaned yet (all with ``reprocess``), replacing their rows in every output.

    Idempotent: outputs are replaced per batch (``replaceWhere``) and the batch is marked done in
    ``ops.clean_batches`` last, so a crash anywhere leaves the batch pending and the rerun converges.
    """
    from shopmine.io.tables import BRONZE_EVENTS_RAW, OPS_CLEAN_BATCHES, SILVER_EVENTS, SILVER_QUARANTINE

    spark = lake.spark
    privacy = Privacy.from_settings(settings)
    check_key(lake, privacy, reprocess)
    bronze = lake.read(BRONZE_EVENTS_RAW.name)
    rows_in = {r[0]: r[1] for r in bronze.groupBy("ingest_batch_id").count().collect()}  # one row per batch
    done: set[str] = set()
    if not reprocess and lake.exists(OPS_CLEAN_BATCHES.name):
        done = {r[0] for r in lake.read(OPS_CLEAN_BATCHES.name).select("ingest_batch_id").distinct().collect()}
    todo = sorted(set(rows_in) - done)
    if not todo:
        return CleanReport([], {}, {})
    in_todo = F.col("ingest_batch_id").isin(todo)
    existing = lake.read(SILVER_EVENTS.name).where(~in_todo) if lake.exists(SILVER_EVENTS.name) else None
    staging = f"{lake.root}/_staging/clean-{run_id}"
    todo_rows = bronze.where(in_todo)
    with step(log, f"parse, validate, dedupe and flag {len(todo)} batch(es)") as info:
        classified = classify(todo_rows, settings, existing, staging, privacy)
        per_batch, reasons = count_dispositions(classified)
        info["rows"] = sum(sum(d.values()) for d in per_batch.values())
    for b in todo:
        per_batch.setdefault(b, dict.fromkeys(DISPOSITIONS, 0))["rows_in"] = rows_in[b]
    predicate = "ingest_batch_id IN (" + ", ".join(f"'{b}'" for b in todo) + ")"

    with step(log, f"write {SILVER_EVENTS.name}") as info:
        metrics = lake.replace_where(silver_rows(classified), SILVER_EVENTS.name, predicate)
        silver_written = info["rows"] = metrics.get("numOutputRows", 0)
    with step(log, f"write {SILVER_QUARANTINE.name}") as info:
        metrics = lake.replace_where(quarantine_rows(classified, privacy, todo_rows), SILVER_QUARANTINE.name, predicate)
        quarantine_written = info["rows"] = metrics.get("numOutputRows", 0)
    report = CleanReport(todo, per_batch, reasons)
    t = report.totals
    problems = []
    if sum(t[d] for d in DISPOSITIONS) != t["rows_in"]:
        problems.append(f"dispositions add up to {sum(t[d] for d in DISPOSITIONS):,}, bronze has {t['rows_in']:,}")
    if silver_written != t["accepted"]:
        problems.append(f"silver got {silver_written:,} rows, {t['accepted']:,} were accepted")
    if quarantine_written != t["quarantine"]:
        problems.append(f"quarantine got {quarantine_written:,} rows, {t['quarantine']:,} were rejected")
    if problems:
        raise ReconciliationError("counts do not reconcile: " + "; ".join(problems))
    rec = spark.createDataFrame(
        [(b, run_id, d["rows_in"], d["accepted"], d["quarantine"], d["duplicate_exact"], d["duplicate_near"])
         for b, d in per_batch.items()], OPS_CLEAN_BATCHES.schema)
    lake.replace_where(rec, OPS_CLEAN_BATCHES.name, predicate)
    lake.remove_folder(staging)
    lake.set_properties(SILVER_EVENTS.name, {KEY_PROPERTY: privacy.fingerprint or "none"})
    return report


KEY_PROPERTY = "shopmine.pseudonymKey"


def check_key(lake, privacy: Privacy, reprocess: bool) -> None:
    """Refuse to add batches pseudonymised with another key (or not at all) to a silver table: the ids would no
    longer join. ``--all`` re-cleans every batch, so it may change the key (and must be followed by the later jobs)."""
    from shopmine.io.tables import SILVER_EVENTS

    if reprocess or not lake.exists(SILVER_EVENTS.name):
        return
    stored = lake.properties(SILVER_EVENTS.name).get(KEY_PROPERTY)
    want = privacy.fingerprint or "none"
    if stored is not None and stored != want:
        settings_env = "the pseudonym key variable (conf privacy.pseudonym_key_env)"
        if stored == "none":
            msg = f"silver.events holds raw user ids, but {settings_env} is now set"
        elif want == "none":
            msg = f"silver.events is pseudonymised (key fingerprint {stored}), but {settings_env} is not set"
        else:
            msg = f"silver.events is pseudonymised with another key (fingerprint {stored}, this key {want})"
        from shopmine.privacy import PrivacyError

        raise PrivacyError(msg + ": mixing would break every join on user_id. Use the lake's key, or re-clean "
                           "everything with `clean --all` and rerun the later jobs")


__all__ = ["REASONS", "EVENT_TYPES", "classify", "count_dispositions", "silver_rows", "quarantine_rows", "stage",
           "run_clean", "CleanReport"]
