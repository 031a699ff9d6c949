"""Recommender speed on generated events: Spark ALS vs the `implicit` library, and item-CF vs a naive self-join.

    .venv/bin/pip install -e '.[bench]'         # implicit, scipy (benchmark-only dependencies)
    .venv/bin/python bench/recsys_speed.py [--sizes 1000000 10000000] [--als-size 10000000] [--rank 64] [--iters 10]

* Input: the project's generator at each size (users = events / 50, items = events / 33, Zipf popularity, 1 % bots),
  folded to (user, item, strength = Σ event weight) pairs with dense integer ids, written once to Parquet so both
  sides of each comparison read the very same matrix.
* ALS: Spark ML ALS (implicit preferences) with Spark's defaults (10 blocks, checkpoint every 10 iterations,
  MEMORY_AND_DISK) and with Shopmine's settings (`models.als_estimator`: one block per core) vs
  `implicit.cpu.als.AlternatingLeastSquares` (conjugate gradient, the library default, and the exact Cholesky solve
  Spark uses), same rank, iterations, regularisation and alpha. Timed: the fit on a cached / in-memory matrix.
* Item-CF: `models.item_neighbours` (each user's strongest `--cap` items, top-K per item) vs a naive all-pairs
  self-join (every pair of each user's items, no cap), cosine similarity, top-K. Reported: wall time, peak RSS of the
  JVM and of Python, self-join rows ("pairs produced") and the overlap of the two top-K lists per item.

Every measurement runs in its own process (a fresh JVM), so a peak RSS belongs to one measurement. Writes JSON.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, peak_rss_mb, run_task, task_parser, write_json  # noqa: E402
from common import child as _child  # noqa: E402

WEIGHTS = {"view": 1.0, "favourite": 2.0, "cart": 3.0, "purchase": 5.0}


def _spark(memory: str):
    from shopmine.conf import load_settings
    from shopmine.spark import get_spark

    settings = load_settings("local", ["spark.master=local[*]", f"spark.driver_memory={memory}",
                                       "spark.log_level=ERROR"])
    return get_spark(settings)


# -- tasks, each run in a child process -------------------------------------------------------------------------------


def task_prep(a) -> dict:
    from pyspark.sql import functions as F

    from shopmine.conf import GenerateConf
    from shopmine.etl.generate import generate
    from shopmine.recsys.models import dense_ids

    spark = _spark(a.memory)
    t0 = time.perf_counter()
    conf = GenerateConf(events=a.size, users=max(100, a.size // 50), items=max(100, a.size // 33), seed=7)
    ev = generate(spark, conf).events.where(F.col("item_id").isNotNull())
    if a.no_bots:  # as the product does (features.exclude_bots): bots' catalogue crawls are not co-occurrence
        ev = ev.where(~F.col("is_bot"))
    weight = F.coalesce(*[F.when(F.col("event_type") == k, F.lit(v)) for k, v in WEIGHTS.items()], F.lit(0.0))
    pairs = ev.groupBy("user_id", "item_id").agg(F.sum(weight).cast("float").alias("strength"),
                                                 F.count(F.lit(1)).alias("events")).where("strength > 0")
    pairs.write.mode("overwrite").parquet(f"{a.dir}/pairs_raw")
    raw = spark.read.parquet(f"{a.dir}/pairs_raw")
    users, items = dense_ids(raw, "user_id", "uidx"), dense_ids(raw, "item_id", "iidx")
    raw.join(users, "user_id").join(items, "item_id").repartition(8).write.mode("overwrite").parquet(f"{a.dir}/pairs")
    p = spark.read.parquet(f"{a.dir}/pairs")
    stats = p.agg(F.count(F.lit(1)).alias("pairs"), F.countDistinct("uidx").alias("users"),
                  F.countDistinct("iidx").alias("items"), F.sum("events").alias("events")).first().asDict()
    return {**stats, "seconds": round(time.perf_counter() - t0, 1), **peak_rss_mb(spark)}


def task_spark_als(a) -> dict:
    from pyspark.ml.recommendation import ALS

    from shopmine.conf import AlsConf
    from shopmine.recsys.models import als_estimator, blocks_for

    spark = _spark(a.memory)
    spark.sparkContext.setCheckpointDir(tempfile.mkdtemp(prefix="als-ckpt-", dir=a.dir))
    ratings = spark.read.parquet(f"{a.dir}/pairs").select("uidx", "iidx", "strength").cache()
    n = ratings.count()
    if a.mode == "spark_defaults":
        est = ALS(userCol="uidx", itemCol="iidx", ratingCol="strength", implicitPrefs=True, rank=a.rank,
                  maxIter=a.iters, regParam=a.reg, alpha=a.alpha, seed=1)
    else:
        conf = AlsConf(max_iter=a.iters, checkpoint_interval=a.checkpoint)
        est = als_estimator(conf, a.rank, a.reg, a.alpha, blocks_for(spark, conf), 1)
        if a.mode == "ours_memory_only":
            est = est.setIntermediateStorageLevel("MEMORY_ONLY").setFinalStorageLevel("MEMORY_ONLY")
    t0 = time.perf_counter()
    model = est.fit(ratings)
    model.userFactors.count()  # the fit is lazy about its last step: materialise both factor sets
    model.itemFactors.count()
    secs = time.perf_counter() - t0
    return {"mode": a.mode, "pairs": n, "blocks": est.getNumUserBlocks(), "checkpoint_interval":
            est.getCheckpointInterval(), "storage": est.getIntermediateStorageLevel(),
            "fit_seconds": round(secs, 1), **peak_rss_mb(spark)}


def task_implicit_als(a) -> dict:
    import numpy as np
    import pyarrow.parquet as pq
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares

    t = pq.read_table(f"{a.dir}/pairs", columns=["uidx", "iidx", "strength"])
    u, i = t["uidx"].to_numpy(), t["iidx"].to_numpy()
    m = sp.csr_matrix((t["strength"].to_numpy().astype(np.float32), (u, i)), shape=(u.max() + 1, i.max() + 1))
    # Spark: confidence 1 + alpha*r; implicit 0.7 scales the matrix by alpha itself (same work per iteration).
    model = AlternatingLeastSquares(factors=a.rank, regularization=a.reg, alpha=a.alpha, iterations=a.iters,
                                    use_cg=(a.mode == "cg"), calculate_training_loss=False, random_state=1)
    t0 = time.perf_counter()
    model.fit(m, show_progress=False)
    secs = time.perf_counter() - t0
    import threadpoolctl

    threads = max(p["num_threads"] for p in threadpoolctl.threadpool_info()) if threadpoolctl.threadpool_info() else None
    return {"mode": a.mode, "pairs": int(m.nnz), "fit_seconds": round(secs, 1), "blas_threads": threads,
            **peak_rss_mb()}


def _naive_neighbours(ui, k: int):
    """Every pair of items of every user (no cap), cosine, top-k per item: what the capped version is measured against."""
    from pyspark.sql import functions as F
    from pyspark.sql.window import Window

    n = ui.groupBy("item_id").agg(F.count(F.lit(1)).alias("n"))
    a, b = ui.alias("a"), ui.alias("b")
    pairs = (a.join(b, (F.col("a.user_id") == F.col("b.user_id")) & (F.col("a.item_id") != F.col("b.item_id")))
             .groupBy(F.col("a.item_id").alias("i"), F.col("b.item_id").alias("j")).agg(F.count(F.lit(1)).alias("c")))
    sim = (pairs.join(n.select(F.col("item_id").alias("i"), F.col("n").alias("ni")), "i")
           .join(n.select(F.col("item_id").alias("j"), F.col("n").alias("nj")), "j")
           .withColumn("similarity", F.col("c") / F.sqrt(F.col("ni") * F.col("nj"))))
    w = Window.partitionBy("i").orderBy(F.desc("similarity"), F.desc("c"), F.asc("j"))
    return sim.withColumn("rank", F.row_number().over(w)).where(F.col("rank") <= k).select(
        F.col("i").alias("item_id"), F.col("j").alias("neighbour_id"), "rank", "similarity")


def task_item_cf(a) -> dict:
    from pyspark.sql import functions as F

    from shopmine.conf import ItemCfConf
    from shopmine.recsys.models import item_neighbours

    spark = _spark(a.memory)
    ui = spark.read.parquet(f"{a.dir}/pairs").select("user_id", "item_id", "strength")
    per_user = ui.groupBy("user_id").agg(F.count(F.lit(1)).alias("n"))
    cap = a.cap if a.mode == "capped" else None
    kept = F.least("n", F.lit(cap)) if cap else F.col("n")
    join_rows = per_user.agg(F.sum(kept * (kept - 1) / 2).cast("long")).first()[0]  # self-join output rows
    if a.mode == "capped":
        conf = ItemCfConf(similarity="cosine", neighbours=a.k, max_items_per_user=a.cap, min_co_users=1)
        out = item_neighbours(ui, conf)
    else:
        out = _naive_neighbours(ui.select("user_id", "item_id"), a.k)
    sc = spark.sparkContext
    sc.setJobGroup("bench", "item neighbours", interruptOnCancel=True)
    timer = threading.Timer(a.timeout, sc.cancelJobGroup, args=("bench",))
    timer.start()
    t0 = time.perf_counter()
    try:
        out.write.mode("overwrite").parquet(f"{a.dir}/neighbours_{a.mode}")
        status = "ok"
    except Exception as e:  # noqa: BLE001 - a benchmark records why a variant did not finish
        status = "cancelled after timeout" if time.perf_counter() - t0 >= a.timeout else f"failed: {str(e)[:300]}"
    finally:
        timer.cancel()
    secs = time.perf_counter() - t0
    rows = spark.read.parquet(f"{a.dir}/neighbours_{a.mode}").count() if status == "ok" else None
    return {"mode": a.mode, "cap": cap, "k": a.k, "status": status, "seconds": round(secs, 1),
            "self_join_rows": join_rows, "neighbour_rows": rows, **peak_rss_mb(spark)}


TASKS = {"prep": task_prep, "spark_als": task_spark_als, "implicit_als": task_implicit_als, "item_cf": task_item_cf}


# -- orchestration -----------------------------------------------------------------------------------------------------


def prepared(d: Path, size: int, common: dict) -> dict:
    """The generated pairs at one size: reused when an earlier run of this script left them in --work."""
    done = d / "prep.json"
    if done.exists() and (d / "pairs" / "_SUCCESS").exists():
        return json.loads(done.read_text())
    r = child("prep", dir=d, size=size, **common)
    done.write_text(json.dumps(r))
    return r


def child(task: str, **kw) -> dict:
    return _child(__file__, task, **kw)


def overlap(d: str, k: int) -> dict:
    """Mean share of the naive top-k found in the capped top-k, over items with a naive list (DuckDB on Parquet)."""
    import duckdb

    q = f"""
      with n as (select item_id, neighbour_id from read_parquet('{d}/neighbours_naive/*.parquet')),
           c as (select item_id, neighbour_id from read_parquet('{d}/neighbours_capped/*.parquet')),
           per as (select n.item_id, count(*) as listed, count(c.neighbour_id) as found
                   from n left join c using (item_id, neighbour_id) group by n.item_id)
      select avg(found::double / listed), count(*), avg(case when found = listed then 1.0 else 0.0 end) from per"""
    mean, items, identical = duckdb.sql(q).fetchall()[0]
    return {"k": k, "items": items, "mean_overlap": round(mean, 4), "identical_lists_share": round(identical, 4)}


def main() -> int:
    p = task_parser(__doc__, TASKS)
    p.add_argument("--mode")
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000],
                   help="item-CF event counts")
    p.add_argument("--naive-max", type=int, default=1_000_000,
                   help="largest size the naive self-join is tried at (beyond, its pair count alone rules it out)")
    p.add_argument("--als-size", type=int, default=10_000_000, help="events behind the ALS matrix (0: skip ALS)")
    p.add_argument("--rank", type=int, default=64)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--reg", type=float, default=0.05)
    p.add_argument("--alpha", type=float, default=10.0)
    p.add_argument("--checkpoint", type=int, default=5)
    p.add_argument("--no-bots", action="store_true", help="leave the generated bot users out of the pairs")
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--cap", type=int, default=200)
    p.add_argument("--timeout", type=float, default=900, help="seconds before a naive self-join is cancelled")
    p.add_argument("--capped-timeout", type=float, default=3600, help="seconds before the capped version is cancelled")
    p.add_argument("--als-modes", nargs="+", default=["spark_defaults", "ours"],
                   choices=["spark_defaults", "ours", "ours_memory_only"])
    p.add_argument("--memory", default="8g", help="Spark driver memory (local mode: the whole JVM)")
    p.add_argument("--work", default=None, help="folder for generated Parquet (default: a temp folder)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "recsys_speed.json"))
    a = p.parse_args()
    if a.task:
        return run_task(a, TASKS)

    work = Path(a.work or tempfile.mkdtemp(prefix="shopmine-speed-"))
    common = {"memory": a.memory}
    result: dict = {"machine": "2 cores, 24 GiB (this project's dev/CI machine kind)", "args": vars(a),
                    "item_cf": {}, "als": {}}
    for size in sorted(set(a.sizes)):
        d = work / f"e{size}"
        print(f"item-CF at {size:,} events", flush=True)  # noqa: T201
        r = {"data": prepared(d, size, {**common, **({"no_bots": ""} if a.no_bots else {})})}
        r["capped"] = child("item_cf", dir=d, mode="capped", k=a.k, cap=a.cap, timeout=a.capped_timeout, **common)
        if size <= a.naive_max:
            r["naive"] = child("item_cf", dir=d, mode="naive", k=a.k, cap=a.cap, timeout=a.timeout, **common)
        if r.get("naive", {}).get("status") == "ok":
            r["top_k_overlap"] = overlap(str(d), a.k)
        result["item_cf"][str(size)] = r
        write_json(a.out, result)
    sizes = sorted(int(s) for s in result["item_cf"])
    result["item_cf_growth"] = []
    for lo_n, hi_n in zip(sizes, sizes[1:]):
        lo, hi = result["item_cf"][str(lo_n)], result["item_cf"][str(hi_n)]
        g = {"from": lo_n, "to": hi_n, "events_ratio": round(hi["data"]["events"] / lo["data"]["events"], 2)}
        for mode in ("capped", "naive"):
            if hi.get(mode, {}).get("status") == "ok" and lo.get(mode, {}).get("status") == "ok":
                g[f"{mode}_seconds_ratio"] = round(hi[mode]["seconds"] / lo[mode]["seconds"], 2)
            if mode in hi and mode in lo:
                g[f"{mode}_pairs_ratio"] = round(hi[mode]["self_join_rows"] / lo[mode]["self_join_rows"], 2)
        result["item_cf_growth"].append(g)
    if a.als_size:
        d = work / f"e{a.als_size}"
        print(f"ALS at {a.als_size:,} events", flush=True)  # noqa: T201
        result["als"]["data"] = prepared(d, a.als_size, common)
        hp = {"rank": a.rank, "iters": a.iters, "reg": a.reg, "alpha": a.alpha}
        for mode in ("cg", "cholesky"):
            result["als"][f"implicit_{mode}"] = child("implicit_als", dir=d, mode=mode, **hp)
        for mode in a.als_modes:
            result["als"][f"spark_{mode}"] = child("spark_als", dir=d, mode=mode, checkpoint=a.checkpoint, **hp,
                                                   **common)
        best = min(v["fit_seconds"] for k, v in result["als"].items() if k.startswith("spark_"))
        result["als"]["ratio_best_spark_vs_implicit_cg"] = round(best / result["als"]["implicit_cg"]["fit_seconds"], 2)
        result["als"]["ratio_best_spark_vs_implicit_cholesky"] = round(
            best / result["als"]["implicit_cholesky"]["fit_seconds"], 2)
    write_json(a.out, result)
    print(f"wrote {a.out}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
