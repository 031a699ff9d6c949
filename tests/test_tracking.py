"""MLflow tracking mirrors a run's ops.model_metrics and ops.artifacts rows: parent run per job run, nested run per
model with its metrics, params and saved model; a broken tracking store never fails the job."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from conftest import settings_for


def test_tracking_uri_precedence(tmp_path, monkeypatch):
    from shopmine.conf import load_settings
    from shopmine.surfaces.tracking import tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    local = load_settings("local", [f"lake.root={tmp_path}"])
    assert tracking_uri(local) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking_uri(local) == "http://mlflow.example:5000"
    conf = load_settings("local", [f"lake.root={tmp_path}", "tracking.uri=databricks"])
    assert tracking_uri(conf) == "databricks"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking_uri(load_settings("local", ["lake.root=s3a://bucket/lake"])) is None


def test_helpers():
    from shopmine.surfaces.tracking import artifact_model, flatten, metric_key

    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": "1", "a.c": "[1, 2]", "d": "None"}
    assert metric_key("ndcg", 10) == "ndcg_at_10" and metric_key("roc_auc", None) == "roc_auc"
    models = ["purchase.lr", "purchase.majority", "next_category.cnn_adam_ce"]
    assert artifact_model("purchase_lr", models) == "purchase.lr"
    assert artifact_model("cnn_adam_ce", models) == "next_category.cnn_adam_ce"
    assert artifact_model("feature_pipeline", models) is None


def _fake_run(spark, root: str, run_id: str):
    """A run that evaluated two models and saved one of them (a real, if tiny, Spark ML model)."""
    from pyspark.ml.feature import StandardScaler, VectorAssembler
    from pyspark.ml import Pipeline

    from shopmine.io import artifacts
    from shopmine.io.delta import Lake
    from shopmine.io.tables import OPS_MODEL_METRICS

    lake = Lake(spark, settings_for(root))
    now = datetime.now(timezone.utc)
    details = json.dumps({"params": {"regParam": 0.01, "elasticNetParam": 0.0}, "threshold": 0.31, "test_rows": 40})
    rows = [(run_id, "train-predict", "purchase.lr", "time:x", None, "roc_auc", 0.71, details, now),
            (run_id, "train-predict", "purchase.lr", "time:x", None, "f1", 0.55, details, now),
            (run_id, "train-predict", "purchase.majority", "time:x", None, "f1", 0.0, "{}", now),
            ("other-run", "train-predict", "purchase.lr", "time:x", None, "f1", 0.99, details, now)]
    lake.append(spark.createDataFrame(rows, OPS_MODEL_METRICS.schema), OPS_MODEL_METRICS.name)
    df = spark.createDataFrame([(1.0, 2.0), (3.0, 5.0)], ["a", "b"])
    model = Pipeline(stages=[VectorAssembler(inputCols=["a", "b"], outputCol="v"),
                             StandardScaler(inputCol="v", outputCol="s")]).fit(df)
    path = artifacts.model_path(lake, "purchase_lr", run_id)
    model.write().overwrite().save(path)
    artifacts.register(lake, run_id, "train-predict", "purchase_lr", path, None, {})
    return lake


def test_a_run_is_mirrored_into_mlflow(spark, tmp_path, monkeypatch):
    import mlflow

    from shopmine.surfaces.tracking import track_run

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = str(tmp_path / "lake")
    lake = _fake_run(spark, root, "r1")
    settings = settings_for(root)
    parent_id = track_run(lake, settings, "train-predict", "r1")
    assert parent_id
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path.resolve()}/lake/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["shopmine"], filter_string="tags.`shopmine.run_id` = 'r1'",
                              output_format="list")
    by_name = {r.info.run_name: r for r in runs}
    assert set(by_name) == {"train-predict r1", "purchase.lr", "purchase.majority"}
    parent = by_name["train-predict r1"]
    assert parent.data.params["horizon_days"] == "3" and parent.data.params["cnn.epochs"] == "8"
    lr = by_name["purchase.lr"]
    assert lr.data.tags["mlflow.parentRunId"] == parent_id
    assert lr.data.metrics == {"roc_auc": 0.71, "f1": 0.55}  # the other run's 0.99 is not this run's
    assert lr.data.params == {"regParam": "0.01", "elasticNetParam": "0.0", "threshold": "0.31", "test_rows": "40"}
    files = [f.path for f in mlflow.MlflowClient().list_artifacts(lr.info.run_id, "models/purchase_lr")]
    assert "models/purchase_lr/metadata" in files and "models/purchase_lr/stages" in files
    # the artefacts live in the lake, beside the tracking database
    assert (tmp_path / "lake" / "mlruns" / lr.info.run_id / "artifacts" / "models" / "purchase_lr").is_dir()
    assert by_name["purchase.majority"].data.metrics == {"f1": 0.0}


def test_each_lake_keeps_its_own_runs_within_one_process(spark, tmp_path, monkeypatch):
    """MLflow exports the URI it is given to the environment; tracking must not let one lake's store capture the
    next lake's runs (as it did when the notebooks' lake and the pipeline's lake ran in one test session)."""
    import os

    import mlflow

    from shopmine.surfaces.tracking import track_run

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for name in ("a", "b"):
        root = str(tmp_path / name)
        assert track_run(_fake_run(spark, root, f"run-{name}"), settings_for(root), "train-predict", f"run-{name}")
        assert "MLFLOW_TRACKING_URI" not in os.environ
    for name in ("a", "b"):
        mlflow.set_tracking_uri(f"sqlite:///{tmp_path.resolve()}/{name}/mlflow.db")
        runs = mlflow.search_runs(experiment_names=["shopmine"], output_format="list")
        assert {r.data.tags["shopmine.run_id"] for r in runs} == {f"run-{name}"}
    mlflow.set_tracking_uri(None)


def test_an_unreachable_store_is_a_warning_not_a_failure(spark, tmp_path, caplog):
    from shopmine.surfaces.tracking import track_run

    root = str(tmp_path / "lake")
    lake = _fake_run(spark, root, "r2")
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x")
    settings = settings_for(root, f"tracking.uri=sqlite:///{blocked}/mlflow.db")
    with caplog.at_level(logging.WARNING, logger="shopmine.surfaces.tracking"):
        assert track_run(lake, settings, "train-predict", "r2") is None
    assert "could not track run r2" in caplog.text
    assert track_run(lake, settings_for(root, "tracking.enabled=false"), "train-predict", "r2") is None
    assert track_run(lake, settings_for(root), "recommend", "no-such-run") is None  # nothing to track


def test_a_lake_made_again_in_the_same_process_is_tracked(spark, tmp_path, monkeypatch, caplog):
    """MLflow keeps one database engine per URI for the life of the process. A lake removed and made again at the same
    path (a notebook's reset, a benchmark's fresh lake per run) has a new mlflow.db; the old engine's connection
    still pointed at the deleted file and every later run failed with 'attempt to write a readonly database'."""
    import shutil

    import mlflow

    from shopmine.surfaces.tracking import track_run

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = str(tmp_path / "lake")
    assert track_run(_fake_run(spark, root, "first"), settings_for(root), "train-predict", "first")
    shutil.rmtree(root)
    with caplog.at_level(logging.WARNING, logger="shopmine.surfaces.tracking"):
        assert track_run(_fake_run(spark, root, "again"), settings_for(root), "train-predict", "again")
    assert "could not track" not in caplog.text
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path.resolve()}/lake/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["shopmine"], output_format="list")
    assert {r.data.tags["shopmine.run_id"] for r in runs} == {"again"}  # the new database, and only its run
    assert len(runs) == 3  # the parent and its two model runs
    mlflow.set_tracking_uri(None)
