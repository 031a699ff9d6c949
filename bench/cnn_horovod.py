"""Horovod-on-Spark CNN training speed: samples/s and wall time with 1 and 2 workers vs plain Keras ``fit`` on the same
data, and the overhead of launching through Spark.

    .venv/bin/python bench/cnn_horovod.py [--rows 20000] [--epochs 3] [--batch 64]

Data: behaviour images of the production shape (10 category groups × 24 time buckets × 4 event types), with a
learnable label, written to Parquet files the ranks shard between them. Every run trains the product's network
(Conv2D 32 3×3 → MaxPool 2×2 → Dense softmax, Adam, cross-entropy) for the same epochs. "fit" is the time inside
Keras ``fit`` (rank 0's, validation included); "wall" adds Horovod's launch on Spark (task start, Gloo rendezvous,
TensorFlow import in the rank processes, reading the shards). Writes JSON.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, write_json  # noqa: E402

SHAPE = (10, 24, 4)
CLASSES = 10


def make(n: int, seed: int):
    """Images whose class is the category row with the most purchases (plus noise): a ten-class task a CNN can learn."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = (rng.random((n, *SHAPE)) < 0.05).astype("float32") * rng.random((n, *SHAPE)).astype("float32")
    y = rng.integers(0, CLASSES, n)
    x[np.arange(n), y, rng.integers(0, SHAPE[1], n), 3] += 1.5
    return x, y


def write(d: Path, x, y, files: int) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    d.mkdir(parents=True)
    out = []
    for f in range(files):
        t = pa.table({"user_id": [f"u{i}" for i in range(f, len(y), files)],
                      "image": [r.ravel().tolist() for r in x[f::files]], "label": y[f::files].tolist()})
        pq.write_table(t, d / f"part-{f}.parquet")
        out.append(str(d / f"part-{f}.parquet"))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "cnn_horovod.json"))
    a = p.parse_args()
    import numpy as np

    from shopmine.conf import CnnConf, load_settings
    from shopmine.predict import cnn
    from shopmine.spark import get_spark

    work = Path(tempfile.mkdtemp(prefix="shopmine-cnn-"))
    x, y = make(a.rows, 1)
    vx, vy = make(a.rows // 5, 2)
    train_files, valid_files = write(work / "train", x, y, 4), write(work / "valid", vx, vy, 4)
    conf = CnnConf(epochs=a.epochs, batch_size=a.batch, learning_rate=0.001)
    onehot = np.eye(CLASSES, dtype="float32")
    result: dict = {"rows": a.rows, "epochs": a.epochs, "batch": a.batch, "shape": SHAPE,
                    "machine": "2 cores, 24 GiB, CPU only (no GPU on this machine)"}
    t0 = time.perf_counter()
    local = cnn.train_local(x, onehot[y], vx, onehot[vy], SHAPE, CLASSES, conf, "adam_ce")
    result["keras_fit"] = {"wall_seconds": round(time.perf_counter() - t0, 1), "fit_seconds": local["fit_seconds"],
                           "samples_per_second": local["samples_per_second"],
                           "val_accuracy": local["history"]["val_accuracy"][-1]}
    print("keras fit:", result["keras_fit"], flush=True)  # noqa: T201 - benchmark progress
    t0 = time.perf_counter()
    spark = get_spark(load_settings("local", ["spark.master=local[2]"]))
    result["spark_start_seconds"] = round(time.perf_counter() - t0, 1)
    for workers in (1, 2):
        conf_w = conf.model_copy(update={"workers": workers})
        t0 = time.perf_counter()
        r = cnn.train_with_horovod(spark, train_files, valid_files, {"train": len(y), "valid": len(vy)}, SHAPE,
                                   CLASSES, conf_w, "adam_ce", str(work / f"model{workers}"))
        wall = time.perf_counter() - t0
        result[f"horovod_{workers}"] = {"wall_seconds": round(wall, 1), "fit_seconds": r["fit_seconds"],
                                        "launch_overhead_seconds": round(wall - r["fit_seconds"], 1),
                                        "samples_per_second": r["samples_per_second"],
                                        "val_accuracy": r["history"]["val_accuracy"][-1]}
        print(f"horovod {workers}:", result[f"horovod_{workers}"], flush=True)  # noqa: T201
    write_json(a.out, result)
    print(f"wrote {a.out}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
