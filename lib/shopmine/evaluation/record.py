"""The one writer of ``ops.model_metrics``: every job that evaluates something (recommend, train-predict,
train-cnn, risk, demand) hands its rows here."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from shopmine.io.tables import OPS_MODEL_METRICS

if TYPE_CHECKING:
    from shopmine.io.delta import Lake

# (model, split, k or None, metric, value or None, details): details is a dict, stored as JSON
MetricRow = tuple[str, str, "int | None", str, "float | None", dict]


def write_model_metrics(lake: Lake, run_id: str, job: str, rows: Iterable[MetricRow]) -> int:
    """Replace this run's rows of ``ops.model_metrics`` by ``rows`` in one commit (a retried run converges).
    Returns the number of rows; writes nothing when there are none."""
    now = datetime.now(timezone.utc)
    data = [(run_id, job, model, split, k, metric, None if value is None else float(value),
             json.dumps(details, default=str), now) for model, split, k, metric, value, details in rows]
    if data:
        lake.replace_where(lake.spark.createDataFrame(data, OPS_MODEL_METRICS.schema), OPS_MODEL_METRICS.name,
                           f"run_id = '{run_id}'")
    return len(data)
