"""What the recommender benchmarks share: run jobs in-process with --conf settings, read back a run's metrics."""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
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


def latest_metrics(settings: list[str], job: str | None = None) -> tuple[str | None, dict[str, dict]]:
    """The newest run's metrics (of ``job`` when given; (None, {}) when it has none): model -> {"ndcg@10": v, ...,
    "details": {...}}; a metric without a k (the behaviour models') is named alone ("roc_auc")."""
    from pyspark.sql import functions as F

    from shopmine.conf import load_settings
    from shopmine.io.delta import Lake
    from shopmine.spark import get_spark

    s = load_settings("local", settings)
    metrics = Lake(get_spark(s), s).read("ops.model_metrics")
    newest = (metrics if job is None else metrics.where(F.col("job") == job)).orderBy(F.desc("created_at")).first()
    if newest is None:
        return None, {}
    ours: dict[str, dict] = {}
    for r in metrics.where(F.col("run_id") == newest["run_id"]).collect():  # one run: models x metrics x ks rows
        name = r["metric"] if r["k"] is None else f"{r['metric']}@{r['k']}"
        ours.setdefault(r["model"], {})[name] = r["value"]
        ours[r["model"]]["details"] = json.loads(r["details"])
    return newest["run_id"], ours


def write_json(path: str, result: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2, default=str))


def peak_rss_mb(spark=None) -> dict:
    """Peak resident memory (VmHWM) of the Spark JVM and of this Python process, in MiB; with a session, also the sum
    of the JVM's heap pools' peaks (eden, survivor and old peak at different moments, so the sum is an upper bound of
    the heap ever in use, and can exceed -Xmx)."""
    out = {"python_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    if spark is not None:
        jvm = spark.sparkContext._jvm
        pid = jvm.java.lang.ProcessHandle.current().pid()
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                out["jvm_peak_rss_mb"] = round(int(line.split()[1]) / 1024)
        pools = jvm.java.lang.management.ManagementFactory.getMemoryPoolMXBeans()
        heap = sum(p.getPeakUsage().getUsed() for p in pools if str(p.getType().toString()) == "Heap memory")
        out["jvm_heap_pool_peaks_mb"] = round(heap / 2**20)
    return out


def code_version() -> str:
    """The commit measured, ``-dirty`` when tracked files other than ``bench/results/`` have uncommitted changes (a
    benchmark of several sizes rewrites its own results file between sizes; that is not a change to what it
    measures); "unknown" outside a git checkout."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    if head.returncode != 0:
        return "unknown"
    changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                              ":(exclude)bench/results"], capture_output=True, text=True, cwd=ROOT)
    return head.stdout.strip() + ("-dirty" if changed.stdout.strip() else "")


def task_parser(doc: str, tasks) -> argparse.ArgumentParser:
    """A benchmark's parser, with what :func:`child` passes to its own script: ``--task`` (one of ``tasks``: run
    that one measurement in this process), ``--dir`` (its folder) and ``--size``."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--task", choices=sorted(tasks))
    p.add_argument("--dir")
    p.add_argument("--size", type=int)
    return p


def run_task(a: argparse.Namespace, tasks: dict) -> int:
    """Run ``tasks[a.task]`` and print its result as the ``RESULT {...}`` line :func:`child` reads."""
    print("RESULT " + json.dumps(tasks[a.task](a), default=str), flush=True)  # noqa: T201
    return 0


def child(script: str, task: str, log: Path | None = None, **kw) -> dict:
    """Run ``script --task task --k v ...`` in a fresh process (its own JVM); returns the JSON it prints last as
    ``RESULT {...}``, plus ``process_seconds`` and ``code`` (the commit measured, ``-dirty`` with uncommitted
    changes: cached measurements from different code stay told apart). Exits with the child's stderr tail when it
    fails. With ``log``, the child's stderr (the jobs' step log with counts and timings) is also kept in that file."""
    flags = [f"--{k.replace('_', '-')}" + (f"={v}" if v != "" else "") for k, v in kw.items()]  # "": a bare flag
    args = [sys.executable, script, "--task", task] + flags
    print(f"  {task} {kw.get('mode', '')} ...", flush=True)  # noqa: T201 - benchmark progress
    code = code_version()  # before the run: a commit made while it runs is not what it measured
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    if log is not None:
        Path(log).write_text(proc.stderr)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{task} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    result["process_seconds"] = round(time.perf_counter() - t0, 1)
    result["code"] = code
    print(f"    {result}", flush=True)  # noqa: T201
    return result
