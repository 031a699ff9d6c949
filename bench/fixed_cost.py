"""Fixed cost of a pipeline run: the part of ingest → clean → sessionize → featurize that does not grow with the input.

    .venv/bin/python bench/fixed_cost.py [--sizes 20000 1000000] [--repeats 2] [--work DIR]

Per size, one fresh process (one JVM) runs the four jobs ``--repeats`` times on the same generated files
(``bench/scale.py``'s input and settings), each time into a fresh lake. The first run is what a spark-submit pays;
later runs find the JVM warm (classes loaded, generated code compiled, JIT done). So:

* ``jvm_warmup_seconds`` = first run - mean of the later runs: paid once per JVM, whatever the input;
* the warm run at the smallest size is (almost all) per-run fixed cost: table creation, Delta commits and snapshot
  rebuilds, ``ops`` records, the many small Spark jobs of each step;
* the warm run minus that, per line, is the cost that grows with the input.

It explains ``bench/scale.py``'s time per line at 1M: see ``bench/README.md``. Writes
``bench/results/fixed_cost.json``; generated files in ``--work`` are reused (the same folders as ``scale.py``'s).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, child, run_task, task_parser, write_json  # noqa: E402
from scale import add_spark_args, cached, run_pipeline, spark_conf  # noqa: E402


def task_repeat(a) -> dict:
    from shopmine.conf import load_settings
    from shopmine.spark import get_spark

    settings = spark_conf(a)
    get_spark(load_settings("local", settings))  # started before the clock, as in scale.py
    return {"runs": [run_pipeline(settings, f"{a.dir}/raw/csv") for _ in range(a.repeats)]}


TASKS = {"repeat": task_repeat}


def main() -> int:
    p = task_parser(__doc__, TASKS)
    p.add_argument("--sizes", type=int, nargs="+", default=[20_000, 1_000_000])
    p.add_argument("--repeats", type=int, default=2)
    add_spark_args(p)
    p.add_argument("--work", default=None, help="folder for generated files (kept; the same layout as scale.py's)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "fixed_cost.json"))
    a = p.parse_args()
    if a.repeats < 2:
        p.error("--repeats must be at least 2: the first run is cold, the others warm")
    if a.task:
        return run_task(a, TASKS)

    work = Path(a.work or tempfile.mkdtemp(prefix="shopmine-scale-"))
    result: dict = {"args": {k: v for k, v in vars(a).items() if k not in ("task", "dir", "size", "work")},
                    "sizes": {}}
    for size in sorted(set(a.sizes)):
        d = work / f"e{size}"
        d.mkdir(parents=True, exist_ok=True)
        print(f"{size:,} events", flush=True)  # noqa: T201
        data = cached(d, "generate", size=size)
        measured = child(__file__, "repeat", log=d / f"fixed_cost-repeats={a.repeats}.log", dir=d, size=size,
                         repeats=a.repeats, memory=a.memory, master=a.master,
                         events_per_partition=a.events_per_partition)
        runs = measured["runs"]
        totals = [round(sum(r.values()), 1) for r in runs]
        warm = sum(totals[1:]) / len(totals[1:])
        result["sizes"][str(size)] = {"gzip_bytes": data["gzip_bytes"], "runs": runs, "total_seconds": totals,
                                      "cold_seconds": totals[0], "warm_seconds": round(warm, 1),
                                      "jvm_warmup_seconds": round(totals[0] - warm, 1), "code": measured["code"]}
    sizes = sorted(result["sizes"], key=int)
    if len(sizes) > 1:  # the smallest size's warm run ≈ per-run fixed cost; the rest of a larger warm run grows
        lo, hi = result["sizes"][sizes[0]], result["sizes"][sizes[-1]]
        result["per_run_fixed_seconds"] = lo["warm_seconds"]
        result["growing_seconds_at_largest"] = round(hi["warm_seconds"] - lo["warm_seconds"], 1)
    write_json(a.out, result)
    for n in sizes:
        r = result["sizes"][n]
        print(f"{int(n):>12,} events: runs {r['total_seconds']} s; cold {r['cold_seconds']} s, warm "  # noqa: T201
              f"{r['warm_seconds']} s, JVM warm-up {r['jvm_warmup_seconds']} s")
    print(f"wrote {a.out}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
