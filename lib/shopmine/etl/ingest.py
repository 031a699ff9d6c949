"""Raw files -> ``bronze.events_raw``: every data line kept verbatim with its file, line number and batch.

Line numbers are exact without a shuffle: Spark reads a file split sequentially inside one task, so a row's index
within its split is ``monotonically_increasing_id() - min(id of that split)``; a small per-split count table
(bounded by the number of splits, not rows) gives each split's first line number.

Whole-file problems (missing, empty, not gzip, binary, wrong format for the adapter, missing required columns) stop
the job before anything is written, with one message naming the file.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType

from shopmine.io.fs import hadoop_path, head_bytes
from shopmine.io.sources import SourceFormat, field_count, file_kind
from shopmine.jobrun import ShopmineError
from shopmine.logs import step

log = logging.getLogger(__name__)

GZIP_MAGIC = (0x1F, 0x8B)


@dataclass(frozen=True)
class InputFile:
    path: str
    size: int


def list_input_files(spark: SparkSession, paths: list[str]) -> list[InputFile]:
    """Expand files, directories (recursively) and globs through Hadoop's FileSystem (local, s3a, abfss, dbfs)."""
    found: list[InputFile] = []
    for raw in paths:
        path, fs = hadoop_path(spark, raw)
        statuses = fs.globStatus(path)
        if statuses is None or len(statuses) == 0:
            raise ShopmineError(f"input {raw}: no such file or directory")
        stack = list(statuses)
        while stack:
            st = stack.pop()
            name = st.getPath().getName()
            if name.startswith((".", "_")):
                continue  # Spark/Hadoop side files (_SUCCESS, .crc)
            if st.isDirectory():
                stack.extend(fs.listStatus(st.getPath()))
            else:
                found.append(InputFile(st.getPath().toString(), int(st.getLen())))
    if not found:
        raise ShopmineError(f"input {' '.join(paths)}: no files found")
    for f in found:
        if f.size == 0:
            raise ShopmineError(f"input file {f.path}: the file is empty")
        if f.path.endswith(".gz") and head_bytes(spark, f.path, 2) != GZIP_MAGIC:
            raise ShopmineError(f"input file {f.path}: named .gz but is not gzip data")
    return sorted(found, key=lambda f: f.path)


def read_raw(spark: SparkSession, files: list[InputFile], fmt: SourceFormat) -> DataFrame:
    """Read the files as lines: raw_line, source_file, _json (whether the lines are JSON records), the file's size
    and modification time (``_size``, ``_mtime``), its split start ``_block`` and a per-task increasing ``_rid``.

    Everything that is the same for a whole file (its kind, its fingerprint) is worked out per split by
    :func:`scan_files`, not per line."""
    kinds = {file_kind(fmt, f.path) for f in files}
    frames = []
    for kind in sorted(kinds):
        paths = [f.path for f in files if file_kind(fmt, f.path) == kind]
        if kind == "parquet":
            df = spark.read.parquet(*paths)
            missing = [c for c in fmt.columns if c not in df.columns]
            if missing:
                raise ShopmineError(f"input files {', '.join(paths)}: missing required columns {missing}")
            df = df.select(F.to_json(F.struct(*[F.col(c).cast("string").alias(c) for c in fmt.columns]))
                           .alias("raw_line"), "_metadata")
        else:
            # wholetext off, lineSep default: \n, \r\n and \r all end a line, as the publishers' files need.
            df = spark.read.text(paths).select(F.col("value").alias("raw_line"), "_metadata")
        frames.append(df.withColumn("_json", F.lit(kind != "text")))
    df = frames[0]
    for other in frames[1:]:
        df = df.unionByName(other)
    meta = F.col("_metadata")
    return df.select(
        "raw_line",
        meta.file_path.alias("source_file"),
        "_json",
        meta.file_size.alias("_size"),
        meta.file_modification_time.alias("_mtime"),
        meta.file_block_start.alias("_block"),
        F.monotonically_increasing_id().alias("_rid"),
    )


def fingerprint(source_file: Column, size: Column, mtime: Column) -> Column:
    """Hash of a file's path, size and modification time: the same file is never ingested twice."""
    return F.sha2(F.concat_ws("|", source_file, size.cast("string"), mtime.cast("string")), 256).substr(1, 32)


BLOCK_SCHEMA = StructType([
    StructField("source_file", StringType()), StructField("source_fingerprint", StringType()),
    StructField("_block", LongType()), StructField("_first_line", LongType()), StructField("_min_rid", LongType()),
    StructField("_file_lines", LongType()),
])


@dataclass(frozen=True)
class FileStats:
    source_file: str
    fingerprint: str
    lines: int
    nul_lines: int
    bad_utf8_lines: int
    bad_shape_lines: int
    first_line: str | None


def scan_files(spark: SparkSession, raw: DataFrame, fmt: SourceFormat) -> tuple[list[FileStats], DataFrame]:
    """One pass over the data: per-split counts -> per-file stats (bounded) and the split offsets table."""
    line = F.col("raw_line")
    bad_shape = F.when(F.col("_json"), ~F.ltrim(line).startswith("{")) \
                 .otherwise(~field_count(line, fmt.delimiter).isin(*fmt.widths))
    try:
        blocks = (
            raw.groupBy("source_file", "_size", "_mtime", "_block")
            .agg(F.count(F.lit(1)).alias("n"), F.min("_rid").alias("min_rid"),
                 F.sum(line.contains("\u0000").cast("long")).alias("nul"),
                 F.sum((~F.is_valid_utf8(line) | line.contains("\ufffd")).cast("long")).alias("badutf8"),
                 F.sum(bad_shape.cast("long")).alias("badshape"),
                 F.substring(F.make_valid_utf8(F.min_by(line, F.col("_rid"))), 1, 4096).alias("first"),
                 # min_by keeps a string, which Spark's hash aggregate cannot: it would sort every line by split
                 # for a sort aggregate. One typed aggregate in the list (a list of nothing) makes it use the object
                 # hash aggregate instead, which is hash-based while a task sees fewer than 128 keys: splits, here.
                 F.collect_list(F.lit(None)).alias("_hash_aggregate"))
            .withColumn("source_fingerprint", fingerprint(F.col("source_file"), F.col("_size"), F.col("_mtime")))
            .collect()  # bounded: one row per file split, not per line
        )
    except Exception as exc:  # noqa: BLE001 - an unreadable file: name it, no stack trace
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ShopmineError(f"cannot read the input: {msg[:500]}") from None

    per_file: dict[str, list] = {}
    for b in blocks:
        per_file.setdefault(b["source_fingerprint"], []).append(b)
    stats, offsets = [], []
    for fp, bl in per_file.items():
        bl.sort(key=lambda r: r["_block"])
        total = sum(r["n"] for r in bl)
        first = 1
        for r in bl:
            offsets.append((r["source_file"], fp, r["_block"], first, r["min_rid"], total))
            first += r["n"]
        stats.append(FileStats(bl[0]["source_file"], fp, total, sum(r["nul"] for r in bl),
                               sum(r["badutf8"] for r in bl), sum(r["badshape"] for r in bl), bl[0]["first"]))
    return sorted(stats, key=lambda s: s.source_file), spark.createDataFrame(offsets, BLOCK_SCHEMA)


def validate_files(stats: list[FileStats], fmt: SourceFormat, max_bad_share: float) -> None:
    """Whole-file checks; raises ShopmineError naming the first bad file and what is wrong with it."""
    for s in stats:
        where = f"input file {s.source_file} (format {fmt.name})"
        kind = file_kind(fmt, s.source_file)
        has_header = fmt.has_header and kind == "text"
        data_lines = s.lines - (1 if has_header else 0)
        if data_lines <= 0 or (s.lines == 1 and not (s.first_line or "").strip()):
            raise ShopmineError(f"{where}: the file has no data")
        if s.nul_lines > 0 and s.nul_lines / s.lines > 0.01 or s.bad_utf8_lines / s.lines > max_bad_share:
            raise ShopmineError(f"{where}: binary or not UTF-8 text ({s.nul_lines:,} lines with NUL bytes, "
                                f"{s.bad_utf8_lines:,} with invalid UTF-8, of {s.lines:,})")
        if has_header:
            _check_header(where, s.first_line or "", fmt)
        bad = s.bad_shape_lines
        if data_lines > 0 and bad / data_lines > max_bad_share:
            expected = "JSON objects" if kind != "text" else f"{' or '.join(map(str, fmt.widths))} fields separated by {fmt.delimiter!r}"
            raise ShopmineError(f"{where}: wrong format for this adapter: {bad:,} of {data_lines:,} lines are not "
                                f"{expected}; first line: {(s.first_line or '')[:120]!r}")


def _check_header(where: str, first_line: str, fmt: SourceFormat) -> None:
    got = [c.strip().strip('"').lower() for c in first_line.split(fmt.delimiter)]
    want = [c.lower() for c in fmt.columns]
    missing = [c for c in fmt.columns if c.lower() not in got]
    if missing:
        raise ShopmineError(f"{where}: missing required columns {missing}; the header line is {first_line[:200]!r}")
    allowed = [want + [c.lower() for c in fmt.optional_trailing[:k]] for k in range(len(fmt.optional_trailing) + 1)]
    if got not in allowed:
        raise ShopmineError(f"{where}: columns in an unexpected order; expected {fmt.header_line()!r}, "
                            f"got {first_line[:200]!r}")


def batch_id(fingerprints: list[str]) -> str:
    """Deterministic id of a set of files: re-planning the same files gives the same batch."""
    return hashlib.sha256("\n".join(sorted(fingerprints)).encode()).hexdigest()[:16]


def to_bronze(raw: DataFrame, offsets: DataFrame, fmt: SourceFormat, fingerprints: list[str], batch: str,
              ingested_at: datetime) -> DataFrame:
    """Attach exact line numbers and batch metadata; keep only the files of this batch; drop leading headers."""
    # The inner join with the (broadcast, per split) offsets of this batch's files keeps only those files' lines.
    numbered = (
        raw.join(F.broadcast(offsets.where(F.col("source_fingerprint").isin(fingerprints))), ["source_file", "_block"])
        .withColumn("line_number", F.col("_first_line") + F.col("_rid") - F.col("_min_rid"))
        .withColumn("is_last_line", F.col("line_number") == F.col("_file_lines"))
    )
    if fmt.has_header:
        numbered = numbered.where(~(~F.col("_json") & (F.col("line_number") == 1)))
    return numbered.select(
        "raw_line", "line_number", "is_last_line", "source_file", "source_fingerprint",
        F.lit(fmt.name).alias("source_format"), F.lit(batch).alias("ingest_batch_id"),
        F.timestamp_micros(F.lit(int(ingested_at.timestamp() * 1_000_000))).alias("ingested_at"),
    )


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class IngestResult:
    batch: str | None
    files_seen: int
    files_new: int
    rows: int


def ingest(spark: SparkSession, lake, paths: list[str], fmt: SourceFormat, max_bad_share: float) -> IngestResult:
    """List, scan and validate the files; append the lines of files not ingested before as one bronze batch."""
    from shopmine.io.tables import BRONZE_EVENTS_RAW

    with step(log, f"list {len(paths)} input path(s)") as info:
        files = list_input_files(spark, paths)
        info["files"] = len(files)
        info["bytes"] = sum(f.size for f in files)
    raw = read_raw(spark, files, fmt)
    with step(log, "scan files (line counts, file checks)") as info:
        stats, offsets = scan_files(spark, raw, fmt)
        info["lines"] = sum(s.lines for s in stats)
    name = BRONZE_EVENTS_RAW.name
    seen: set[str] = set()
    if lake.exists(name):
        fps = [s.fingerprint for s in stats]
        seen = {r[0] for r in lake.read(name).where(F.col("source_fingerprint").isin(fps))
                .select("source_fingerprint").distinct().collect()}  # bounded by the number of input files
    new = [s for s in stats if s.fingerprint not in seen]
    for s in stats:
        log.info("file %s: %s lines%s", s.source_file, f"{s.lines:,}", " (already ingested, skipped)" if s.fingerprint in seen else "")
    if not new:
        return IngestResult(None, len(stats), 0, 0)
    validate_files(new, fmt, max_bad_share)
    fps = [s.fingerprint for s in new]
    batch = batch_id(fps)
    bronze = to_bronze(raw, offsets, fmt, fps, batch, now_utc())
    with step(log, f"write batch {batch} to {name}") as info:
        # replaceWhere on the batch: a rerun after a crash, or two ingests of the same files at once, converge.
        rows = info["rows"] = lake.replace_where(bronze, name, f"ingest_batch_id = '{batch}'").get("numOutputRows", 0)
    return IngestResult(batch, len(stats), len(new), rows)
