"""MLflow tracking of every training run, read back from the lake so that no training code knows about MLflow.

After a job succeeds, :func:`track_run` looks for what the run wrote to ``ops.model_metrics`` and ``ops.artifacts``
(both keyed by the run id, a few hundred rows at most) and mirrors it into MLflow: one parent run per job run
(tags ``shopmine.run_id``, ``shopmine.job``, ``shopmine.conf``; the job's configuration section as params, the
fitted feature pipeline and any other artefact without metrics as artifacts) and one nested run per evaluated model
(its metrics, its tuned hyper-parameters, its saved model). The lake stays the system of record; a tracking server
that cannot be reached costs a warning, never the job.

Tracking URI: ``tracking.uri`` when set, else ``$MLFLOW_TRACKING_URI`` (on Databricks: the workspace), else a SQLite
store at ``<lake.root>/mlflow.db`` with artifacts under ``<lake.root>/mlruns`` (MLflow's file store is in maintenance
mode and refuses to start without an opt-out; ``mlflow ui --backend-store-uri sqlite:///<lake>/mlflow.db`` shows it).
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from pyspark.sql import functions as F

from shopmine.conf import Settings
from shopmine.io.delta import Lake
from shopmine.io.tables import OPS_ARTIFACTS, OPS_MODEL_METRICS

log = logging.getLogger("shopmine.surfaces.tracking")

# The configuration section that parameterises each job's training (logged as params of the parent run).
JOB_SECTIONS = {"featurize": "features", "recommend": "recommend", "train-predict": "predict",
                "train-cnn": "predict.cnn"}


def tracking_uri(settings: Settings) -> str | None:
    """Where runs go; None when the lake is remote and neither the conf nor the environment names a server."""
    if settings.tracking.uri:
        return settings.tracking.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = settings.lake.resolved_root()
    if "://" in root and not root.startswith("file:"):
        return None
    return "sqlite:///" + str(_local_root(root) / "mlflow.db")


def _local_root(root: str) -> Path:
    return Path(root.removeprefix("file://").removeprefix("file:")).resolve()


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts -> dotted keys with string values (MLflow params are flat strings)."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out |= flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    text = json.dumps(value, default=str) if isinstance(value, (list, tuple)) else str(value)
    return {prefix: text[:500]}


def metric_key(split_metric: str, k: int | None) -> str:
    """``precision`` at k 10 -> ``precision_at_10``; MLflow keys allow letters, digits and ``_-. /``."""
    return f"{split_metric}_at_{k}" if k is not None else split_metric


def artifact_model(kind: str, models: list[str]) -> str | None:
    """The evaluated model an artefact belongs to: ``purchase_lr`` -> ``purchase.lr``, ``cnn_adam_ce`` ->
    ``next_category.cnn_adam_ce``; None for artefacts without metrics (e.g. the feature pipeline)."""
    for m in models:
        if m.replace(".", "_") == kind or m.split(".", 1)[-1] == kind:
            return m
    return None


def section(settings: Settings, dotted: str) -> dict:
    value: Any = settings.model_dump(mode="json")
    for part in dotted.split("."):
        value = value[part]
    return value


def collect(lake: Lake, run_id: str) -> tuple[dict, list[dict]]:
    """This run's metrics per model and its artefacts (bounded: models x metrics, one row per saved model)."""
    metrics: dict[str, dict] = defaultdict(lambda: {"metrics": {}, "details": None})
    if lake.exists(OPS_MODEL_METRICS.name):
        for r in lake.read(OPS_MODEL_METRICS.name).where(F.col("run_id") == run_id).collect():
            if r["value"] is not None:
                metrics[r["model"]]["metrics"][metric_key(r["metric"], r["k"])] = r["value"]
                metrics[r["model"]]["details"] = metrics[r["model"]]["details"] or r["details"]
                metrics[r["model"]]["split"] = r["split"]
    arts = []
    if lake.exists(OPS_ARTIFACTS.name):
        arts = [r.asDict() for r in lake.read(OPS_ARTIFACTS.name).where(F.col("run_id") == run_id).collect()]
    return dict(metrics), arts


def track_run(lake: Lake, settings: Settings, job: str, run_id: str) -> str | None:
    """Mirror a finished run into MLflow. Returns the MLflow parent run id (None when disabled or nothing to log)."""
    conf = settings.tracking
    if not conf.enabled:
        return None
    metrics, arts = collect(lake, run_id)
    if not metrics and not arts:
        return None
    uri = tracking_uri(settings)
    if uri is None:
        log.warning("MLflow: lake %s is remote and no tracking URI is set (tracking.uri or MLFLOW_TRACKING_URI): "
                    "run %s not tracked", lake.root, run_id)
        return None
    import mlflow

    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI to the process environment; left there it would send
    # every later run of this process (another lake's jobs, notebooks, tests) to this lake's store.
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        return _log(uri, settings, job, run_id, metrics, arts)
    except Exception as exc:  # noqa: BLE001 - the lake already holds every figure; tracking must not fail the job
        log.warning("MLflow: could not track run %s at %s: %s: %s", run_id, uri, type(exc).__name__,
                    str(exc).splitlines()[0][:300] if str(exc) else "")
        return None
    finally:
        mlflow.set_tracking_uri(previous)


# The identity (device, inode) of each SQLite tracking database this process has written to, by URI.
_sqlite_files: dict[str, tuple[int, int] | None] = {}


def _sqlite_identity(uri: str) -> tuple[int, int] | None:
    try:
        st = Path(uri.removeprefix("sqlite:///")).stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _forget_replaced_sqlite_store(uri: str) -> None:
    """Drop MLflow's cached engine and store for ``uri`` when its database file is not the one this process used.

    MLflow keeps one SQLAlchemy engine (and one store) per URI for the life of the process. A lake removed and made
    again at the same path (a notebook's reset, a benchmark's fresh lake per run) has a new ``mlflow.db``; the
    pooled connection still points at the deleted file, and every write fails ("attempt to write a readonly
    database"). MLflow offers no public way to drop them, hence the private attributes (mlflow is pinned)."""
    if not uri.startswith("sqlite:///") or uri not in _sqlite_files or _sqlite_files[uri] == _sqlite_identity(uri):
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    engine = SqlAlchemyStore._engine_map.pop(uri, None)
    if engine is not None:
        engine.dispose()
    _tracking_store_registry._get_store_with_resolved_uri.cache_clear()
    log.info("MLflow: %s was replaced since this process last used it; reopened", uri)


def _log(uri: str, settings: Settings, job: str, run_id: str, metrics: dict, arts: list[dict]) -> str:
    import mlflow

    _forget_replaced_sqlite_store(uri)
    mlflow.set_tracking_uri(uri)
    name = settings.tracking.experiment
    if uri.startswith("sqlite:") and mlflow.get_experiment_by_name(name) is None:
        # keep the artefacts beside the database in the lake, not in the current directory
        artifacts = _local_root(settings.lake.resolved_root()) / "mlruns"
        mlflow.create_experiment(name, artifact_location=artifacts.as_uri())
    mlflow.set_experiment(name)
    tags = {"shopmine.run_id": run_id, "shopmine.job": job, "shopmine.conf": settings.fingerprint(),
            "shopmine.lake": settings.lake.resolved_root()}
    by_model: dict[str | None, list[dict]] = defaultdict(list)
    for a in arts:
        by_model[artifact_model(a["kind"], list(metrics))].append(a)
    with mlflow.start_run(run_name=f"{job} {run_id}", tags=tags) as parent:
        if job in JOB_SECTIONS:
            mlflow.log_params(flatten(section(settings, JOB_SECTIONS[job])))
        for a in by_model.get(None, []):
            _log_artifact(settings, a)
        for model, m in metrics.items():
            with mlflow.start_run(run_name=model, nested=True, tags=tags | {"shopmine.model": model,
                                                                          "shopmine.split": m.get("split", "")}):
                mlflow.log_metrics(m["metrics"])
                details = json.loads(m["details"]) if m["details"] else {}
                params = details.get("params") or {}
                if isinstance(params, dict) and params:
                    mlflow.log_params(flatten(params))
                for key in ("threshold", "train_rows", "test_rows", "users"):
                    if details.get(key) is not None:
                        mlflow.log_param(key, details[key])
                for a in by_model.get(model, []):
                    _log_artifact(settings, a)
        log.info("MLflow: run %s (%d model run(s), %d artefact(s)) in experiment %r at %s", parent.info.run_id,
                 len(metrics), len(arts), settings.tracking.experiment, uri)
    if uri.startswith("sqlite:///"):
        _sqlite_files[uri] = _sqlite_identity(uri)
    return parent.info.run_id


def _log_artifact(settings: Settings, artefact: dict) -> None:
    """Copy a saved model (file or Spark ML directory) into the run when it is on local disk; always tag its path."""
    import mlflow

    path = str(artefact["path"])
    mlflow.set_tag(f"shopmine.artifact.{artefact['kind']}", path)
    local = Path(path.removeprefix("file:"))
    if not settings.tracking.log_models or "://" in path.removeprefix("file://") or not local.exists():
        return
    if local.is_dir():
        mlflow.log_artifacts(str(local), artifact_path=f"models/{artefact['kind']}")
    else:
        mlflow.log_artifact(str(local), artifact_path=f"models/{artefact['kind']}")
