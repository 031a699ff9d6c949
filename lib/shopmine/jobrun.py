"""What every job shares: arguments, configuration, the Spark session, error handling and the ``ops.runs`` record.

Exit codes: 0 success; 1 bad input (a :class:`ShopmineError`, message names the file/row/field); 2 bad usage or
configuration; 3 an unexpected internal error (one line on stderr, the traceback in the log file it names); 4 the job ran
but a quality gate it enforces failed (``monitor``: a data-quality check or a drift threshold; results are written).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from shopmine.conf import ConfError, Settings, load_settings
from shopmine.io.delta import Lake
from shopmine.io.tables import OPS_RUNS
from shopmine.logs import setup_logging

log = logging.getLogger("shopmine.job")


class ShopmineError(Exception):
    """A problem with the user's input or request: the message is shown as is, without a stack trace."""


class ChecksFailed(ShopmineError):
    """The job did its work and wrote its results, but they breach a threshold the user asked to enforce (exit 4)."""


@dataclass
class RunContext:
    job: str
    spark: SparkSession
    settings: Settings
    lake: Lake
    run_id: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S-") + uuid.uuid4().hex[:8])
    counts: dict[str, int] = field(default_factory=dict)
    inputs: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, int] = field(default_factory=dict)
    noop: bool = False
    message: str | None = None

    def __post_init__(self) -> None:
        self.lake.on_write = self.wrote  # every write through the Lake lands in this run's output_versions

    def read(self, name: str) -> DataFrame:
        """Read a table at its current version and remember that version as this run's input."""
        version = self.lake.version(name)
        if version is None:
            raise ShopmineError(f"table {name} does not exist yet at {self.lake.ident(name)}: run the job that writes it first")
        self.inputs[name] = version
        return self.lake.read(name, version)

    def wrote(self, name: str) -> None:
        """Record the table's current version as this run's output (the Lake calls it after each write)."""
        version = self.lake.version(name)
        if version is not None:
            self.outputs[name] = version

    def same_inputs_as_last_run(self) -> bool:
        """Whether this job's last successful run read the same table versions with the same configuration."""
        if not self.lake.exists(OPS_RUNS.name):
            return False
        from pyspark.sql import functions as F

        last = (self.lake.read(OPS_RUNS.name).where((F.col("job") == self.job) & F.col("status").isin("ok", "noop"))
                .orderBy(F.desc("started_at")).select("input_versions", "conf_hash").first())
        return bool(last) and dict(last[0]) == self.inputs and last[1] == self.settings.fingerprint()

    def skip_if_unchanged(self, force: bool, what: str) -> bool:
        """Mark the run a no-op (and say why) when its inputs are those of its last successful run, unless forced."""
        if force or not self.same_inputs_as_last_run():
            return False
        self.noop = True
        self.message = f"{what} have not changed since the last {self.job} run (use --force to run anyway)"
        return True

    def count(self, **kv: int) -> None:
        for k, v in kv.items():
            self.counts[k] = self.counts.get(k, 0) + int(v)


def base_parser(job: str) -> argparse.ArgumentParser:
    """The arguments every job takes; the description is the job's line in :mod:`shopmine.registry`."""
    from shopmine.registry import job as job_spec

    p = argparse.ArgumentParser(prog=f"spark-submit.sh {job}", description=job_spec(job).description)
    p.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --conf lake.root=/data/lake (repeatable)")
    p.add_argument("--overlay", default=os.environ.get("SHOPMINE_OVERLAY", "local"),
                   help="config overlay: a name under conf/ (local, cluster) or a YAML path; default local")
    return p


def run_job(job: str, argv: Sequence[str] | None, parser: argparse.ArgumentParser,
            body: Callable[[RunContext, argparse.Namespace], None]) -> int:
    """Parse, configure, run ``body`` and record the run. Returns the exit code (never raises for user errors)."""
    setup_logging()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage or --help
        return int(exc.code or 0)
    try:
        settings = load_settings(args.overlay, args.conf)
    except ConfError as exc:
        return _fail(job, f"configuration error: {exc}", 2)

    from shopmine.spark import get_spark

    try:
        spark = get_spark(settings)
    except Exception as exc:  # noqa: BLE001 - e.g. no Java, a bad master URL: one line, not a stack trace
        return _fail(job, f"cannot start Spark: {type(exc).__name__}: {_first_line(exc)}", 3)
    ctx = RunContext(job=job, spark=spark, settings=settings, lake=Lake(spark, settings))
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    log.info("%s: run %s, lake %s, conf %s", job, ctx.run_id, ctx.lake.root, settings.fingerprint())
    status, code = "ok", 0
    try:
        body(ctx, args)
        if ctx.noop:
            status = "noop"
        else:
            from shopmine.surfaces.tracking import track_run

            track_run(ctx.lake, settings, job, ctx.run_id)
    except ChecksFailed as exc:
        status, code, ctx.message = "failed", 4, str(exc)
    except ShopmineError as exc:
        status, code, ctx.message = "failed", 1, str(exc)
    except ConfError as exc:
        status, code, ctx.message = "failed", 2, f"configuration error: {exc}"
    except Exception as exc:  # noqa: BLE001 - the user sees one line; the traceback goes to the log file
        logfile = _write_traceback(job, ctx.run_id)
        status, code = "failed", 3
        ctx.message = f"internal error {type(exc).__name__}: {_first_line(exc)} (traceback in {logfile})"
    seconds = time.perf_counter() - t0
    _record_run(ctx, started, seconds, status)
    if code:
        return _fail(job, ctx.message or "failed", code)
    log.info("%s: %s in %.1fs; read %s, wrote %s, rejected %s", job, status, seconds,
             f"{ctx.counts.get('rows_read', 0):,}", f"{ctx.counts.get('rows_written', 0):,}",
             f"{ctx.counts.get('rows_rejected', 0):,}")
    return 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


def _write_traceback(job: str, run_id: str) -> str:
    folder = Path(os.environ.get("SHOPMINE_LOG_DIR", tempfile.gettempdir())) / "shopmine-logs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{job}-{run_id}.log"
    path.write_text(traceback.format_exc())
    return str(path)


def _fail(job: str, message: str, code: int) -> int:
    line = f"shopmine {job}: {message}\n"
    sys.stderr.write(line)
    sys.stderr.flush()
    error_file = os.environ.get("SHOPMINE_ERROR_FILE")  # set by spark-submit.sh (see there)
    if error_file:
        with open(error_file, "a", encoding="utf-8") as fh:
            fh.write(line)
    return code


def _record_run(ctx: RunContext, started: datetime, seconds: float, status: str) -> None:
    """Append this run to ops.runs. A failure to record must not hide the job's own outcome."""
    c = ctx.counts
    row = (ctx.run_id, ctx.job, started, float(seconds), status, ctx.settings.fingerprint(),
           dict(ctx.inputs), dict(ctx.outputs), int(c.get("rows_read", 0)), int(c.get("rows_written", 0)),
           int(c.get("rows_rejected", 0)), {k: int(v) for k, v in c.items()}, ctx.message)
    ctx.lake.on_write = None  # the run's own record is not one of its outputs
    try:
        df = ctx.spark.createDataFrame([row], OPS_RUNS.schema)
        ctx.lake.append(df, OPS_RUNS.name)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not record the run in ops.runs: %s", _first_line(exc))
