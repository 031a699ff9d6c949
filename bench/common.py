"""What the recommender benchmarks share: run jobs in-process with --conf settings, read back a run's metrics."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))


def conf_args(settings: list[str]) -> list[str]:
    out: list[str] = []
    for kv in settings:
        out += ["--conf", kv]
    return out


def run_steps(settings: list[str], steps: list[tuple[str, object, list[str]]]) -> dict[str, float]:
    """Run each (name, job main, extra args) with the settings; exit with a message when one fails."""
    seconds = {}
    for name, main, extra in steps:
        t0 = time.perf_counter()
        if main(conf_args(settings) + extra) != 0:
            sys.exit(f"{name} failed (see the message above)")
        seconds[name] = round(time.perf_counter() - t0, 1)
    return seconds


def latest_metrics(settings: list[str]) -> tuple[str, dict[str, dict]]:
    """The newest recommend run's metrics: model -> {"ndcg@10": v, ..., "details": {...}}."""
    from pyspark.sql import functions as F

    from shopmine.conf import load_settings
    from shopmine.io.delta import Lake
    from shopmine.spark import get_spark

    s = load_settings("local", settings)
    metrics = Lake(get_spark(s), s).read("ops.model_metrics")
    run = metrics.orderBy(F.desc("created_at")).first()["run_id"]
    ours: dict[str, dict] = {}
    for r in metrics.where(F.col("run_id") == run).collect():  # one run: models x metrics x ks rows
        ours.setdefault(r["model"], {})[f"{r['metric']}@{r['k']}"] = r["value"]
        ours[r["model"]]["details"] = json.loads(r["details"])
    return run, ours


def write_json(path: str, result: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2, default=str))
