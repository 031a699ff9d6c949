"""The behaviour CNN: per-user images built in Spark, a Keras network trained with Horovod on the Spark cluster, and
distributed scoring with ``mapInPandas``.

Image: for the ``time_buckets`` buckets of ``bucket_hours`` hours before the cutoff (oldest left), the log1p count of
the user's non-bot views / favourites / carts / purchases per category group (rows: the 9 most purchased categories
before the training cutoff, then "other"). Shape groups × buckets × 4 — event type is the channel axis, so the
first convolution sees type, time and category together. The label is ``next_category`` (``predict.datasets``).

Networks (``predict.cnn.variant``):

* ``adam_ce`` — the product's design: Conv2D(32, 3×3, stride 1, ReLU) → MaxPooling2D(2×2) → Flatten →
  Dense(classes, softmax), Adam, categorical cross-entropy;
* ``sgd_mse`` — the variant described beside it: the same network, SGD at the configured rate, mean squared error;
* ``deep`` — two Conv2D(32/64) blocks before the dense layer (reported beside the others, served only when chosen).

Training (``horovod.spark.run`` with Gloo): each Spark task is one Horovod rank; rank r reads only the Parquet files
r, r + size, … of the image table's train / validation split (listed by delta-rs), pins GPU ``local_rank`` when GPUs
are present (CPU otherwise), wraps the optimiser in ``hvd.DistributedOptimizer`` with the learning rate × size,
broadcasts rank 0's initial weights, averages metrics, halves the rate when validation loss plateaus, and rank 0 alone
writes checkpoints and the final model.
"""

from __future__ import annotations

import math
from datetime import date, datetime, time, timezone

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DoubleType, IntegerType, StringType, StructField, StructType

from shopmine.conf import CnnConf
from shopmine.predict.datasets import ACTIONS

CHANNELS = len(ACTIONS)


def image_shape(n_groups: int, conf: CnnConf) -> tuple[int, int, int]:
    return n_groups + 1, conf.time_buckets, CHANNELS


def images(events: DataFrame, users: DataFrame, groups: DataFrame, n_groups: int, cutoff: date,
           conf: CnnConf) -> DataFrame:
    """(user_id, image) for every row of ``users``: a flat row-major float array of ``image_shape`` (zeros where the
    user did nothing in the window). Built with aggregates and SQL higher-order functions, no Python UDF."""
    rows, cols, _ = image_shape(n_groups, conf)
    size = rows * cols * CHANNELS
    end = int(datetime.combine(cutoff, time(0), tzinfo=timezone.utc).timestamp())
    span = conf.bucket_hours * 3600
    ev = events.where((F.unix_seconds("event_time") < end) & (F.unix_seconds("event_time") >= end - span * cols)
                      & F.col("event_type").isin(*ACTIONS) & ~F.coalesce(F.col("is_bot"), F.lit(False)))
    ev = ev.join(F.broadcast(groups), "category_id", "left")
    bucket = cols - 1 - F.floor((F.lit(end) - F.unix_seconds("event_time")) / span)  # oldest bucket = column 0
    channel = F.array_position(F.array(*[F.lit(a) for a in ACTIONS]), F.col("event_type")) - 1
    cell = ((F.coalesce("group", F.lit(n_groups)) * cols + bucket) * CHANNELS + channel).cast("int")
    cells = ev.groupBy("user_id", cell.alias("i")).agg(F.log1p(F.count(F.lit(1))).cast("float").alias("v"))
    per_user = cells.groupBy("user_id").agg(F.map_from_entries(F.collect_list(F.struct("i", "v"))).alias("m"))
    dense = F.transform(F.sequence(F.lit(0), F.lit(size - 1)), lambda i: F.coalesce(F.element_at("m", i), F.lit(0.0)))
    zeros = F.array_repeat(F.lit(0.0).cast("float"), size)
    return users.select("user_id").join(per_user, "user_id", "left").select(
        "user_id", F.when(F.col("m").isNull(), zeros).otherwise(dense).cast("array<float>").alias("image"))


# -- Keras (imported inside the functions: the driver never needs TensorFlow) ------------------------------------------


def build_model(variant: str, shape: tuple[int, int, int], n_classes: int, learning_rate: float):
    """The network and its (optimiser, loss) for a variant; the optimiser is not yet wrapped for Horovod."""
    import tensorflow as tf

    layers = tf.keras.layers
    net = [layers.Input(shape=shape), layers.Conv2D(32, 3, strides=1, padding="same", activation="relu"),
           layers.MaxPooling2D(2)]
    if variant == "deep":
        net += [layers.Conv2D(64, 3, strides=1, padding="same", activation="relu"), layers.MaxPooling2D(2)]
    net += [layers.Flatten(), layers.Dense(n_classes, activation="softmax")]
    model = tf.keras.Sequential(net)
    if variant == "sgd_mse":
        return model, tf.keras.optimizers.SGD(learning_rate=learning_rate), "mean_squared_error"
    return model, tf.keras.optimizers.Adam(learning_rate=learning_rate), "categorical_crossentropy"


def read_shard(files: list[str], rank: int, size: int, shape, n_classes: int):
    """This rank's rows: files rank, rank + size, …; when there are fewer files than ranks, every rank reads all of
    them and keeps rows rank, rank + size, … Returns (x, one-hot y)."""
    import numpy as np
    import pyarrow.parquet as pq

    mine = files[rank::size] if len(files) >= size else files
    tables = [pq.read_table(f, columns=["image", "label"]) for f in mine]
    images = [np.asarray(img, dtype=np.float32) for t in tables for img in t.column("image").to_pylist()]
    labels = [lab for t in tables for lab in t.column("label").to_pylist()]
    if len(files) < size:
        images, labels = images[rank::size], labels[rank::size]
    x = np.stack(images).reshape((-1, *shape)) if images else np.zeros((0, *shape), np.float32)
    y = np.eye(n_classes, dtype=np.float32)[np.asarray(labels, dtype=np.int64)] if labels else \
        np.zeros((0, n_classes), np.float32)
    return x, y


def horovod_train(train_files: list[str], valid_files: list[str], counts: dict, shape, n_classes: int,
                  conf: dict, variant: str, model_dir: str) -> dict:
    """The function every Horovod rank runs (pickled to the Spark tasks). Returns rank 0's history."""
    import os
    import time

    import horovod.tensorflow.keras as hvd
    import numpy as np
    import tensorflow as tf

    hvd.init()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:  # one GPU per local rank
        tf.config.experimental.set_memory_growth(gpus[hvd.local_rank()], True)
        tf.config.set_visible_devices(gpus[hvd.local_rank()], "GPU")
    else:
        tf.config.threading.set_intra_op_parallelism_threads(max(1, (os.cpu_count() or 2) // hvd.local_size()))
    tf.keras.utils.set_random_seed(conf["seed"] + hvd.rank())
    x, y = read_shard(train_files, hvd.rank(), hvd.size(), shape, n_classes)
    vx, vy = read_shard(valid_files, hvd.rank(), hvd.size(), shape, n_classes)
    batch = conf["batch_size"]
    # Every rank must run the same number of steps (each step is an allreduce): sized by the totals, data repeated.
    steps = max(1, math.ceil(counts["train"] / (batch * hvd.size())))
    vsteps = max(1, math.ceil(counts["valid"] / (batch * hvd.size())))
    epochs = conf["epochs"]
    if conf.get("validation_steps"):  # validate every N steps: N-step "epochs" covering the same number of steps
        epochs = max(1, math.ceil(epochs * steps / conf["validation_steps"]))
        steps = conf["validation_steps"]

    def dataset(a, b):
        if len(a) == 0:  # a rank without rows still takes part in every allreduce
            a, b = np.zeros((1, *shape), np.float32), np.eye(n_classes, dtype=np.float32)[:1]
        return tf.data.Dataset.from_tensor_slices((a, b)).shuffle(len(a), seed=conf["seed"]).repeat().batch(batch)

    model, opt, loss = build_model(variant, shape, n_classes, conf["learning_rate"] * hvd.size())
    model.compile(optimizer=hvd.DistributedOptimizer(opt), loss=loss, metrics=["accuracy"],
                  experimental_run_tf_function=False)
    callbacks = [hvd.callbacks.BroadcastGlobalVariablesCallback(0), hvd.callbacks.MetricAverageCallback(),
                 tf.keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                                      patience=conf["plateau_patience"], verbose=0)]
    if hvd.rank() == 0:
        os.makedirs(model_dir, exist_ok=True)
        callbacks.append(tf.keras.callbacks.ModelCheckpoint(os.path.join(model_dir, "checkpoint.h5"),
                                                            save_weights_only=True))
    started = time.perf_counter()
    hist = model.fit(dataset(x, y), steps_per_epoch=steps, epochs=epochs, validation_data=dataset(vx, vy),
                     validation_steps=vsteps, callbacks=callbacks, verbose=0)
    fit_seconds = time.perf_counter() - started
    if hvd.rank() == 0:
        model.save(os.path.join(model_dir, "model.keras"))
    return {"rank": hvd.rank(), "size": hvd.size(), "rows": int(len(x)), "steps_per_epoch": steps, "epochs": epochs,
            "history": {k: [float(v) for v in vals] for k, vals in hist.history.items()}, "gpu": bool(gpus),
            "fit_seconds": round(fit_seconds, 2), "samples_per_second": round(steps * epochs * batch * hvd.size()
                                                                                / fit_seconds, 1)}


def train_with_horovod(spark, train_files: list[str], valid_files: list[str], counts: dict, shape,
                       n_classes: int, conf: CnnConf, variant: str, model_dir: str) -> dict:
    """Run ``horovod_train`` on ``conf.workers`` Spark tasks (at most the cluster's task slots) with Gloo."""
    import horovod.spark

    workers = max(1, min(conf.workers, spark.sparkContext.defaultParallelism))
    results = horovod.spark.run(horovod_train, args=(train_files, valid_files, counts, shape, n_classes,
                                                     conf.model_dump(), variant, model_dir),
                                num_proc=workers, use_gloo=True, verbose=0)
    return next(r for r in results if r["rank"] == 0)


def train_local(x, y, vx, vy, shape, n_classes: int, conf: CnnConf, variant: str) -> dict:
    """Plain Keras ``fit`` on one process (the benchmark's reference point)."""
    import time

    import tensorflow as tf

    tf.keras.utils.set_random_seed(conf.seed)
    model, opt, loss = build_model(variant, shape, n_classes, conf.learning_rate)
    model.compile(optimizer=opt, loss=loss, metrics=["accuracy"])
    started = time.perf_counter()
    hist = model.fit(x, y, batch_size=conf.batch_size, epochs=conf.epochs, validation_data=(vx, vy), verbose=0)
    secs = time.perf_counter() - started
    return {"history": {k: [float(v) for v in vals] for k, vals in hist.history.items()},
            "fit_seconds": round(secs, 2), "samples_per_second": round(len(x) * conf.epochs / secs, 1)}


# -- distributed scoring ------------------------------------------------------------------------------------------------

_MODELS: dict = {}  # per Python worker: model path -> loaded model (workers are reused, so loaded once per worker)

SCORE_SCHEMA = StructType([StructField("user_id", StringType(), False),
                           StructField("predicted_class", IntegerType(), False),
                           StructField("probability", DoubleType(), False),
                           StructField("probabilities", ArrayType(DoubleType()), False)])


def score(images_df: DataFrame, model_path: str, shape) -> DataFrame:
    """(user_id, predicted_class, probability, probabilities) for every image, with ``mapInPandas``: each Python
    worker loads the model once and predicts whole Arrow batches."""
    def predict(batches):
        import numpy as np
        import pandas as pd
        import tensorflow as tf

        if model_path not in _MODELS:
            _MODELS[model_path] = tf.keras.models.load_model(model_path, compile=False)
        model = _MODELS[model_path]
        for pdf in batches:
            if pdf.empty:
                continue
            x = np.stack([np.asarray(v, dtype=np.float32) for v in pdf["image"]]).reshape((-1, *shape))
            probs = model.predict(x, batch_size=1024, verbose=0).astype(np.float64)
            yield pd.DataFrame({"user_id": pdf["user_id"].values, "predicted_class": probs.argmax(1).astype(np.int32),
                                "probability": probs.max(1), "probabilities": list(probs)})

    return images_df.select("user_id", "image").mapInPandas(predict, SCORE_SCHEMA)

