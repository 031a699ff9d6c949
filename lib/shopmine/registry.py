"""The job registry: one :class:`JobSpec` per job, the single definition of what jobs exist, what each reads and
writes, and the pipeline's order.

``spark-submit.sh`` (its job list and ``--help``), ``jobs/pipeline.py`` (the steps), every job's ``--help``
description, the notebooks' stage lookup, the Databricks bundle check and the lineage and command tables of
``README.md`` and ``docs/jobs.md`` (``shopmine.docs``; a job's arguments come from its own parser) all come from
:data:`JOBS`. ``tests/test_pipeline_generated.py`` checks the declared reads and
writes against what the runs of the pipeline record in ``ops.runs``.

Standard library only: ``spark-submit.sh`` runs this file (``python3.11 lib/shopmine/registry.py help`` / ``file JOB``) before the
virtual environment exists.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

EVERY_TABLE = "*"  # reads / writes of the jobs that work on whatever tables exist (report, maintain, the subject jobs)


@dataclass(frozen=True)
class JobSpec:
    name: str                    # the command: ``spark-submit.sh NAME``
    module: str                  # jobs/<module>.py
    description: str             # one line: --help and the lineage tables
    reads: tuple[str, ...]       # Delta tables read (``ops.runs`` input_versions is a subset)
    writes: tuple[str, ...]      # Delta tables written (``ops.runs`` output_versions is a subset)
    in_pipeline: bool = True     # a step of ``pipeline``, in the order of :data:`JOBS`

    @property
    def file(self) -> str:
        return f"jobs/{self.module}.py"

    def entry(self):
        """The job's module under jobs/ (its ``main`` and ``parser``); imported on first use."""
        import importlib

        return importlib.import_module(f"jobs.{self.module}")


_MODEL_OPS = ("ops.model_metrics", "ops.model_explanations", "ops.artifacts")

JOBS: tuple[JobSpec, ...] = (
    JobSpec("generate", "generate",
            "synthetic clickstream (deterministic by generate.seed, sized by generate.events) -> raw files",
            (), ("ops.generator_truth",)),
    JobSpec("ingest", "ingest", "raw files (CSV / JSON lines / Parquet, .gz accepted) of one format -> bronze.events_raw",
            ("bronze.events_raw",), ("bronze.events_raw",)),
    JobSpec("clean", "clean",
            "bronze -> silver.events + silver.quarantine (typing, dedupe, missing values, outliers, bots)",
            ("bronze.events_raw", "silver.events", "ops.clean_batches"),
            ("silver.events", "silver.quarantine", "ops.clean_batches")),
    JobSpec("sessionize", "sessionize",
            "silver.events -> gold.sessions (source session ids kept, else split at an inactivity gap)",
            ("silver.events", "ops.clean_batches", "ops.processed_batches"),
            ("gold.sessions", "ops.processed_batches")),
    JobSpec("featurize", "featurize",
            "silver.events + gold.sessions -> gold.interactions, user/item/category features, feature pipeline",
            ("silver.events", "gold.sessions", "ops.clean_batches", "ops.processed_batches",
             "gold.interactions_daily", "gold.user_daily", "gold.interactions", "gold.user_features"),
            ("gold.interactions_daily", "gold.user_daily", "gold.interactions", "gold.user_features",
             "gold.item_features", "gold.category_features", "ops.processed_batches", "ops.artifacts")),
    JobSpec("profile", "profiles",
            "gold features -> gold.user_profiles (interests, preferences, spending power, RFM segment, lifecycle)",
            ("gold.user_features", "gold.interactions", "gold.item_features"), ("gold.user_profiles",)),
    JobSpec("feedback", "feedback",
            "served recommendations x behaviour after their data cut -> ops.rec_feedback (view / cart / purchase "
            "rates per model and rank)",
            ("gold.recs_topn", "silver.events", "ops.runs", "gold.interactions"), ("ops.rec_feedback",)),
    JobSpec("recommend", "recommend",
            "gold.interactions -> popularity, category, re-visit, ALS, item-CF and a learned ranker over their "
            "candidates, evaluated side by side; top-N to Delta",
            ("gold.interactions", "gold.interactions_daily", "gold.item_features", "gold.recs_topn", "silver.events",
             "gold.item_neighbours"),
            ("gold.item_neighbours", "gold.recs_topn", "ops.model_metrics", "ops.model_explanations")),
    JobSpec("train-predict", "train_predict",
            "time-split labels -> MLlib LR / naive Bayes / GBT and the rules side by side (point-in-time features, "
            "calibrated); the best on validation scores to Delta",
            ("silver.events", "gold.user_daily", "gold.sessions", "gold.interactions_daily"),
            ("gold.propensity_scores", "gold.behaviour_predictions", *_MODEL_OPS)),
    JobSpec("train-cnn", "train_cnn",
            "behaviour images -> Keras CNN trained with Horovod on Spark (next purchase category, 10 classes)",
            ("silver.events", "gold.user_daily", "gold.sessions", "gold.interactions_daily", "gold.behaviour_images"),
            ("gold.behaviour_images", "gold.behaviour_predictions", "ops.model_metrics", "ops.artifacts")),
    JobSpec("risk", "risk",
            "silver events + user features -> gold.risk_flags: bot, scraper, click_farming, abnormal_purchase, "
            "anomaly (score + reasons); precision / recall against the generator's bots",
            ("silver.events", "gold.user_features", "ops.generator_truth", "gold.risk_flags"),
            ("gold.risk_flags", "ops.model_metrics")),
    JobSpec("campaigns", "campaigns",
            "purchase propensity x user profiles -> gold.campaign_targets (per campaign of conf: targets, "
            "expected conversion, holdout group)",
            ("gold.user_profiles", "gold.user_features", "gold.propensity_scores", "gold.risk_flags",
             "ops.model_metrics", "gold.campaign_targets"),
            ("gold.campaign_targets",)),
    JobSpec("demand", "demand",
            "silver purchases -> gold.purchase_patterns (weekday x hour per category) and gold.demand_forecast "
            "(seasonal baseline + damped trend, MAPE on held-out days vs a seasonal naive forecast)",
            ("silver.events", "gold.demand_forecast"),
            ("gold.purchase_patterns", "gold.demand_forecast", "ops.model_metrics")),
    JobSpec("publish", "publish",
            "silver events + gold profiles -> differentially private bi.daily_category_activity and "
            "bi.segment_summary (Laplace noise, epsilon per table, contributions bounded per user)",
            ("silver.events", "gold.item_features", "gold.user_profiles"),
            ("bi.daily_category_activity", "bi.segment_summary")),
    JobSpec("monitor", "monitor",
            "data-quality checks (row counts, quarantine / duplicate / bot / null shares, event mix) and drift (PSI) "
            "of features and model scores between runs -> ops.data_quality, ops.drift; exit 4 on a breach",
            (EVERY_TABLE,), ("ops.data_quality", "ops.drift")),
    JobSpec("report", "report",
            "the lake's tables -> one self-contained HTML report (activity, funnel, cohorts, models, quality, lineage)",
            (EVERY_TABLE,), ()),
    JobSpec("maintain", "maintain",
            "OPTIMIZE (compaction, Z-order by user/item) and VACUUM (maintain.retention_hours) every table",
            (EVERY_TABLE,), ("ops.maintenance",), in_pipeline=False),
    JobSpec("lookup-user", "lookup_user",
            "export every row about one user (raw id + the lake's key) from every table to a JSON file",
            (EVERY_TABLE,), (), in_pipeline=False),
    JobSpec("forget-user", "forget_user",
            "erase one user (raw id + the lake's key) from every table, VACUUM, and audit in ops.erasures",
            (EVERY_TABLE,), (EVERY_TABLE,), in_pipeline=False),
    JobSpec("pipeline", "pipeline",
            "every job in order on generated data (generate ... monitor, report); then a summary of the lake",
            (), (), in_pipeline=False),
)

_BY_NAME = {j.name: j for j in JOBS}


def job(name: str) -> JobSpec:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no job {name!r}; jobs: {', '.join(_BY_NAME)}") from None


def pipeline_steps() -> list[JobSpec]:
    """The jobs ``pipeline`` runs, in order (feedback measures the lists now served before recommend replaces them)."""
    return [j for j in JOBS if j.in_pipeline]


def _tables(names: tuple[str, ...]) -> str:
    return "every table" if names == (EVERY_TABLE,) else ", ".join(f"`{n}`" for n in names) or "—"


def lineage_markdown() -> str:
    """The jobs -> tables table of README.md and docs/jobs.md (generated; tests/test_conf.py checks it is current)."""
    rows = ["| job | reads | writes |", "|---|---|---|"]
    for j in JOBS:
        if j.name != "pipeline":
            rows.append(f"| `{j.name}` | {_tables(j.reads)} | {_tables(j.writes)} |")
    return "\n".join(rows)


def _main(argv: list[str]) -> int:
    """For spark-submit.sh: ``help`` (every job and its description) or ``file JOB`` (exit 1: no such job)."""
    if argv[:1] == ["file"] and len(argv) == 2:
        if argv[1] not in _BY_NAME:
            return 1
        print(_BY_NAME[argv[1]].file)
        return 0
    if argv == ["help"]:
        for j in JOBS:
            print(f"  {j.name:<13} {j.description}")
        return 0
    print("usage: registry.py help | file JOB", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
