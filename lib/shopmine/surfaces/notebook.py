"""What the Databricks notebooks under ``notebooks/`` share: parameters from widgets (or the environment when run
locally), the stage runner and display.

A notebook runs a stage through the very entry point ``spark-submit.sh`` runs (``jobs/<stage>.py``'s ``main``), so
the notebook and the job cannot drift apart: same configuration, same ``ops.runs`` record, same Delta writes. On
Databricks the repository is a Git folder (its root is on ``sys.path``, the cluster has the wheel or ``lib/``
installed); locally the first cell puts the checkout's root and ``lib/`` on the path.

Parameters, in order of precedence: the notebook's widget (``dbutils.widgets``, created with the default shown in the
notebook), the environment variable ``SHOPMINE_NB_<NAME>`` (local runs and tests), the default.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shopmine.conf import Settings, load_settings
from shopmine.io.delta import Lake
from shopmine.io.tables import OPS_RUNS
from shopmine.registry import job as job_spec

log = logging.getLogger("shopmine.surfaces.notebook")


class StageFailed(RuntimeError):
    """A stage ended with a non-zero exit code; the message is the job's own one-line reason."""


def widgets(dbutils: Any, defaults: dict[str, str]) -> dict[str, str]:
    """Parameter values: Databricks widgets when ``dbutils`` is there (created on first run), else the environment
    (``SHOPMINE_NB_<NAME>``), else the defaults."""
    out = {}
    for name, default in defaults.items():
        if dbutils is not None:
            try:
                dbutils.widgets.get(name)
            except Exception:  # noqa: BLE001 - Databricks raises when the widget does not exist yet
                dbutils.widgets.text(name, default, name)
            out[name] = dbutils.widgets.get(name)
        else:
            out[name] = os.environ.get(f"SHOPMINE_NB_{name.upper()}", default)
    return out


def conf_overrides(text: str) -> list[str]:
    """``key=value`` overrides from a widget: separated by newlines or semicolons, blanks ignored."""
    return [item.strip() for line in text.splitlines() for item in line.split(";") if item.strip()]


@dataclass
class Notebook:
    """One notebook's lake and configuration: ``run`` a stage, ``table`` a Delta table, ``show`` a frame."""

    lake_root: str
    overlay: str = "local"
    conf: list[str] = field(default_factory=list)
    spark: SparkSession | None = None
    params: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.overrides = [f"lake.root={self.lake_root}", *self.conf] if self.lake_root else list(self.conf)
        self.settings: Settings = load_settings(self.overlay, self.overrides)
        if self.spark is None:
            from shopmine.spark import get_spark

            self.spark = SparkSession.getActiveSession() or get_spark(self.settings)
        self.lake = Lake(self.spark, self.settings)

    @classmethod
    def from_params(cls, params: dict[str, str], spark: SparkSession | None = None) -> Notebook:
        nb = cls(params.get("lake_root", ""), params.get("overlay") or "local", conf_overrides(params.get("conf", "")),
                 spark)
        nb.params = dict(params)
        return nb

    @classmethod
    def open(cls, scope: dict, **extra: str) -> Notebook:
        """A notebook's first cell: ``nb = Notebook.open(globals(), user="")``. The widgets ``lake_root``,
        ``overlay`` and ``conf`` plus ``extra`` (name=default) become ``nb.params``; Databricks' ``spark`` and
        ``dbutils`` are taken from the notebook's globals when there."""
        params = widgets(scope.get("dbutils"), {"lake_root": "", "overlay": "local", "conf": "", **extra})
        nb = cls.from_params(params, scope.get("spark"))
        print(f"shopmine lake: {nb.lake.root} (overlay {nb.overlay}, {len(nb.conf)} conf override(s))")  # noqa: T201
        return nb

    def run(self, stage: str, *args: str) -> dict:
        """Run a job exactly as ``spark-submit.sh STAGE ARGS`` would, in this session; return its ``ops.runs`` row.
        Raises :class:`StageFailed` with the job's message when it fails."""
        module = job_spec(stage).entry()
        argv = [f"--overlay={self.overlay}", *[f"--conf={c}" for c in self.overrides], *args]
        code = module.main(argv)
        row = self.last_run(stage)
        if code != 0:
            reason = (row or {}).get("message") or f"exit code {code}"
            raise StageFailed(f"{stage} failed: {reason}")
        return row or {}

    def last_run(self, stage: str) -> dict | None:
        if not self.lake.exists(OPS_RUNS.name):
            return None
        row = (self.lake.read(OPS_RUNS.name).where(F.col("job") == stage).orderBy(F.desc("started_at"))
               .select("run_id", "status", "seconds", "rows_read", "rows_written", "rows_rejected", "counts",
                       "message").first())
        return row.asDict(recursive=True) if row else None

    def table(self, name: str, version: int | None = None) -> DataFrame:
        return self.lake.read(name, version)

    def show(self, df: DataFrame, n: int = 20) -> None:
        """Databricks' ``display`` when there is one, else a plain-text table of the first ``n`` rows."""
        import builtins
        import inspect

        display = inspect.currentframe().f_back.f_globals.get("display") or getattr(builtins, "display", None)
        if display is not None:
            display(df.limit(n))
        else:
            df.show(n, truncate=60)
