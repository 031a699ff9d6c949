"""Saved models and fitted pipelines: written under ``<lake>/models/<kind>/<run>``, registered in ``ops.artifacts``."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

from shopmine.io.delta import Lake
from shopmine.io.tables import OPS_ARTIFACTS


def model_path(lake: Lake, kind: str, run_id: str) -> str:
    return f"{lake.root}/models/{kind}/{run_id}"


def register(lake: Lake, run_id: str, job: str, kind: str, path: str, as_of: date | None, details: dict) -> None:
    row = (run_id, job, kind, path, as_of, datetime.now(timezone.utc), json.dumps(details, default=str))
    lake.append(lake.spark.createDataFrame([row], OPS_ARTIFACTS.schema), OPS_ARTIFACTS.name)


def latest_path(lake: Lake, kind: str) -> str | None:
    """Path of the newest registered artefact of ``kind`` (None when there is none)."""
    if not lake.exists(OPS_ARTIFACTS.name):
        return None
    row = (lake.read(OPS_ARTIFACTS.name).where(f"kind = '{kind}'")
           .orderBy("created_at", ascending=False).select("path").first())
    return row[0] if row else None
