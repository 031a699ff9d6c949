"""Source formats: one small adapter per publisher's documented layout, mapping a raw line to canonical fields.

An adapter only *names* things (delimiter, header, which raw column feeds which canonical field, event-type
vocabulary, id and time kinds); ``shopmine.etl.clean`` does the typing and validation for all of them alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, StringType, StructField, StructType

from shopmine.vocab import EVENT_TYPES

# The canonical raw layout (CSV header, JSON keys, Parquet columns) of our own exports.
CANONICAL_COLUMNS = ("event_id", "event_time", "user_id", "session_id", "event_type", "item_id", "category_id",
                     "brand", "price", "quantity", "search_query", "rating")

# Optional personal data a canonical export may carry after those columns; clean drops or seals them (conf privacy.pii).
PII_COLUMNS = ("email", "phone", "ip")

# Canonical fields every adapter may fill (all strings at this stage).
FIELDS = ("event_id", "user_id", "session_id", "item_id", "category_id", "brand", "price", "quantity", "event_type",
          "search_query", "rating", "event_time", "invoice") + PII_COLUMNS


@dataclass(frozen=True)
class SourceFormat:
    name: str
    description: str
    columns: tuple[str, ...]                 # raw columns in the published order
    fields: dict[str, str]                   # canonical field -> raw column
    event_types: dict[str, str]              # raw event type (lower-case) -> canonical event type
    delimiter: str = ","
    has_header: bool = False
    optional_trailing: tuple[str, ...] = ()  # extra columns some published copies carry after `columns`
    constant_event_type: str | None = None   # for sources where every row is one type (ratings, invoices)
    user_id_kind: str = "integer"            # integer | code
    item_id_kind: str = "integer"
    category_id_kind: str | None = None      # integer | code; None: kept as it is, unchecked (the built-ins)
    time_kind: str = "auto"                  # auto | epoch_s | epoch_ms | epoch_us | text
    time_format: str | None = None           # a Spark datetime pattern for text times (naive: the source's timezone)
    json_lines: bool = False                 # every file is JSON lines (canonical: decided per file by extension)
    records: str | None = None               # nested JSON: the key of each line's array of records (events)
    record_columns: tuple[str, ...] = ()     # nested JSON: the keys of a record (``columns`` are the line's own)

    @property
    def nested(self) -> bool:
        """Each line holds several events (JSON lines with an array of records)."""
        return self.records is not None

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(len(self.columns) + k for k in range(len(self.optional_trailing) + 1))

    def header_line(self) -> str:
        return self.delimiter.join(self.columns)


_CANONICAL_TYPES = {t: t for t in EVENT_TYPES}

FORMATS: dict[str, SourceFormat] = {f.name: f for f in (
    SourceFormat(
        name="canonical",
        description="Shopmine's own export: CSV with header, JSON lines, or Parquet, columns " + ", ".join(CANONICAL_COLUMNS),
        columns=CANONICAL_COLUMNS, has_header=True, optional_trailing=PII_COLUMNS,
        fields={c: c for c in CANONICAL_COLUMNS + PII_COLUMNS},
        event_types={**_CANONICAL_TYPES, "favorite": "favourite", "add_to_cart": "cart"},
        user_id_kind="code", item_id_kind="code",
    ),
    SourceFormat(
        name="taobao",
        description="Taobao UserBehavior (Tianchi 649): no header; user_id,item_id,category_id,behavior_type,timestamp (Unix s)",
        columns=("user_id", "item_id", "category_id", "behavior_type", "timestamp"),
        fields={"user_id": "user_id", "item_id": "item_id", "category_id": "category_id",
                "event_type": "behavior_type", "event_time": "timestamp"},
        event_types={"pv": "view", "fav": "favourite", "cart": "cart", "buy": "purchase"},
        time_kind="epoch_s",
    ),
    SourceFormat(
        name="retailrocket",
        description="RetailRocket events.csv: header timestamp,visitorid,event,itemid,transactionid (timestamp in Unix ms)",
        columns=("timestamp", "visitorid", "event", "itemid", "transactionid"), has_header=True,
        fields={"event_time": "timestamp", "user_id": "visitorid", "event_type": "event", "item_id": "itemid",
                "invoice": "transactionid"},
        event_types={"view": "view", "addtocart": "cart", "transaction": "purchase"},
        time_kind="epoch_ms",
    ),
    SourceFormat(
        name="rees46",
        description="REES46 multi-category store: header event_time,event_type,product_id,category_id,category_code,"
                    "brand,price,user_id,user_session ('2019-10-01 00:00:00 UTC')",
        columns=("event_time", "event_type", "product_id", "category_id", "category_code", "brand", "price", "user_id",
                 "user_session"), has_header=True,
        fields={"event_time": "event_time", "event_type": "event_type", "item_id": "product_id",
                "category_id": "category_id", "brand": "brand", "price": "price", "user_id": "user_id",
                "session_id": "user_session"},
        event_types={"view": "view", "cart": "cart", "remove_from_cart": "remove_from_cart", "purchase": "purchase"},
        time_kind="text",
    ),
    SourceFormat(
        name="online_retail",
        description="UCI Online Retail (id 352): header InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,"
                    "CustomerID,Country (extra Revenue,Month columns of derived copies accepted); each line a purchase",
        columns=("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID",
                 "Country"), optional_trailing=("Revenue", "Month"), has_header=True,
        fields={"invoice": "InvoiceNo", "session_id": "InvoiceNo", "item_id": "StockCode", "quantity": "Quantity",
                "event_time": "InvoiceDate", "price": "UnitPrice", "user_id": "CustomerID"},
        event_types={}, constant_event_type="purchase", item_id_kind="code", time_kind="text",
    ),
    SourceFormat(
        name="jdata",
        description="JData 2017 actions: header user_id,sku_id,time,model_id,type,cate,brand; type 1 browse, 2 cart, "
                    "3 remove from cart, 4 order, 5 follow, 6 click; time in China local time",
        columns=("user_id", "sku_id", "time", "model_id", "type", "cate", "brand"), has_header=True,
        fields={"user_id": "user_id", "item_id": "sku_id", "event_time": "time", "event_type": "type",
                "category_id": "cate", "brand": "brand"},
        event_types={"1": "view", "2": "cart", "3": "remove_from_cart", "4": "purchase", "5": "favourite", "6": "view"},
        time_kind="text",
    ),
    SourceFormat(
        name="movielens",
        description="MovieLens u.data: tab-separated, no header: user_id, item_id, rating, timestamp (Unix s); "
                    "each rating becomes a review event",
        columns=("user_id", "item_id", "rating", "timestamp"), delimiter="\t",
        fields={"user_id": "user_id", "item_id": "item_id", "rating": "rating", "event_time": "timestamp"},
        event_types={}, constant_event_type="review", time_kind="epoch_s",
    ),
    SourceFormat(
        name="otto",
        description="OTTO session data set (Kaggle, 2022): JSON lines, one session per line "
                    '{"session": <int>, "events": [{"aid": <int>, "ts": <Unix ms>, "type": "clicks", "carts" or '
                    '"orders"}]}; sessions are anonymous: the session is the user',
        columns=("session", "events"), records="events", record_columns=("aid", "ts", "type"), json_lines=True,
        fields={"user_id": "session", "session_id": "session", "item_id": "aid", "event_time": "ts",
                "event_type": "type"},
        event_types={"clicks": "view", "carts": "cart", "orders": "purchase"},
        time_kind="epoch_ms",
    ),
)}


TIME_KINDS = ("auto", "epoch_s", "epoch_ms", "epoch_us", "text")
ID_KINDS = ("integer", "code")
REQUIRED_FIELDS = ("user_id", "item_id", "event_time")


class DeclarationError(ValueError):
    """A mistake in a declared source: ``key`` is the dotted configuration key it is about."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key, self.message = key, message


def declare(name: str, d) -> SourceFormat:
    """The :class:`SourceFormat` a ``sources.<name>`` declaration (a ``SourceConf`` with ``columns``) describes,
    checked: every mistake raises :class:`DeclarationError` naming its key. (A built-in name is refused before,
    by ``conf.check_sources``.)"""
    key = f"sources.{name}"
    columns = tuple(d.columns or ())
    if not columns or len(set(columns)) != len(columns):
        raise DeclarationError(f"{key}.columns", "must list the raw columns in file order, each name once")
    if len(d.delimiter) != 1 or d.delimiter in '"\r\n':
        raise DeclarationError(f"{key}.delimiter", f"{d.delimiter!r} must be one character other than a double "
                                                   "quote or a line break")
    record_columns = tuple(d.record_columns)
    json_lines = d.json_lines or d.records is not None
    if d.records is not None and d.records not in columns:
        raise DeclarationError(f"{key}.records", f"{d.records!r} must be one of {key}.columns (the key of the "
                                                 "line's array of records)")
    if d.records is not None and not record_columns:
        raise DeclarationError(f"{key}.record_columns", "must list the keys of a record (records is set)")
    if record_columns and d.records is None:
        raise DeclarationError(f"{key}.record_columns", "applies to nested JSON only: set records")
    if len(set(record_columns)) != len(record_columns) or set(record_columns) & set(columns):
        raise DeclarationError(f"{key}.record_columns", "each key once, and none of them also in columns")
    if json_lines and d.has_header:
        raise DeclarationError(f"{key}.has_header", "applies to delimited files only, not JSON lines")
    raw = set(columns) | set(d.optional_trailing) | set(record_columns)
    for fld, col in (d.fields or {}).items():
        if fld not in FIELDS:
            raise DeclarationError(f"{key}.fields.{fld}", f"{fld!r} is not a canonical field; known: {', '.join(FIELDS)}")
        if col not in raw or col == d.records:
            where = f"{key}.columns" + (f" or {key}.record_columns" if record_columns else "")
            raise DeclarationError(f"{key}.fields.{fld}", f"maps to column {col!r}, which is not in {where}"
                                   + (" (it is the array of records)" if col == d.records else ""))
    needed = REQUIRED_FIELDS + (() if d.constant_event_type else ("event_type",))
    missing = [f for f in needed if f not in (d.fields or {})]
    if missing:
        raise DeclarationError(f"{key}.fields", f"needs a column for {', '.join(missing)} (canonical field -> raw "
                                                "column; event_type may be constant_event_type instead)")
    for raw_type, canonical in (d.event_types or {}).items():
        if canonical not in EVENT_TYPES:
            raise DeclarationError(f"{key}.event_types.{raw_type}",
                                   f"{canonical!r} is not an event type; known: {', '.join(EVENT_TYPES)}")
    if d.constant_event_type is not None and d.constant_event_type not in EVENT_TYPES:
        raise DeclarationError(f"{key}.constant_event_type", f"{d.constant_event_type!r} is not an event type; "
                                                             f"known: {', '.join(EVENT_TYPES)}")
    if d.time_format is not None and d.time_kind != "text":
        raise DeclarationError(f"{key}.time_format", "applies to text times only: set time_kind: text")
    return SourceFormat(
        name=name, description=d.description or f"declared in configuration (sources.{name})", columns=columns,
        fields=dict(d.fields), event_types={k.lower(): v for k, v in (d.event_types or {}).items()},
        delimiter=d.delimiter, has_header=d.has_header, optional_trailing=tuple(d.optional_trailing),
        constant_event_type=d.constant_event_type, user_id_kind=d.user_id_kind, item_id_kind=d.item_id_kind,
        category_id_kind=d.category_id_kind, time_kind=d.time_kind, time_format=d.time_format,
        json_lines=json_lines, records=d.records, record_columns=record_columns)


def get_format(name: str, settings=None) -> SourceFormat:
    """A built-in format, or one declared in ``settings.sources`` (an entry with ``columns``)."""
    if name in FORMATS:
        return FORMATS[name]
    sources = settings.sources if settings is not None else {}
    if name in sources and sources[name].columns is not None:
        return declare(name, sources[name])
    declared = [n for n, d in sources.items() if n not in FORMATS and d.columns is not None]
    raise ValueError(f"unknown format {name!r}; known: {', '.join([*FORMATS, *declared])}")


JSON_FILE = re.compile(r"\.(json|jsonl|ndjson)(\.gz)?$", re.IGNORECASE)
PARQUET_FILE = re.compile(r"\.parquet$", re.IGNORECASE)


def file_kind(fmt: SourceFormat, path: str) -> str:
    """How a file of this format is read: 'text' (delimited lines), 'json' (JSON lines) or 'parquet'."""
    if fmt.json_lines:
        return "json"
    if fmt.name == "canonical":
        if PARQUET_FILE.search(path):
            return "parquet"
        if JSON_FILE.search(path):
            return "json"
    return "text"


def json_records(fmt: SourceFormat, source_file: Column) -> Column:
    """The Column twin of :func:`file_kind`: whether a file's lines are JSON records (JSON lines, or Parquet rows
    kept as JSON) rather than delimited text."""
    if fmt.json_lines:
        return F.lit(True)
    if fmt.name != "canonical":
        return F.lit(False)
    return source_file.rlike("(?i)" + JSON_FILE.pattern) | source_file.rlike("(?i)" + PARQUET_FILE.pattern)


# -- parsing a bronze frame of one format into string fields ---------------------------------------------------

def _unquoted(line: Column) -> Column:
    """The line with quoted sections removed (RFC 4180: a quote inside quotes is doubled)."""
    return F.regexp_replace(line, r'"([^"]|"")*"', "")


def _occurrences(line: Column, text: str) -> Column:
    """How often ``text`` occurs in the line, without a regex or a split."""
    return ((F.length(line) - F.length(F.replace(line, F.lit(text), F.lit("")))) / len(text)).cast("int")


def field_count(line: Column, delimiter: str) -> Column:
    """Fields of a delimited line; quoted delimiters do not count. A line without a quote (nearly all) has one
    field more than it has delimiters."""
    return F.when(line.contains('"'), F.size(F.split(_unquoted(line), re.escape(delimiter), -1))) \
            .otherwise(_occurrences(line, delimiter) + 1)


def quotes_balanced(line: Column) -> Column:
    """An even number of double quotes (every quoted field closed); nothing to count in a line without any."""
    return ~line.contains('"') | (_occurrences(line, '"') % 2 == 0)


_PERMISSIVE = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt"}


def _from_json(text: Column, keys: tuple[str, ...], array_key: str | None = None) -> Column:
    """A JSON object's ``keys`` as strings (an object or number as its text; ``array_key`` as an array of each
    element's JSON text), plus ``_corrupt``: Spark's permissive from_json returns a struct of nulls for broken JSON,
    not null, and the corrupt-record column is what tells a malformed object from an empty one."""
    fields = [StructField(k, ArrayType(StringType()) if k == array_key else StringType()) for k in keys]
    return F.from_json(text, StructType(fields + [StructField("_corrupt", StringType())]), _PERMISSIVE)


def _parsed_line(fmt: SourceFormat, line: Column) -> Column:
    """A JSON line of this format: its keys, a nested format's records as an array of JSON texts."""
    return _from_json(line, fmt.columns + fmt.optional_trailing, fmt.records)


def rows_per_line(fmt: SourceFormat, line: Column) -> Column:
    """How many rows :func:`parse_fields` makes of a line: its records for a nested format (one row when it has
    none or is broken), else 1. Clean reconciles the rows it classified against the sum of this over bronze."""
    if not fmt.nested:
        return F.lit(1)
    parsed = _parsed_line(fmt, line)
    n = F.when(parsed.isNotNull() & parsed["_corrupt"].isNull(), F.size(parsed[fmt.records]))
    return F.greatest(F.lit(1), F.coalesce(n, F.lit(0)))


def record_text(fmt: SourceFormat, line: Column, record_number: Column) -> Column:
    """The JSON text of record ``record_number`` (1-based) of a nested format's line; null for other formats."""
    if not fmt.nested:
        return F.lit(None).cast("string")
    return F.get(_parsed_line(fmt, line)[fmt.records], record_number - 1)


def parse_fields(df: DataFrame, fmt: SourceFormat) -> DataFrame:
    """Bronze rows of one format -> the same rows plus one string column per canonical field and shape checks.

    Adds ``f_<field>`` string columns (trimmed, empty -> null), ``is_json``, ``record_number`` and the shape flags
    ``shape_ok``, ``quotes_ok``, ``json_ok``, ``no_records``, ``n_fields``, ``is_header``, ``all_empty``,
    ``bad_utf8``. A nested format (``records``) gives one row per record of a line, numbered from 1 in
    ``record_number`` (null for the other formats, and for a line that is broken or has no records: one row).
    """
    line = F.col("raw_line")
    is_json = json_records(fmt, F.col("source_file"))
    ncols = len(fmt.columns) + len(fmt.optional_trailing)
    csv_schema = StructType([StructField(f"c{i}", StringType()) for i in range(ncols)])
    csv_opts = {"sep": fmt.delimiter, "quote": '"', "escape": '"', "mode": "PERMISSIVE"}
    parsed_csv = F.from_csv(line, csv_schema.simpleString(), csv_opts)
    parsed_json = _parsed_line(fmt, line)

    # A delimited line without quotes (nearly all of them) is split on the delimiter, which is many times cheaper
    # than the CSV parser and gives the same fields; only lines with a quote go through from_csv.
    is_text = ~F.col("is_json")
    quoted = line.contains('"')
    out = df.select("*", is_json.alias("is_json")).select(
        "*", F.when(is_text & quoted, parsed_csv).alias("_csv"),
        F.when(is_text & ~quoted, F.split(line, re.escape(fmt.delimiter), -1)).alias("_split"),
        F.when(F.col("is_json"), parsed_json).alias("_json"))
    line_ok = F.col("_json").isNotNull() & F.col("_json._corrupt").isNull()  # false for delimited lines
    if fmt.nested:
        # one row per record (posexplode_outer keeps a line without records as one row, position null)
        records = F.when(line_ok, F.col("_json")[fmt.records])
        out = out.select("*", F.posexplode_outer(records).alias("_ri", "_record")) \
                 .select("*", (F.col("_ri") + 1).alias("record_number"),
                         _from_json(F.col("_record"), fmt.record_columns).alias("_rec")).drop("_ri")
        json_ok = line_ok & (F.col("record_number").isNull()
                             | (F.col("_rec").isNotNull() & F.col("_rec._corrupt").isNull()))
        no_records = line_ok & F.col("record_number").isNull()
    else:
        out = out.select("*", F.lit(None).cast("int").alias("record_number"))
        json_ok, no_records = line_ok, F.lit(False)
    index = {c: i for i, c in enumerate(fmt.columns + fmt.optional_trailing)}
    picked = []
    for fld in FIELDS:
        raw_col = fmt.fields.get(fld)
        if fld == "event_type" and fmt.constant_event_type:
            picked.append(F.lit(fmt.constant_event_type).alias(f"f_{fld}"))
            continue
        if raw_col is None:
            picked.append(F.lit(None).cast("string").alias(f"f_{fld}"))
            continue
        if raw_col in fmt.record_columns:
            value = F.trim(F.col("_rec")[raw_col])
        else:
            value = F.trim(F.when(F.col("is_json"), F.col("_json")[raw_col])
                           .when(F.col("_split").isNotNull(), F.get(F.col("_split"), index[raw_col]))
                           .otherwise(F.col("_csv")[f"c{index[raw_col]}"]))
        picked.append(F.when(value != "", value).alias(f"f_{fld}"))
    out = out.select("*", *picked, (~F.col("is_json") | json_ok).alias("json_ok"), no_records.alias("no_records"))

    n_fields = F.when(F.col("_split").isNotNull(), F.size("_split")).otherwise(field_count(line, fmt.delimiter))
    delim_class = re.escape(fmt.delimiter) if fmt.delimiter != "\t" else r"\t"
    all_empty_text = line.rlike(rf'^[\s"{delim_class}]*$')
    present = [F.col(f"f_{fld}") for fld in FIELDS if fmt.fields.get(fld)]
    all_empty_json = (F.coalesce(*present).isNull() if present else F.lit(True)) & F.col("_json._corrupt").isNull()
    header_text = F.lower(F.regexp_replace(line, '[ "]', ""))
    expected_header = fmt.header_line().lower().replace(" ", "")
    shaped = out.select("*", F.when(~F.col("is_json"), n_fields).alias("n_fields"))
    return shaped.select(
        "*",
        (~F.is_valid_utf8(line) | line.contains("\ufffd")).alias("bad_utf8"),
        (F.col("is_json") | quotes_balanced(line)).alias("quotes_ok"),
        (F.col("is_json") | F.col("n_fields").isin(*fmt.widths)).alias("shape_ok"),
        # removing spaces and quotes only shortens a line: shorter lines cannot be the header, and skip the regex
        (F.lit(fmt.has_header) & ~F.col("is_json")
         & F.when(F.length(line) >= len(expected_header),
                  (header_text == expected_header) | header_text.startswith(expected_header + fmt.delimiter))
            .otherwise(False)).alias("is_header"),
        F.when(F.col("is_json"), all_empty_json).otherwise(all_empty_text).alias("all_empty"),
    ).drop("_csv", "_split", "_json", *(("_record", "_rec") if fmt.nested else ()))
