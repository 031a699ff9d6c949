"""Daily increment: what one new day's batch costs in a small lake and in a large one.

    .venv/bin/python bench/increment.py [--lakes 1000000 10000000] [--batch 100000] [--work DIR]

A daily job adds a day to a lake that keeps growing, so its cost should follow the batch, not the lake. Per lake
size, one fresh process (one JVM) builds the lake from ``bench/scale.py``'s generated files with the four jobs
(``scale.py``'s settings and input; that build is what ``scale.py`` times), then runs the same four jobs on one
batch: the generator's events of one new day (after the lake's last), the same batch files for every lake size.
The batch runs are timed per job and per step (their step log is kept beside the result), and their counts are
read back from ``ops.runs``. The batch is then run a second time into the same lake: ingest finds its files
ingested and every later job finds nothing new (the no-op path of a retried daily job).

Cost that stays with the batch: ingest, clean (the batch's rows, plus a look-up of its event ids in silver's
partitions of its dates), sessionize (the dates it touches). Cost that follows the lake by design: featurize's
as-of features (``gold.interactions``, user / item / category features) decay every interaction to the new as-of
day, so every row of them changes and is rewritten; its per-day tables (``interactions_daily``, ``user_daily``)
only gain the new day. Writes ``bench/results/increment.json``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, child, run_task, task_parser, write_json  # noqa: E402
from scale import STEPS, add_spark_args, cached, gen_conf, generate_files, run_pipeline, spark_conf  # noqa: E402

# The generator's 14 days start on 2025-11-01, and their last sessions run past midnight into the 15th: the batch
# starts a day later, so the lake has no event on the batch's days (event ids restart at e0 in every generated set).
BATCH_DAY = "2025-11-16"


def batch_conf(events: int) -> list[str]:
    """One day of ``events``: the lakes' seed, so an item keeps its category, brand and price; users and items are
    numbered from 0 up at every size, so the batch's (fewer) users and items are the lakes' first ones."""
    return gen_conf(events) + [f"generate.start={BATCH_DAY}", "generate.days=1"]


def task_batch(a) -> dict:
    return generate_files(spark_conf(a), batch_conf(a.size), f"{a.dir}/raw")


def task_increment(a) -> dict:
    from pyspark.sql import functions as F

    from shopmine.conf import load_settings
    from shopmine.io.delta import Lake
    from shopmine.spark import get_spark

    settings = spark_conf(a)  # shuffle partitions follow the lake's size, as scale.py sets them for that size
    s = load_settings("local", settings)
    spark = get_spark(s)
    lake = Lake(spark, s)
    build = run_pipeline(settings, f"{a.dir}/raw/csv")
    silver_before = lake.read("silver.events").count()
    t0 = time.perf_counter()
    runs = [run_pipeline(settings, a.batch_dir + "/raw/csv", fresh=False) for _ in range(2)]
    wall = time.perf_counter() - t0
    recorded = (lake.read("ops.runs").orderBy(F.desc("started_at")).limit(2 * len(STEPS))  # the two batch runs
                .select("job", "status", "seconds", "rows_read", "rows_written", "rows_rejected").collect())
    jobs = [r.asDict() for r in reversed(recorded)]
    return {"build_seconds": build, "batch_seconds": runs[0], "rerun_seconds": runs[1], "wall_seconds": round(wall, 1),
            "silver_rows_before": silver_before, "silver_rows_after": lake.read("silver.events").count(),
            "batch_jobs": jobs[:len(STEPS)], "rerun_jobs": jobs[len(STEPS):]}


TASKS = {"batch": task_batch, "increment": task_increment}


def main() -> int:
    p = task_parser(__doc__, TASKS)
    p.add_argument("--batch-dir")
    p.add_argument("--lakes", type=int, nargs="+", default=[1_000_000, 10_000_000],
                   help="lake sizes in generated events (scale.py's input at that size)")
    p.add_argument("--batch", type=int, default=100_000, help="events in the new day's batch")
    add_spark_args(p)
    p.add_argument("--work", default=None, help="folder for generated files (kept; the same layout as scale.py's)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "increment.json"))
    a = p.parse_args()
    if a.task:
        return run_task(a, TASKS)

    work = Path(a.work or tempfile.mkdtemp(prefix="shopmine-scale-"))
    bd = work / f"batch{a.batch}"
    bd.mkdir(parents=True, exist_ok=True)
    spark_kw = {"memory": a.memory, "master": a.master, "events_per_partition": a.events_per_partition}
    result: dict = {"args": {k: v for k, v in vars(a).items() if k not in ("task", "dir", "size", "batch_dir", "work")},
                    "batch": cached(bd, "batch", __file__, size=a.batch, **spark_kw), "lakes": {}}
    for size in sorted(set(a.lakes)):
        d = work / f"e{size}"
        d.mkdir(parents=True, exist_ok=True)
        print(f"lake of {size:,} events + a batch of {a.batch:,}", flush=True)  # noqa: T201
        cached(d, "generate", size=size)
        r = child(__file__, "increment", log=d / f"increment-batch={a.batch}.log", dir=d, size=size,
                  batch_dir=bd, **spark_kw)
        r["batch_total_seconds"] = round(sum(r["batch_seconds"].values()), 1)
        r["rerun_total_seconds"] = round(sum(r["rerun_seconds"].values()), 1)
        result["lakes"][str(size)] = r
        write_json(a.out, result)
    for size, r in result["lakes"].items():
        steps = " / ".join(f"{r['batch_seconds'][k]:.1f}" for k in STEPS)
        print(f"lake {int(size):,}: silver {r['silver_rows_before']:,} -> {r['silver_rows_after']:,}; batch "  # noqa: T201
              f"{r['batch_total_seconds']} s ({steps}); rerun {r['rerun_total_seconds']} s")
    print(f"wrote {a.out}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
