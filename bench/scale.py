"""Scale benchmark: ingest → clean → sessionize → featurize on 1M / 10M / 100M generated events, Spark and DuckDB.

    .venv/bin/python bench/scale.py [--sizes 1000000 10000000 100000000] [--memory 6g] [--work DIR] [--duckdb-max N]

* Input: the project's generator at each size (users = events / 50, items = events / 33, Zipf popularity, 1 % bots,
  duplicates and malformed lines), every line in CSV (``generate.json_share=0``) so both engines read the very same
  gzip files; one file per million events (at least 4). Generated once per size and kept in ``--work``.
* Spark: the product's jobs, unchanged, in a fresh process per size (local[*], driver memory ``--memory``, one
  shuffle partition per million events, at least 8: ``--events-per-partition``); a fresh lake each time. Timed per
  job. Memory: the JVM's peak RSS (VmHWM), the sum of its heap pools' peaks (an upper bound of the heap in use), and
  the Python driver's peak RSS.
* DuckDB: ``bench/duckdb_twin.py``, the same steps as SQL with the same thresholds, on the same files, in a fresh
  process with as many threads as cores and ``memory_limit`` = ``--memory``; every output table written as Parquet.
* Both sides' counts are compared (lines in, accepted, quarantined, duplicates, reasons, bot users, sessions,
  interactions, Σ strength, user / item / category features) so the two did the same work.

Writes ``bench/results/scale_clean_featurize.json`` after every measurement (a long run can be stopped and resumed:
finished measurements in ``--work`` are reused).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, child, conf_args, peak_rss_mb, run_task, task_parser, write_json  # noqa: E402

STEPS = ("ingest", "clean", "sessionize", "featurize")
COMPARED = ("rows_in", "accepted", "quarantine", "duplicate_exact", "duplicate_near", "reasons", "bot_users",
            "sessions", "interactions", "strength_sum", "user_features", "item_features", "category_features",
            "monetary_sum")


def gen_conf(size: int) -> list[str]:
    return [f"generate.events={size}", f"generate.users={max(100, size // 50)}",
            f"generate.items={max(100, size // 33)}", "generate.json_share=0", "generate.seed=7",
            f"generate.files={max(4, size // 1_000_000)}"]


def add_spark_args(p: argparse.ArgumentParser) -> None:
    """The options ``spark_conf`` reads (shared with ``fixed_cost.py``, whose runs use the same settings)."""
    p.add_argument("--memory", default="6g", help="Spark driver memory (local mode: the whole JVM) = DuckDB memory_limit")
    p.add_argument("--master", default="local[*]",
                   help="Spark master for the Spark side (a cluster needs --work on storage every worker reads)")
    p.add_argument("--events-per-partition", type=int, default=1_000_000,
                   help="shuffle partitions = max(8, events / this); the 1M/10M/100M table used the default")


def spark_conf(a) -> list[str]:
    return [f"spark.master={a.master}", f"spark.driver_memory={a.memory}", "spark.log_level=ERROR",
            f"spark.shuffle_partitions={max(8, a.size // a.events_per_partition)}", f"lake.root={a.dir}/lake"]


# -- tasks, each in a child process ------------------------------------------------------------------------------------


def generate_files(settings: list[str], generator: list[str], out: str) -> dict:
    """The generator's CSV files for ``generator`` settings under ``out``/csv; seconds, files and bytes."""
    from shopmine.conf import load_settings
    from shopmine.etl.generate import generate, write_raw
    from shopmine.spark import get_spark

    s = load_settings("local", settings + generator)
    spark = get_spark(s)
    t0 = time.perf_counter()
    write_raw(generate(spark, s.generate), out, s.generate.files)
    files = sorted(Path(out, "csv").glob("*.csv.gz"))
    return {"seconds": round(time.perf_counter() - t0, 1), "files": len(files),
            "gzip_bytes": sum(f.stat().st_size for f in files), "conf": generator}


def task_generate(a) -> dict:
    return generate_files(spark_conf(a), gen_conf(a.size), f"{a.dir}/raw")


def run_pipeline(settings: list[str], raw: str, fresh: bool = True) -> dict[str, float]:
    """The four jobs on ``raw`` (CSV files) into the lake the settings name, removed first (with ``fresh=False``
    the lake is kept and ``raw`` is a new batch for it); seconds per job."""
    from jobs import clean, featurize, ingest, sessionize
    from shopmine.conf import load_settings

    if fresh:
        shutil.rmtree(load_settings("local", settings).lake.resolved_root(), ignore_errors=True)
    args = conf_args(settings)
    mains = {"ingest": (ingest.main, ["--format", "canonical", "--input", raw]),
             "clean": (clean.main, []), "sessionize": (sessionize.main, []), "featurize": (featurize.main, [])}
    seconds = {}
    for name in STEPS:
        main, extra = mains[name]
        t0 = time.perf_counter()
        if main(args + extra) != 0:
            raise SystemExit(f"{name} failed")
        seconds[name] = round(time.perf_counter() - t0, 2)
    return seconds


def task_spark(a) -> dict:
    from pyspark.sql import functions as F

    from shopmine.conf import load_settings
    from shopmine.io.delta import Lake
    from shopmine.spark import get_spark

    settings = spark_conf(a)
    s = load_settings("local", settings)
    spark = get_spark(s)
    seconds = run_pipeline(settings, f"{a.dir}/raw/csv")
    memory = peak_rss_mb(spark)
    lake = Lake(spark, s)
    b = lake.read("ops.clean_batches").agg(*[F.sum(c).alias(c) for c in ("rows_in", "accepted", "quarantined",
                                                                         "duplicates_exact", "duplicates_near")]).first()
    silver = lake.read("silver.events")
    inter = lake.read("gold.interactions")
    users = lake.read("gold.user_features")
    counts = {
        "rows_in": b["rows_in"], "accepted": b["accepted"], "quarantine": b["quarantined"],
        "duplicate_exact": b["duplicates_exact"], "duplicate_near": b["duplicates_near"],
        "reasons": {r[0]: r[1] for r in lake.read("silver.quarantine").groupBy("reason").count().orderBy("reason")
                    .collect()},  # one row per reason code
        "bot_users": silver.where("is_bot").select("user_id").distinct().count(),
        "sessions": lake.read("gold.sessions").count(),
        "interactions": inter.count(),
        "strength_sum": round(inter.agg(F.sum("strength")).first()[0], 3),
        "user_features": users.count(),
        "item_features": lake.read("gold.item_features").count(),
        "category_features": lake.read("gold.category_features").count(),
        "monetary_sum": round(users.agg(F.sum("monetary")).first()[0], 2),
    }
    conf = {k: v for k, v in spark.sparkContext.getConf().getAll()
            if not any(x in k.lower() for x in ("secret", "password", "token", ".host", ".port", ".id", "jars", "urls",
                                                "files", "javaoptions", "time"))}
    conf.update({k: spark.conf.get(k) for k in ("spark.sql.shuffle.partitions", "spark.sql.adaptive.enabled",
                                                "spark.databricks.delta.snapshotPartitions")})
    return {"seconds": seconds, "counts": counts, "memory": memory, "spark_version": spark.version,
            "cores": spark.sparkContext.defaultParallelism, "conf": dict(sorted(conf.items()))}


def task_duckdb(a) -> dict:
    from duckdb_twin import run
    from shopmine.conf import load_settings

    s = load_settings("local", spark_conf(a))
    work = Path(a.dir, "duckdb")
    shutil.rmtree(work, ignore_errors=True)
    r = run(f"{a.dir}/raw/csv/*.csv.gz", work, s, threads=os.cpu_count() or 1,
            memory_limit=a.memory.upper().replace("G", "GB"))
    r["memory"] = {"duckdb_process_peak_rss_mb": peak_rss_mb()["python_peak_rss_mb"]}
    shutil.rmtree(work, ignore_errors=True)  # the twin's tables are not needed once counted
    return r


TASKS = {"generate": task_generate, "spark": task_spark, "duckdb": task_duckdb}


# -- orchestration -----------------------------------------------------------------------------------------------------


def cached(d: Path, task: str, script: str = __file__, **kw) -> dict:
    """A measurement (``script``'s ``task``, by default this file's), reused when an earlier run left it in ``d`` with
    the same settings (they name the file); the child's step log is kept beside it (``….log``)."""
    done = d / ("-".join([task] + [f"{k}={v}" for k, v in sorted(kw.items())]).replace("/", "_") + ".json")
    if done.exists():
        return json.loads(done.read_text())
    r = child(script, task, log=done.with_suffix(".log"), dir=d, **kw)
    done.write_text(json.dumps(r))
    return r


def summarise(result: dict) -> None:
    sizes = sorted(int(s) for s in result["sizes"])
    for n in sizes:
        r = result["sizes"][str(n)]
        lines = r["spark"]["counts"]["rows_in"]
        r["lines"] = lines
        for side in ("spark", "duckdb"):
            if side in r:
                total = sum(r[side]["seconds"].values())
                r[side]["total_seconds"] = round(total, 1)
                r[side]["rows_per_second"] = round(lines / total)
                r[side]["us_per_line"] = round(total / lines * 1e6, 2)
        if "duckdb" in r:
            r["spark_over_duckdb"] = round(r["spark"]["total_seconds"] / r["duckdb"]["total_seconds"], 2)
            r["spark_over_duckdb_per_step"] = {k: round(r["spark"]["seconds"][k] / max(r["duckdb"]["seconds"][k], 0.01), 1)
                                               for k in STEPS}
            r["counts_differ"] = {k: [r["spark"]["counts"][k], r["duckdb"]["counts"][k]] for k in COMPARED
                                  if r["spark"]["counts"][k] != r["duckdb"]["counts"][k]}
    result["spark_code"] = {str(n): result["sizes"][str(n)]["spark"].get("code", "unknown") for n in sizes}
    per_line = [result["sizes"][str(n)]["spark"]["us_per_line"] for n in sizes]
    if per_line:
        result["spark_us_per_line_spread"] = {"values": per_line, **spread(per_line)}
        for key, metric in (("spark_heap_pool_peaks_mb", "jvm_heap_pool_peaks_mb"), ("spark_peak_rss_mb", "jvm_peak_rss_mb"),
                            ("spark_python_driver_peak_rss_mb", "python_peak_rss_mb")):
            result[key] = [result["sizes"][str(n)]["spark"]["memory"][metric] for n in sizes]
        # The cost of each extra line between two sizes: fixed per-job costs cancel out, so growth shows here.
        marginal = {}
        for lo, hi in zip(sizes, sizes[1:]):
            a, b = result["sizes"][str(lo)], result["sizes"][str(hi)]
            extra_lines = b["lines"] - a["lines"]
            seconds = {"total": (a["spark"]["total_seconds"], b["spark"]["total_seconds"]),
                       **{k: (a["spark"]["seconds"][k], b["spark"]["seconds"][k]) for k in STEPS}}
            marginal[f"{lo}->{hi}"] = {k: round((t_hi - t_lo) / extra_lines * 1e6, 2) for k, (t_lo, t_hi) in seconds.items()}
        result["spark_marginal_us_per_line"] = marginal
        if marginal:
            result["spark_marginal_spread"] = spread([m["total"] for m in marginal.values()])


def spread(values: list[float]) -> dict:
    """How far the values stray from their mean (as a share of it), and whether all are within the ±25 % goal."""
    mean = sum(values) / len(values)
    return {"max_deviation_from_mean": round(max(abs(v - mean) / mean for v in values), 3),
            "flat_within_25_percent": all(abs(v - mean) / mean <= 0.25 for v in values)}


def table(result: dict) -> str:
    rows = ["| lines | Spark s (ingest / clean / sessionize / featurize) | Spark lines/s | µs per line | JVM heap "
            "pool peaks / peak RSS MiB | DuckDB s | DuckDB lines/s | Spark ÷ DuckDB |", "|---|---|---|---|---|---|---|---|"]
    for n in sorted(int(s) for s in result["sizes"]):
        r = result["sizes"][str(n)]
        sp, dk = r["spark"], r.get("duckdb")
        steps = " / ".join(f"{sp['seconds'][k]:.0f}" for k in STEPS)
        mem = f"{sp['memory']['jvm_heap_pool_peaks_mb']:,} / {sp['memory']['jvm_peak_rss_mb']:,}"
        duck = (f"{dk['total_seconds']} | {dk['rows_per_second']:,} | {r['spark_over_duckdb']}×" if dk else "— | — | —")
        rows.append(f"| {r['lines']:,} | {sp['total_seconds']} ({steps}) | {sp['rows_per_second']:,} | "
                    f"{sp['us_per_line']} | {mem} | {duck} |")
    return "\n".join(rows)


def main() -> int:
    p = task_parser(__doc__, TASKS)
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000, 100_000_000])
    add_spark_args(p)
    p.add_argument("--skip-duckdb", action="store_true")
    p.add_argument("--duckdb-max", type=int, default=None,
                   help="run the DuckDB twin only at sizes up to this many events (e.g. 10000000: the 3x target's size)")
    p.add_argument("--work", default=None, help="folder for generated files and finished measurements (kept)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "scale_clean_featurize.json"))
    a = p.parse_args()
    if a.task:
        return run_task(a, TASKS)

    work = Path(a.work or tempfile.mkdtemp(prefix="shopmine-scale-"))
    result: dict = {"machine": f"{os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 2**30} GiB",
                    "args": {k: v for k, v in vars(a).items() if k not in ("task", "dir", "size", "work")}, "sizes": {}}
    if Path(a.out).exists():  # keep sizes measured by earlier runs (e.g. 100M run on its own)
        result["sizes"] = json.loads(Path(a.out).read_text()).get("sizes", {})
    for size in sorted(set(a.sizes)):
        d = work / f"e{size}"
        d.mkdir(parents=True, exist_ok=True)
        print(f"{size:,} events", flush=True)  # noqa: T201
        spark_kw = {"size": size, "memory": a.memory, "master": a.master, "events_per_partition": a.events_per_partition}
        r = {"data": cached(d, "generate", size=size)}
        r["spark"] = cached(d, "spark", **spark_kw)
        if not a.skip_duckdb and (a.duckdb_max is None or size <= a.duckdb_max):
            r["duckdb"] = cached(d, "duckdb", size=size, memory=a.memory)
        result["sizes"][str(size)] = r
        summarise(result)
        write_json(a.out, result)
    print(table(result))  # noqa: T201
    for span, m in result.get("spark_marginal_us_per_line", {}).items():
        print(f"marginal µs per extra line, {span}: " + ", ".join(f"{k} {v}" for k, v in m.items()))  # noqa: T201
    if len(set(result["spark_code"].values())) > 1:
        print(f"note: the sizes were measured on different code: {result['spark_code']}")  # noqa: T201
    print(f"wrote {a.out}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
