"""The user feature transformation as one Spark ML ``Pipeline``, fitted on the training window and saved with the
run so every later model (propensity, next behaviour, CNN inputs) applies exactly the same transformation.

Stages (all Spark ML; nothing hand-written):

1. ``SQLTransformer``: nulls -> 0 (a missing rate means "never happened"), ``log1p`` of heavy-tailed counts and money;
2. ``StringIndexer`` -> ``OneHotEncoder``: the user's top category, one-hot (unseen categories get their own slot);
3. ``VectorAssembler`` -> ``features`` (raw values, named in the vector's ML attributes);
4. ``StandardScaler(withMean, withStd)`` -> ``features_std``: zero mean, unit variance;
5. ``MinMaxScaler`` -> ``features_01``: each feature scaled to [0, 1];
6. ``StandardScaler(withMean, withStd=False)`` on ``features_01`` -> ``features_meannorm``: mean normalisation,
   (x - mean) / (max - min), since centring the [0, 1]-scaled value subtracts (mean - min) / (max - min).
"""

from __future__ import annotations

from datetime import date

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import MinMaxScaler, OneHotEncoder, SQLTransformer, StandardScaler, StringIndexer, VectorAssembler
from pyspark.sql import DataFrame

from shopmine.io import artifacts
from shopmine.io.delta import Lake
from shopmine.vocab import EVENT_TYPES
from shopmine.jobrun import ShopmineError

LOG_COLUMNS = ("n_events", "monetary", "active_days", "frequency", "sessions", "avg_session_seconds",
               "avg_session_events", "avg_viewed_price", "avg_bought_price", "n_categories", "recency_days")
PLAIN_COLUMNS = (*(f"rate_{t}" for t in EVENT_TYPES), "view_to_cart", "cart_to_purchase", "category_entropy",
                 "share_night", "share_morning", "share_afternoon", "share_evening", "weekend_share", "bot_score")
CATEGORICAL_COLUMNS = ("top_category",)
# the one-hot vector columns (their slots are named onehot_<column>_<value>)
ONEHOT_COLUMNS = tuple(f"onehot_{c}" for c in CATEGORICAL_COLUMNS)
OUTPUTS = ("features", "features_std", "features_01", "features_meannorm")
KIND = "feature_pipeline"


def numeric_names() -> list[str]:
    """The numeric slots of ``features``, in vector order (the one-hot slots follow them)."""
    return [f"log1p_{c}" for c in LOG_COLUMNS] + [f"f_{c}" for c in PLAIN_COLUMNS]


def build_feature_pipeline() -> Pipeline:
    """The unfitted pipeline over ``gold.user_features`` columns."""
    selects = [f"log1p(greatest(coalesce(CAST(`{c}` AS DOUBLE), 0D), 0D)) AS `log1p_{c}`" for c in LOG_COLUMNS]
    selects += [f"coalesce(CAST(`{c}` AS DOUBLE), 0D) AS `f_{c}`" for c in PLAIN_COLUMNS]
    selects += [f"coalesce(`{c}`, '(none)') AS `cat_{c}`" for c in CATEGORICAL_COLUMNS]
    prepare = SQLTransformer(statement=f"SELECT *, {', '.join(selects)} FROM __THIS__")
    indexer = StringIndexer(inputCols=[f"cat_{c}" for c in CATEGORICAL_COLUMNS],
                            outputCols=[f"idx_{c}" for c in CATEGORICAL_COLUMNS],
                            handleInvalid="keep", stringOrderType="frequencyDesc")
    onehot = OneHotEncoder(inputCols=indexer.getOutputCols(), outputCols=list(ONEHOT_COLUMNS),
                           handleInvalid="keep", dropLast=True)
    assemble = VectorAssembler(inputCols=numeric_names() + onehot.getOutputCols(), outputCol="features",
                               handleInvalid="error")
    std = StandardScaler(inputCol="features", outputCol="features_std", withMean=True, withStd=True)
    minmax = MinMaxScaler(inputCol="features", outputCol="features_01")
    meannorm = StandardScaler(inputCol="features_01", outputCol="features_meannorm", withMean=True, withStd=False)
    return Pipeline(stages=[prepare, indexer, onehot, assemble, std, minmax, meannorm])


def vector_names(df: DataFrame, column: str = "features") -> list[str]:
    """The name of each slot of an assembled vector column, from its ML attribute metadata."""
    attrs = df.schema[column].metadata.get("ml_attr", {}).get("attrs", {})
    slots = [a for group in attrs.values() for a in group]
    return [a["name"] for a in sorted(slots, key=lambda a: a["idx"])]


def transformed_columns() -> list[str]:
    """Columns the fitted pipeline adds (drop them to get back the input frame)."""
    return (numeric_names() + [f"{p}_{c}" for c in CATEGORICAL_COLUMNS for p in ("cat", "idx", "onehot")]
            + list(OUTPUTS))


def fit_and_save(lake: Lake, train: DataFrame, run_id: str, job: str, as_of: date | None) -> tuple[PipelineModel, str]:
    """Fit on ``train`` (the training window's user features), save under ``<lake>/models/feature_pipeline/<run>``
    and register it in ``ops.artifacts``. Returns the model and its path."""
    model = build_feature_pipeline().fit(train)
    path = artifacts.model_path(lake, KIND, run_id)
    model.write().overwrite().save(path)
    artifacts.register(lake, run_id, job, KIND, path, as_of,
                       {"inputs": list(LOG_COLUMNS + PLAIN_COLUMNS + CATEGORICAL_COLUMNS), "outputs": list(OUTPUTS)})
    return model, path


def latest_path(lake: Lake, kind: str = KIND) -> str | None:
    """Path of the newest registered artefact of ``kind`` (None when there is none)."""
    return artifacts.latest_path(lake, kind)


def load_feature_pipeline(lake: Lake) -> PipelineModel:
    """The fitted feature pipeline of the latest ``featurize`` run."""
    path = latest_path(lake)
    if path is None:
        raise ShopmineError("no fitted feature pipeline in ops.artifacts: run `spark-submit.sh featurize` first")
    return PipelineModel.load(path)
