"""Behaviour predictors on hand-made data: labels and their time cut, class weights, classification metrics against
hand-computed values, behaviour images cell by cell, and a 2-worker Horovod CNN that must beat the majority class."""

from __future__ import annotations

import math
from datetime import date, datetime

import pytest
from chispa import assert_df_equality
from pyspark.sql import Row

from shopmine.conf import CnnConf
from shopmine.evaluation import classification as cm
from shopmine.predict import cnn
from shopmine.predict import datasets as ds

T = date(2025, 1, 10)
H = 2  # label window: Jan 10 and 11


def _ev(spark, rows):
    out = []
    for i, (user, item, cat, etype, ts, bot) in enumerate(rows):
        t = datetime.fromisoformat(ts)
        out.append(Row(event_id=f"e{i:03d}", user_id=user, item_id=item, category_id=cat, event_type=etype,
                       event_time=t, event_date=t.date(), is_bot=bot))
    return spark.createDataFrame(out)


@pytest.fixture(scope="module")
def events(spark):
    return _ev(spark, [
        ("u1", "i1", "c1", "view", "2025-01-08 10:00:00", False),
        ("u1", "i1", "c1", "cart", "2025-01-09 10:00:00", False),
        ("u1", "i1", "c1", "purchase", "2025-01-10 10:00:00", False),   # in the window
        ("u2", "i2", "c1", "view", "2025-01-09 12:00:00", False),
        ("u2", "i3", "c2", "view", "2025-01-11 09:00:00", False),
        ("u2", "i3", "c2", "favourite", "2025-01-11 09:05:00", False),
        ("u3", "i4", "c3", "favourite", "2025-01-05 08:00:00", False),
        ("u3", "i4", "c3", "purchase", "2025-01-12 08:00:00", False),   # after the window: no label
        ("u4", "i5", "c2", "purchase", "2025-01-10 11:00:00", True),    # a bot's purchase makes no label
        ("u5", "i6", "c2", "purchase", "2025-01-09 18:00:00", False),   # before the cutoff: a feature, not a label
        ("u5", "i4", "c3", "purchase", "2025-01-11 07:00:00", False),
        ("u6", "i7", "c2", "purchase", "2025-01-08 18:00:00", False),
        ("u6", "i8", "c2", "cart", "2025-01-10 06:00:00", False),
        ("u6", "i8", "c2", "purchase", "2025-01-10 06:00:00", False),   # same second as the cart: event id decides
    ])


@pytest.fixture(scope="module")
def users(spark):
    return spark.createDataFrame([(u,) for u in ("u1", "u2", "u3", "u4", "u5", "u6")], "user_id string")


def _labels(df):
    return {r["user_id"]: r["label"] for r in df.select("user_id", "label").collect()}


def test_windows_end_at_the_last_date_and_refuse_short_histories():
    w = ds.windows(date(2025, 1, 1), date(2025, 1, 14), 3)
    assert (w.train_cutoff, w.test_cutoff) == (date(2025, 1, 9), date(2025, 1, 12))
    assert ds.windows(date(2025, 1, 1), date(2025, 1, 14), 3, date(2025, 1, 8)).train_cutoff == date(2025, 1, 5)
    with pytest.raises(ValueError, match="too short for a 3-day horizon"):
        ds.windows(date(2025, 1, 1), date(2025, 1, 5), 3)


def test_purchase_labels_use_only_the_window_and_no_bots(events, users):
    assert _labels(ds.purchase_labels(users, events, T, H)) == {
        "u1": 1, "u2": 0, "u3": 0, "u4": 0, "u5": 1, "u6": 1}


def test_next_action_is_the_first_action_in_the_window(events, users):
    # u6 carts and buys in the same second: the event id orders them (cart = 2); u3 and u4 have no labelled action.
    assert _labels(ds.next_action_labels(users, events, T, H)) == {"u1": 3, "u2": 0, "u5": 3, "u6": 2}


def test_next_category_groups_come_from_purchases_before_the_cutoff(spark, events, users):
    groups = ds.category_groups(events, T, 1)
    assert [tuple(r) for r in groups.collect()] == [("c2", 0)]  # c2: two purchases before Jan 10 (u5, u6)
    labels = _labels(ds.next_category_labels(users, events, groups, 1, T, H))
    assert labels == {"u1": 1, "u5": 1, "u6": 0}  # c1 and c3 are "other" (group 1)
    assert ds.class_names("next_category", ["c2"]) == ["c2", "other"]


def test_item_purchase_candidates_are_carted_or_favourited_and_not_bought(spark, events, users):
    inter = spark.createDataFrame([
        ("u1", "i1", 1, 0, 1, 0, 4.0, datetime(2025, 1, 9, 10)),
        ("u3", "i4", 0, 1, 0, 0, 2.0, datetime(2025, 1, 5, 8)),
        ("u2", "i2", 1, 0, 0, 0, 1.0, datetime(2025, 1, 9, 12)),   # viewed only: not a candidate
        ("u5", "i6", 0, 0, 1, 1, 8.0, datetime(2025, 1, 9, 18)),   # already bought: not a candidate
    ], "user_id string, item_id string, n_view long, n_favourite long, n_cart long, n_purchase long, "
       "strength double, last_event_time timestamp")
    got = ds.item_purchase_labels(users, inter, events, T, H)
    rows = {(r["user_id"], r["item_id"]): r for r in got.collect()}
    assert {k: r["label"] for k, r in rows.items()} == {("u1", "i1"): 1, ("u3", "i4"): 0}
    assert rows[("u3", "i4")]["i_days_since"] == 4.0  # Jan 5 -> Jan 9 (the day before the cutoff)
    assert rows[("u1", "i1")]["i_n_cart"] == pytest.approx(math.log(2))


def test_class_weights_balance_the_classes(spark):
    df = spark.createDataFrame([(0,), (0,), (0,), (1,)], "label int")
    w = {r["label"]: r["w"] for r in ds.with_class_weights(df).distinct().collect()}
    assert w == pytest.approx({0: 4 / 6, 1: 2.0})


def test_binary_metrics_match_hand_computed_values(spark):
    labels, ps = [1, 1, 0, 0, 1], [0.9, 0.4, 0.6, 0.2, 0.7]
    pred = spark.createDataFrame([(lab, int(p >= 0.5), p) for lab, p in zip(labels, ps)],
                                 "label int, prediction int, p double")
    m = cm.binary_metrics(pred)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    true_p = [0.9, 0.4, 0.4, 0.8, 0.7]
    assert m["log_loss"] == pytest.approx(-sum(math.log(x) for x in true_p) / 5)
    assert m["roc_auc"] == pytest.approx(5 / 6)  # 5 of the 6 positive/negative pairs ordered right
    assert m["positive_rate"] == pytest.approx(0.6)
    threshold, f1 = cm.best_f1_threshold(pred)
    assert threshold == pytest.approx(0.21) and f1 == pytest.approx(6 / 7)  # P 3/4, R 1 for any t in (0.2, 0.4]
    cal = cm.calibration(pred)
    assert [(c["bin"], c["rows"], c["observed"]) for c in cal] == [(2, 1, 0.0), (4, 1, 1.0), (6, 1, 0.0),
                                                                    (7, 1, 1.0), (9, 1, 1.0)]
    roc = {r["threshold"]: (r["fpr"], r["tpr"]) for r in cm.roc_curve(pred)}
    # p = .9 .7 .4 (positives), .6 .2 (negatives): at t = 0.5 TP 2/3, FP 1/2; at t = 0.3 every positive, FP 1/2
    assert roc[0.5] == pytest.approx((0.5, 2 / 3)) and roc[0.3] == pytest.approx((0.5, 1.0))
    assert roc[0.95] == (0.0, 0.0) and roc[0.1] == (1.0, 1.0) and roc[1.0] == (0.0, 0.0) and roc[0.0] == (1.0, 1.0)
    pts = sorted((r["fpr"], r["tpr"]) for r in cm.roc_curve(pred))
    assert sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in zip(pts, pts[1:])) == pytest.approx(5 / 6)


def test_multiclass_metrics_match_hand_computed_values(spark):
    probs = [[0.7, 0.2, 0.1], [0.2, 0.3, 0.5], [0.1, 0.2, 0.7], [0.2, 0.5, 0.3]]
    pred = spark.createDataFrame([(0, 0, probs[0]), (1, 2, probs[1]), (2, 2, probs[2]), (2, 1, probs[3])],
                                 "label int, prediction int, probs array<double>")
    m = cm.multiclass_metrics(pred)
    assert m["accuracy"] == pytest.approx(0.5)
    assert (m["f1_class_0"], m["f1_class_1"], m["f1_class_2"]) == pytest.approx((1.0, 0.0, 0.5))
    assert m["macro_f1"] == pytest.approx(0.5)
    assert m["macro_precision"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert m["log_loss"] == pytest.approx(-(math.log(0.7) + math.log(0.3) + math.log(0.7) + math.log(0.3)) / 4)


def test_behaviour_images_cell_by_cell(spark):
    ev = _ev(spark, [
        ("u1", "i1", "c2", "view", "2025-01-09 23:00:00", False),      # group 0, newest bucket (column 3), view
        ("u1", "i2", "c9", "cart", "2025-01-09 02:00:00", False),      # other (group 1), 22 h before: column 0
        ("u1", "i2", "c9", "cart", "2025-01-09 02:30:00", False),
        ("u1", "i2", "c9", "view", "2025-01-08 20:00:00", False),      # more than 24 h before: outside
        ("u1", "i2", "c9", "purchase", "2025-01-10 01:00:00", False),  # after the cutoff: outside
        ("u1", "i2", "c2", "view", "2025-01-09 22:00:00", True),       # bot: left out
    ])
    groups = spark.createDataFrame([("c2", 0)], "category_id string, group int")
    conf = CnnConf(time_buckets=4, bucket_hours=6)
    users = spark.createDataFrame([("u1",), ("u_empty",)], "user_id string")
    img = {r["user_id"]: r["image"] for r in cnn.images(ev, users, groups, 1, T, conf).collect()}
    assert cnn.image_shape(1, conf) == (2, 4, 4)
    expected = [0.0] * 32
    expected[(0 * 4 + 3) * 4 + 0] = math.log(2)   # one view
    expected[(1 * 4 + 0) * 4 + 2] = math.log(3)   # two carts
    assert img["u1"] == pytest.approx(expected)
    assert img["u_empty"] == [0.0] * 32


def _learnable(n: int, seed: int):
    """Images where the class is whether the "other" row has any purchase: 70 % class 0, noise elsewhere."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.random((n, 2, 4, 4)).astype("float32") * 0.3
    y = (rng.random(n) < 0.3).astype("int64")
    x[y == 1, 1, :, 3] += 1.0
    return x, y


def _write_parquet(path, x, y, files: int) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.mkdir(parents=True)
    out = []
    for f in range(files):
        sl = slice(f, None, files)
        t = pa.table({"user_id": [f"u{f}_{i}" for i in range(len(y[sl]))],
                      "image": [row.ravel().tolist() for row in x[sl]], "label": y[sl].tolist()})
        pq.write_table(t, path / f"part-{f}.parquet")
        out.append(str(path / f"part-{f}.parquet"))
    return out


def test_horovod_cnn_on_two_workers_beats_the_majority_and_scores_round_trip(spark, tmp_path):
    import numpy as np
    import tensorflow as tf

    x, y = _learnable(480, 1)
    vx, vy = _learnable(120, 2)
    tx, ty = _learnable(200, 3)
    train_files = _write_parquet(tmp_path / "train", x, y, 2)
    valid_files = _write_parquet(tmp_path / "valid", vx, vy, 2)
    conf = CnnConf(workers=2, epochs=6, batch_size=16, learning_rate=0.005)
    result = cnn.train_with_horovod(spark, train_files, valid_files, {"train": len(y), "valid": len(vy)},
                                    (2, 4, 4), 2, conf, "adam_ce", str(tmp_path / "model"))
    assert result["size"] == 2 and result["rows"] == 240  # rank 0 read only its own file
    assert len(result["history"]["val_loss"]) == 6
    rows = [(f"t{i}", tx[i].ravel().tolist(), int(ty[i])) for i in range(len(ty))]
    test = spark.createDataFrame(rows, "user_id string, image array<float>, label int")
    scored = cnn.score(test, str(tmp_path / "model" / "model.keras"), (2, 4, 4)).join(test, "user_id")
    got = {r["user_id"]: (r["predicted_class"], r["probabilities"], r["label"]) for r in scored.collect()}
    accuracy = sum(p == lab for p, _, lab in got.values()) / len(got)
    majority = max(np.mean(ty), 1 - np.mean(ty))
    assert accuracy > majority + 0.1, (accuracy, majority)
    local = tf.keras.models.load_model(str(tmp_path / "model" / "model.keras"), compile=False).predict(tx, verbose=0)
    for i in (0, 7, 199):  # the distributed scores are the model's scores
        assert got[f"t{i}"][1] == pytest.approx(local[i].tolist(), abs=1e-5)


def test_majority_baseline_frame(spark):
    from shopmine.predict import mllib

    train = spark.createDataFrame([(0,), (0,), (1,)], "label int")
    test = spark.createDataFrame([("a", 1), ("b", 0)], "user_id string, label int")
    out = mllib.majority(train, test, 2, False)
    share, rest = 2 / 3, 1 - 2 / 3  # the majority's training share; the rest spread over the other class
    expected = spark.createDataFrame([("a", 1, 0, [share, rest], rest), ("b", 0, 0, [share, rest], rest)],
                                     "user_id string, label int, prediction int, probs array<double>, p double")
    assert_df_equality(out, expected, ignore_nullable=True, ignore_row_order=True, allow_nan_equality=True)


def test_lr_and_nb_pipelines_learn_a_real_signal(spark):
    """Users whose past purchases predict the label: tuned LR and NB must rank test users far better than chance,
    the threshold comes from held-out users, and the explanation names the purchase features first."""
    import random

    from pyspark.sql.types import IntegerType, StructField, StructType

    from shopmine.conf import PredictConf
    from shopmine.io.tables import GOLD_USER_FEATURES
    from shopmine.predict import mllib

    rnd = random.Random(3)
    names = GOLD_USER_FEATURES.schema.fieldNames()

    def users(n: int, prefix: str):
        rows = []
        for i in range(n):
            buys = rnd.choice([0, 0, 0, 1, 2, 5])
            views = rnd.randint(1, 40)
            label = int(buys + rnd.random() * 2 > 2.5)
            values = dict.fromkeys(names)
            values.update(user_id=f"{prefix}{i}", n_events=views + buys, n_view=views, n_purchase=buys, frequency=buys,
                          active_days=rnd.randint(1, 5), sessions=rnd.randint(1, 5), top_category="c1")
            rows.append((*[values[n] for n in names], label))
        fields = [StructField(f.name, f.dataType, True) for f in GOLD_USER_FEATURES.schema.fields]
        return spark.createDataFrame(rows, StructType([*fields, StructField("label", IntegerType())]))

    train, test = users(300, "a"), users(200, "b")
    conf = PredictConf(lr={"reg_param": [0.01, 0.1], "elastic_net": [0.0]})
    for model in ("lr", "nb_multinomial"):
        trained = mllib.train("purchase", model, train, conf)
        m = mllib.evaluate(mllib.predict(trained, test), False)
        assert m["roc_auc"] > 0.85, (model, m)
        assert 0 < trained.threshold < 1
    logp = {(r["class_label"], r["feature"]): r["value"] for r in mllib.explain(trained, train, ["no", "yes"])}
    lift = {f: logp[("yes", f)] - logp[("no", f)] for (_, f) in logp}
    assert max(lift, key=lift.get) in ("n_purchase", "frequency")  # what separates buyers in the data
