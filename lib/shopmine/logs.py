"""Logging: one line per step with counts and timings. Jobs never ``print``."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

FORMAT = "%(asctime)s %(levelname)s %(name)s | %(message)s"


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not the stream of the first call: a job run
    in-process under a replaced stderr (a test's capture, a notebook cell) must not leave the handler on a stream
    that is closed later."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(level: int = logging.INFO) -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_shopmine", False) for h in root.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter(FORMAT, "%H:%M:%S"))
        handler._shopmine = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("py4j", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # PySpark logs every failed query as a multi-kilobyte JSON record; the job reports the error in one line and
    # writes the traceback to its log file instead.
    for spark_query_logger in ("DataFrameQueryContextLogger", "SQLQueryContextLogger"):
        logging.getLogger(spark_query_logger).setLevel(logging.CRITICAL)


@contextmanager
def step(log: logging.Logger, what: str) -> Iterator[dict]:
    """Log ``what`` when it starts and, with its seconds and whatever counts the block put in the dict, when done."""
    info: dict = {}
    log.info("%s ...", what)
    started = time.perf_counter()
    try:
        yield info
    except Exception:
        log.error("%s failed after %.1fs", what, time.perf_counter() - started)
        raise
    seconds = time.perf_counter() - started
    info["seconds"] = round(seconds, 3)
    details = ", ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}" for k, v in info.items() if k != "seconds")
    log.info("%s done in %.1fs%s", what, seconds, f" ({details})" if details else "")
