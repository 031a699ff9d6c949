"""Configuration: ``conf/base.yaml`` + one overlay (``local`` / ``cluster`` / a path) + ``--conf key=value`` overrides.

The pydantic models below are the one definition of every key: its type, bounds, default and description.
``conf/base.yaml`` and the key table of docs/configuration.md are generated from them (:func:`default_yaml`,
``python -m shopmine.docs``), so ``Settings()`` is exactly what a job runs with before overlays. An unknown key, or a
value of the wrong type, stops the job at start with a :class:`ConfError` naming the dotted key and the file (or
``--conf``) that set it.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shopmine.io.sources import FORMATS as BUILT_IN_FORMATS
from shopmine.recsys import registry as recommenders

# The checkout: where conf/ is and what a relative lake.root means. spark-submit.sh says so explicitly, because on a
# cluster the driver imports this module from the zip it ships with --py-files, not from the checkout.
PROJECT_DIR = Path(os.environ.get("SHOPMINE_PROJECT_DIR") or Path(__file__).resolve().parents[2])
CONF_DIR = Path(os.environ.get("SHOPMINE_CONF_DIR", PROJECT_DIR / "conf"))


class ConfError(ValueError):
    """A configuration problem, with a message fit to show the user as is."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LakeConf(_Strict):
    root: str = Field("lake", description="relative paths are resolved against the project directory")
    catalog: str | None = Field(
        None, description="e.g. \"main.shopmine\": tables become metastore tables catalog.schema_layer_name")

    def resolved_root(self) -> str:
        """The lake root as a URI or absolute path (relative paths resolve against the project directory)."""
        if "://" in self.root or self.root.startswith("dbfs:"):
            return self.root.rstrip("/")
        path = Path(self.root)
        return str(path if path.is_absolute() else (PROJECT_DIR / path).resolve())


class SparkConf(_Strict):
    app_name: str = "shopmine"
    master: str | None = Field(
        None, description="null: leave it to spark-submit / the notebook; \"local[*]\" etc. otherwise")
    driver_memory: str = "4g"
    shuffle_partitions: int | None = Field(default=None, ge=1, description="null: 2 x the cores Spark reports")
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"] = "WARN"
    extra: dict[str, str] = Field({}, description="any further spark.* settings, passed through verbatim")


class GenerateConf(_Strict):
    seed: int = 42
    events: int = Field(200_000, ge=100)
    users: int = Field(4_000, ge=10)
    items: int = Field(6_000, ge=10)
    categories: int = Field(60, ge=2)
    brands: int = Field(300, ge=1)
    days: int = Field(14, ge=1)
    start: date = date(2025, 11, 1)
    zipf_exponent: float = Field(1.1, gt=0)
    taste_share: float = Field(
        0.6, ge=0, le=1, description="share of a session's views drawn from the category it follows (one of the "
        "user's 3 liked ones); the rest from the whole catalogue")
    revisit_share: float = Field(
        0.15, ge=0, le=0.9, description="share of views that return to one of the user's 4 liked items (x2.5 when "
        "the view leads to a cart, x4 to a purchase)")
    bot_share: float = Field(0.01, ge=0, le=0.5, description="share of users that are bots")
    json_share: float = Field(0.2, ge=0, le=1, description="share of events written as JSON lines instead of CSV")
    exact_duplicate_share: float = Field(0.01, ge=0, le=0.5)
    near_duplicate_share: float = Field(0.01, ge=0, le=0.5)
    malformed_share: float = Field(
        0.005, ge=0, le=0.5, description="share of rows corrupted, spread over every malformed class")
    files: int = Field(4, ge=1, description="CSV part files (JSON gets about json_share of that)")
    pii: bool = Field(False, description="add made-up email / phone / IP columns (exercises privacy.pii)")


class IngestConf(_Strict):
    max_bad_width_share: float = Field(
        0.5, gt=0, le=1,
        description="a file where more lines than this have the wrong column count is the wrong format")


class DedupeConf(_Strict):
    near_window_seconds: int = Field(2, ge=0)
    near_types: list[str] = ["view", "favourite", "cart", "remove_from_cart", "search"]


class MissingPolicy(_Strict):
    strategy: Literal["keep", "drop", "mean", "median", "constant", "interpolate"] = "keep"
    value: float | None = None

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and v != v:  # NaN
            raise ValueError("must be a number")
        return v


class OutlierConf(_Strict):
    action: Literal["flag", "cap", "quarantine"] = Field("flag", description="flag | cap | quarantine")
    mad_threshold: float = Field(
        8.0, gt=0, description="robust bound: median +- threshold * 1.4826 * MAD, per category")
    min_category_events: int = Field(20, ge=1, description="categories with fewer priced events use the global bounds")


class LimitsConf(_Strict):
    max_price: float = Field(1_000_000.0, gt=0)
    max_quantity: int = Field(10_000, ge=1)


class BotConf(_Strict):
    max_events_per_minute: int = Field(60, ge=1)
    max_events_per_day: int = Field(5_000, ge=1)
    min_events_for_regularity: int = Field(50, ge=3)
    max_gap_cv: float = Field(
        0.1, ge=0, description="coefficient of variation of inter-event gaps below this = machine regularity")


class CleanConf(_Strict):
    dedupe: DedupeConf = DedupeConf()
    missing: dict[Literal["price", "quantity"], MissingPolicy] = Field(
        {"price": MissingPolicy(strategy="keep"), "quantity": MissingPolicy(strategy="constant", value=1)},
        description="per column: keep | drop | mean | median | constant | interpolate")
    outliers: OutlierConf = OutlierConf()
    limits: LimitsConf = LimitsConf()
    bots: BotConf = BotConf()
    future_tolerance_hours: int = Field(24, ge=0)


def _unset_declaration(field, value: Any) -> bool:
    """A layout key of ``SourceConf`` still at its default: not rendered, not counted as declared."""
    return bool((field.json_schema_extra or {}).get("declaration")) and value == field.default


def _declares(default: Any, description: str) -> Any:
    """A key that declares a source's layout (``sources.<new name>``): left out of base.yaml while unset."""
    return Field(default, description=description, json_schema_extra={"declaration": True})


class SourceConf(_Strict):
    """Per input format: how its naive times and time range are read; for a format of your own (a name that is not
    built in), also its layout -- the keys of ``shopmine.io.sources.SourceFormat`` (docs/sources.md)."""

    timezone: str = "UTC"
    min_time: date = date(2000, 1, 1)
    description: str | None = _declares(None, "one line on what the export is")
    columns: list[str] | None = _declares(
        None, "the raw columns in file order (the header, when there is one); for JSON lines the keys of a line")
    json_lines: bool = _declares(False, "every file is JSON lines, one object per line (fields name its keys)")
    records: str | None = _declares(
        None, "nested JSON lines: the key (one of columns) of each line's array of events; every record becomes a "
              "row (json_lines implied)")
    record_columns: list[str] = _declares([], "nested JSON lines: the keys of a record, which fields may map to")
    has_header: bool = _declares(False, "the first line of every file is the header")
    delimiter: str = _declares(",", "one character; tab as \"\\t\"")
    fields: dict[str, str] | None = _declares(
        None, "canonical field -> raw column; user_id, item_id and event_time are needed, event_type unless "
              "constant_event_type; two fields may share a column (user_id and session_id: anonymous sessions)")
    event_types: dict[str, str] | None = _declares(None, "raw event type (any case) -> canonical event type")
    constant_event_type: str | None = _declares(None, "every line is this event type (no event_type column)")
    optional_trailing: list[str] = _declares([], "extra columns some files carry after columns")
    user_id_kind: Literal["integer", "code"] = _declares("integer", "integer ids ('17850.0' -> '17850') or codes")
    item_id_kind: Literal["integer", "code"] = _declares("integer", "as user_id_kind")
    category_id_kind: Literal["integer", "code"] = _declares(
        "integer", "integer categories, or codes (letters, digits, dots) kept as they are")
    time_kind: Literal["auto", "epoch_s", "epoch_ms", "epoch_us", "text"] = _declares(
        "auto", "epoch units, auto (from the magnitude), or text (ISO-8601 with T or space, fractions, Z, an offset "
                "or ' UTC'; naive times in timezone)")
    time_format: str | None = _declares(
        None, "a Spark datetime pattern for text times, e.g. 'dd.MM.yyyy HH:mm' (naive: in timezone)")

    def declares(self) -> dict[str, Any]:
        """The layout keys set away from their defaults."""
        return {k: getattr(self, k) for k, f in type(self).model_fields.items()
                if (f.json_schema_extra or {}).get("declaration") and not _unset_declaration(f, getattr(self, k))}

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v


class FeaturesConf(_Strict):
    session_gap_minutes: int = Field(
        30, ge=1, description="inactivity gap that ends a session (sources with their own session id keep it)")
    half_life_days: float = Field(
        7.0, gt=0, description="interaction strength halves every this many days before features.as_of")
    event_weights: dict[Literal["view", "search", "favourite", "cart", "remove_from_cart", "purchase", "review"],
                        float] = {"view": 1.0, "search": 0.0, "favourite": 2.0, "cart": 3.0,
                                  "remove_from_cart": 0.0, "purchase": 5.0, "review": 1.0}
    exclude_bots: bool = Field(
        True, description="bot-flagged events do not count in interactions, item and category features")
    window_days: int | None = Field(None, ge=1, description="null: all history up to as_of; N: only the last N days")
    trend_window_days: int = Field(7, ge=1, description="item/category trend = last N days vs the N days before")
    as_of: date | None = Field(
        None, description="null: the last event date in the lake; a date: features use events up to that day only")

    @field_validator("event_weights")
    @classmethod
    def _non_negative(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, w in v.items() if w < 0]
        if bad:
            raise ValueError(f"weights must be >= 0 (implicit feedback is a confidence), got negative for {bad}")
        return v


class ProfileConf(_Strict):
    top_n: int = Field(5, ge=1, le=50, description="top categories / brands kept per user")
    new_user_days: int = Field(7, ge=1, description="first seen within this many days of as_of: lifecycle 'new'")
    active_days: int = Field(
        7, ge=1, description="last seen within: 'active'; within lapsing_days: 'lapsing'; else 'churned'")
    lapsing_days: int = Field(30, ge=1)
    quantile_accuracy: int = Field(
        10_000, ge=100, description="percentile_approx accuracy for spending tiers and RFM scores")

    @model_validator(mode="after")
    def _ordered(self) -> "ProfileConf":
        if self.lapsing_days < self.active_days:
            raise ValueError(f"lapsing_days ({self.lapsing_days}) must be >= active_days ({self.active_days})")
        return self


RANKER_SOURCES = ("revisit", "covisit", "category_popularity", "als", "popularity")


class AlsConf(_Strict):
    rank: list[int] = [32]
    reg_param: list[float] = [0.05]
    alpha: list[float] = [10.0]
    max_iter: int = Field(10, ge=1)
    checkpoint_interval: int = Field(5, ge=1)
    blocks: int | None = Field(None, ge=1)

    @field_validator("rank", "reg_param", "alpha")
    @classmethod
    def _grid(cls, v: list) -> list:
        if not v or any(x <= 0 for x in v):
            raise ValueError("a non-empty list of positive values (the tuning grid)")
        return v


class ItemCfConf(_Strict):
    similarity: Literal["cosine", "jaccard", "conditional"] = "cosine"
    neighbours: int = Field(50, ge=1, le=1000)
    max_items_per_user: int = Field(200, ge=2)
    min_co_users: int = Field(1, ge=1)
    damping: float = Field(0.5, ge=0, le=1)


class ServedNegativesConf(_Strict):
    enabled: bool = Field(
        False, description="needs split: time (negatives only from behaviour before the held-out days)")
    weight: float = Field(1.0, gt=0, description="strength -weight: preference 0 with confidence 1 + alpha * weight")
    window_days: int = Field(7, ge=1, description="the user came back within this many days after the list's data cut")


class RankerConf(_Strict):
    """The two-stage ``ranker``: candidates per source, then a gradient-boosted tree (see ``recsys/ranker.py``)."""

    cutoffs: int = Field(
        4, ge=1, description="training cutoffs one day apart; the latest label window ends where the test starts")
    sources: dict[Literal[RANKER_SOURCES], int] = Field(  # type: ignore[valid-type]
        {"revisit": 100, "covisit": 50, "category_popularity": 30, "popularity": 30},
        description="candidates per user and source (als: ALS fitted at every cutoff, off by default)")
    seed_items: int = Field(20, ge=1, description="covisit: neighbours of the user's 20 most recent items ...")
    covisit_neighbours: int = Field(30, ge=1, description="... 30 per item, by co-occurrence within a user-day")
    basket_items: int = Field(50, ge=2, description="covisit: at most 50 items per user-day basket")
    popularity_days: int = Field(
        3, ge=1, description="popularity: distinct users over the last 3 days before the cutoff")
    negatives_per_user: int = Field(
        50, ge=1, description="training rows: every positive, at most 50 negatives per user and cutoff")
    max_iter: int = Field(20, ge=1, description="GBTClassifier trees (more overfit on Taobao, bench/README.md)")
    max_depth: int = Field(5, ge=1, le=30)
    step_size: float = Field(0.1, gt=0, le=1)
    subsampling_rate: float = Field(0.8, gt=0, le=1)

    @field_validator("sources")
    @classmethod
    def _some_source(cls, v: dict[str, int]) -> dict[str, int]:
        if any(n < 0 for n in v.values()) or not any(v.values()):
            raise ValueError("counts per source must be >= 0, and at least one source must propose candidates")
        return v


class RecommendConf(_Strict):
    split: Literal["time", "leave_last", "stratified"] = Field(
        "time", description="time: last holdout_days held out | leave_last: each user's last N items | stratified")
    holdout_days: int = Field(2, ge=1)
    leave_last_n: int = Field(1, ge=1)
    test_ratio: float = Field(
        0.25, gt=0, lt=1, description="stratified: share of each user's items held out (random, by seed)")
    relevant_types: list[Literal["view", "search", "favourite", "cart", "remove_from_cart", "purchase",
                                 "review"]] = Field(["view", "favourite", "cart", "purchase", "review"],
                                                    description="held-out events that count as relevant")
    ks: list[int] = Field([10, 20], description="metric cut-offs")
    exclude: Literal["bought", "seen", "none"] = Field(
        "bought", description="bought | seen | none: items of the user's history never recommended")
    models: list[str] = Field(list(recommenders.BUILT_IN),
                              description="the recommenders evaluated side by side (names of recsys/registry.py)")
    select_metric: Literal["precision", "recall", "ndcg", "map", "hit_rate"] = Field(
        "ndcg", description="the served model is the best on validation by this metric at select_k ...")
    select_k: int = Field(10, ge=1)
    serve_model: str | None = Field(
        None, description="... unless named here")
    top_n: int = Field(20, ge=1, le=1000, description="length of the served lists in gold.recs_topn")
    candidate_buffer: int = Field(50, ge=0, description="extra candidates per user before excluded items are removed")
    seed: int = 7
    als: AlsConf = AlsConf()
    item_cf: ItemCfConf = ItemCfConf()
    served_negatives: ServedNegativesConf = Field(
        ServedNegativesConf(),
        description="feedback loop: items served earlier that returning users ignored train ALS as negatives")
    ranker: RankerConf = Field(
        RankerConf(), description="two stages: candidates per source, then a GBTClassifier over point-in-time features")

    @field_validator("models")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [n for n in v if n not in recommenders.names()]
        if unknown:
            raise ValueError(f"unknown recommender(s) {', '.join(unknown)}; known: {', '.join(recommenders.names())}")
        if not v or len(set(v)) != len(v):
            raise ValueError("a non-empty list of distinct recommender names")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "RecommendConf":
        if self.split != "time":
            timed = [n for n in self.models if recommenders.recommender_class(n).needs_time_split]
            if timed:
                raise ValueError(f"{', '.join(timed)} need(s) split: time (trained on cutoffs before the held-out "
                                 "days); drop them from recommend.models for other splits")
        if not self.ks or any(k < 1 for k in self.ks):
            raise ValueError("ks must be a non-empty list of positive cut-offs")
        if self.select_k not in self.ks:
            raise ValueError(f"select_k ({self.select_k}) must be one of ks {self.ks}")
        if self.served_negatives.enabled and self.split != "time":
            raise ValueError("served_negatives needs split: time (the negatives come from behaviour before the "
                             "held-out days; other splits have no such boundary)")
        if self.serve_model is not None and self.serve_model not in self.models:
            raise ValueError(f"serve_model {self.serve_model!r} is not among models {self.models}")
        return self


PREDICT_TASKS = ("purchase", "item_purchase", "next_action", "next_category")
PREDICTORS = ("lr", "nb_multinomial", "nb_bernoulli", "gbt")  # gbt: binary tasks only


class LrConf(_Strict):
    reg_param: list[float] = [0.01, 0.1]
    elastic_net: list[float] = [0.0]
    max_iter: int = Field(100, ge=1)

    @field_validator("reg_param", "elastic_net")
    @classmethod
    def _grid(cls, v: list[float]) -> list[float]:
        if not v or any(x < 0 for x in v):
            raise ValueError("a non-empty list of non-negative values (the tuning grid)")
        return v


class NbConf(_Strict):
    smoothing: list[float] = [1.0]


class GbtConf(_Strict):
    """``GBTClassifier`` of the binary behaviour tasks (``predict.models: gbt``)."""

    max_iter: int = Field(30, ge=1)
    max_depth: list[int] = [4]                 # tuning grid
    step_size: float = Field(0.1, gt=0, le=1)
    subsampling_rate: float = Field(0.8, gt=0, le=1)

    @field_validator("max_depth")
    @classmethod
    def _depths(cls, v: list[int]) -> list[int]:
        if not v or any(d < 1 or d > 30 for d in v):
            raise ValueError("a non-empty list of depths between 1 and 30 (the tuning grid)")
        return v


class CnnConf(_Strict):
    workers: int = Field(2, ge=1, description="Horovod processes (Spark tasks); one GPU each when present")
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(0.001, gt=0, description="per worker; scaled by the number of workers")
    variant: Literal["adam_ce", "sgd_mse", "deep"] = Field(
        "adam_ce",
        description="adam_ce: Adam + cross-entropy; sgd_mse: SGD + mean squared error; deep: two conv blocks")
    compare: list[Literal["adam_ce", "sgd_mse", "deep"]] = Field(
        ["sgd_mse"], description="variants also trained and reported beside the served one")
    time_buckets: int = Field(24, ge=2, description="image columns: the last 24 buckets ...")
    bucket_hours: int = Field(6, ge=1, description="... of 6 hours before the cutoff")
    validation_steps: int | None = Field(None, ge=1, description="validate every N steps (null: once per epoch)")
    plateau_patience: int = Field(
        2, ge=1, description="epochs without val_loss improvement before the learning rate is halved")
    seed: int = 7


class PredictConf(_Strict):
    horizon_days: int = Field(
        3, ge=1, description="labels: what happens in the D days after the cutoff; features: events before it")
    test_cutoff: date | None = Field(
        None, description="null: the test labels are the last D days, the train labels the D days before")
    train_cutoffs: int = Field(
        3, ge=1,
        description="training windows one day apart (rows from each), the latest ending where the test one starts")
    tasks: list[Literal[PREDICT_TASKS]] = list(PREDICT_TASKS)  # type: ignore[valid-type]
    models: list[Literal[PREDICTORS]] = Field(  # type: ignore[valid-type]
        list(PREDICTORS), description="gbt: binary tasks only; the rules are always evaluated beside")
    category_groups: int = Field(
        9, ge=1, description="next_category: the 9 most purchased categories + \"other\" = 10 classes")
    validation_share: float = Field(
        0.2, gt=0, lt=1, description="training users held out to choose the decision threshold")
    train_ratio: float = Field(
        0.75, gt=0, lt=1, description="share of the other users that fits each grid point (hashed split)")
    class_weights: bool = Field(True, description="weight each class by N / (K n_class)")
    seed: int = 42
    calibration: Literal["isotonic", "none"] = Field(
        "isotonic", description="binary scores: isotonic regression fitted on the validation users (none: raw)")
    select_by: Literal["roc_auc", "pr_auc"] = Field(
        "roc_auc", description="served binary score: the model or rule with the best validation roc_auc | pr_auc")
    lr: LrConf = Field(LrConf(), description="tuning grids")
    nb: NbConf = NbConf()
    gbt: GbtConf = GbtConf()
    cnn: CnnConf = CnnConf()


class MaintainConf(_Strict):
    tables: list[str] = Field([], description="empty: every table that exists")
    optimize: bool = True
    zorder: dict[str, list[str]] = Field(
        {"silver.events": ["user_id", "item_id"], "gold.interactions_daily": ["user_id", "item_id"],
         "gold.interactions": ["user_id", "item_id"], "gold.recs_topn": ["user_id"],
         "gold.propensity_scores": ["user_id"]},
        description="table -> columns to cluster by; every other table is compacted only")
    vacuum: bool = True
    retention_hours: float = Field(
        168.0, ge=0, description="files older than this and no longer referenced are deleted (time travel ends there)")


class DriftTableConf(_Strict):
    columns: list[str]
    by: list[str] = []

    @field_validator("columns")
    @classmethod
    def _some(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("list at least one column to monitor")
        return v


class DriftConf(_Strict):
    bins: int = Field(
        10, ge=2, le=100, description="numeric columns: deciles of the reference version (+ a bucket for nulls)")
    categories: int = Field(
        20, ge=1, le=1000, description="string columns: the reference's most frequent values, the rest as \"other\"")
    min_rows: int = Field(100, ge=1, description="fewer rows on either side: not computed (status skipped)")
    warn_psi: float = Field(
        0.1, gt=0, description="the usual reading: < 0.1 stable, 0.1-0.25 some shift, > 0.25 a real shift")
    fail_psi: float = Field(0.25, gt=0)
    accuracy: int = Field(10000, ge=10, description="percentile_approx accuracy for the bin edges")
    tables: dict[str, DriftTableConf] = Field(
        {"gold.user_features": DriftTableConf(columns=["n_events", "sessions", "monetary", "frequency",
                                                       "category_entropy", "avg_viewed_price", "share_night",
                                                       "top_category"]),
         "gold.item_features": DriftTableConf(columns=["n_view", "n_purchase", "conversion_rate", "price_mean",
                                                       "trend"]),
         "gold.propensity_scores": DriftTableConf(columns=["score"], by=["task", "model"]),
         "gold.behaviour_predictions": DriftTableConf(columns=["probability", "predicted_label"],
                                                      by=["task", "model"])},
        description="table -> columns (numeric or string), optionally per segment (by)")

    @model_validator(mode="after")
    def _ordered(self) -> "DriftConf":
        if self.fail_psi < self.warn_psi:
            raise ValueError(f"fail_psi ({self.fail_psi}) must be at least warn_psi ({self.warn_psi})")
        return self


class QualityConf(_Strict):
    max_quarantine_share: float = Field(0.05, ge=0, le=1)
    max_duplicate_share: float = Field(0.1, ge=0, le=1, description="exact + near duplicates dropped / lines in")
    max_bot_share: float = Field(0.5, ge=0, le=1, description="bot-flagged accepted events / accepted events")
    row_count_ratio: tuple[float, float] = Field(
        (0.5, 2.0), description="accepted rows per batch vs the median of earlier batches")
    max_null_share: dict[str, float] = Field(
        {"item_id": 0.05},
        description="silver.events column -> bound (sources differ: Taobao has no price, RetailRocket no category)")
    mix_warn_psi: float = Field(0.1, gt=0, description="event-type mix of the new batches vs earlier ones (PSI)")
    mix_fail_psi: float = Field(0.25, gt=0)

    @model_validator(mode="after")
    def _ranges(self) -> "QualityConf":
        lo, hi = self.row_count_ratio
        if not 0 <= lo <= 1 <= hi:
            raise ValueError(f"row_count_ratio must be [low <= 1, high >= 1], got [{lo}, {hi}]")
        bad = {k: v for k, v in self.max_null_share.items() if not 0 <= v <= 1}
        if bad:
            raise ValueError(f"max_null_share values must lie in [0, 1]: {bad}")
        return self


class MonitorConf(_Strict):
    fail_on: Literal["fail", "warn", "never"] = Field(
        "fail", description="exit 4 when a check ends in this status or worse: fail | warn | never")
    quality: QualityConf = Field(
        QualityConf(), description="checked on the batches of the latest clean run (history: every earlier batch)")
    drift: DriftConf = Field(
        DriftConf(),
        description="PSI of each column: this run's table version vs the version the last monitor run read")


class ScraperConf(_Strict):
    min_views: int = Field(200, ge=1)
    min_view_share: float = Field(0.99, ge=0, le=1)
    min_session_events: float = Field(100, ge=1, description="average events per session")


class ClickFarmingConf(_Strict):
    window_minutes: int = Field(60, ge=1)
    min_accounts: int = Field(5, ge=2, description="distinct new accounts acting on the item within one window")
    min_new_share: float = Field(
        0.8, ge=0, le=1, description="... and at least this share of the item's actors in that window")
    new_account_days: int = Field(2, ge=0, description="first seen at most this many days before the event")


class AbnormalPurchaseConf(_Strict):
    min_history: int = Field(3, ge=2, description="purchases the user needs before their history is a yardstick")
    min_ratio: float = Field(10.0, ge=1, description="at least this many times the user's median ...")
    z_threshold: float = Field(6.0, gt=0, description="... and this many robust z-scores above it")


class AnomalyConf(_Strict):
    columns: list[str] = ["n_events", "avg_session_events", "rate_view", "n_categories"]
    log_columns: list[str] = ["n_events", "avg_session_events", "n_categories"]
    z_threshold: float = Field(4.0, gt=0)
    min_events: int = Field(
        20, ge=1,
        description=("users with fewer events are scored against everyone but never flagged (rates of two or three "
                     "events are noise, not anomalies)"))

    @model_validator(mode="after")
    def _subset(self) -> "AnomalyConf":
        extra = sorted(set(self.log_columns) - set(self.columns))
        if extra:
            raise ValueError(f"log_columns {extra} are not among columns")
        return self


class RiskConf(_Strict):
    bot_min_share: float = Field(
        0.5, gt=0, le=1, description="bot: at least this share of the user's events flagged by clean's bot rules")
    scraper: ScraperConf = Field(
        ScraperConf(), description="scraper: browsing only, in long sessions, never carting, favouriting or buying")
    click_farming: ClickFarmingConf = Field(
        ClickFarmingConf(), description="bursts of cart / purchase on one item from many new accounts")
    abnormal_purchase: AbnormalPurchaseConf = Field(
        AbnormalPurchaseConf(), description="a purchase far above the user's own history (quantity or amount)")
    anomaly: AnomalyConf = Field(
        AnomalyConf(), description="robust z-score (median / MAD over all users) of user features; log1p for counts")


RISK_FLAGS = ("bot", "scraper", "click_farming", "abnormal_purchase", "anomaly")


class CampaignConf(_Strict):
    where: str = ""
    min_propensity: float = Field(0.0, ge=0, le=1)
    offer: str = ""


class CampaignsConf(_Strict):
    model: Literal[PREDICTORS] = Field(  # type: ignore[valid-type]
        "lr", description="whose purchase scores (gold.propensity_scores, task purchase) rank the users")
    holdout_share: float = Field(
        0.1, ge=0, lt=1, description="per campaign, this share of its targets is a control group (fixed hash draw)")
    seed: int = 11
    exclude_flags: list[Literal[RISK_FLAGS]] = Field(  # type: ignore[valid-type]
        ["bot", "scraper", "click_farming"], description="gold.risk_flags that keep a user off every list")
    definitions: dict[str, CampaignConf] = Field(
        {"cart_abandoners": CampaignConf(
            where="cart_abandonment >= 0.5 AND n_cart > 0 AND lifecycle_stage IN ('new', 'active')",
            min_propensity=0.3, offer="reminder of the carted items with a 5 % coupon"),
         "at_risk_high_value": CampaignConf(
            where="segment IN ('at_risk', 'cant_lose', 'hibernating') AND spending_power IN ('high', 'premium')",
            min_propensity=0.0, offer="win-back coupon, 15 %"),
         "first_purchase": CampaignConf(
            where="segment = 'browser' AND n_view >= 20 AND lifecycle_stage IN ('new', 'active')",
            min_propensity=0.2, offer="free shipping on the first order"),
         "loyal_upsell": CampaignConf(where="segment IN ('champions', 'loyal')", min_propensity=0.5,
                                      offer="early access to new arrivals in their top category")},
        description="name -> Spark SQL condition on gold.user_profiles (+ some user features), propensity floor")

    @field_validator("definitions")
    @classmethod
    def _names(cls, v: dict[str, CampaignConf]) -> dict[str, CampaignConf]:
        bad = [k for k in v if not k.replace("_", "").isalnum()]
        if bad:
            raise ValueError(f"campaign names must be letters, digits and underscores: {bad}")
        return v


class DemandConf(_Strict):
    horizon_days: int = Field(7, ge=1, le=366, description="days forecast after the last event date")
    holdout_days: int = Field(
        3, ge=1, description="the backtest holds out the last N days (MAPE / WAPE in ops.model_metrics)")
    level_days: int = Field(
        7, ge=1, description="level = mean deseasonalised units of the last N days; trend vs the N days before")
    damping: float = Field(0.9, gt=0, le=1, description="trend damping per day ahead")
    shrinkage: float = Field(2.0, ge=0, description="pseudo-weeks pulling each weekday index towards 1")


class FeedbackConf(_Strict):
    window_days: int = Field(7, ge=1, description="behaviour up to this many days after a list's data cut counts")


class DpCategoryConf(_Strict):
    epsilon: float = Field(1.0, gt=0)
    max_cells: int = Field(10, ge=1)          # (day, category) cells one user may count in
    max_revenue: float = Field(500.0, gt=0)   # a user's purchases in one cell are clamped to this


class DpSegmentConf(_Strict):
    epsilon: float = Field(1.0, gt=0)
    max_spend: float = Field(2000.0, gt=0)    # a user's monetary value is clamped to this


class DpConf(_Strict):
    seed: int | None = Field(None, description="null: fresh noise every run; a fixed seed only for tests")
    confidence: float = Field(
        0.95, gt=0, lt=1, description="the stated error bound holds with this probability per value")
    daily_category_activity: DpCategoryConf = DpCategoryConf()
    segment_summary: DpSegmentConf = DpSegmentConf()


class ErasureConf(_Strict):
    vacuum_retention_hours: float = Field(
        168.0, ge=0, description="forget-user VACUUMs with this retention (0: erased rows leave the files at once)")


class PrivacyConf(_Strict):
    pseudonymise: bool | Literal["auto"] = Field(
        "auto", description="true: refuse to run without the key; auto: pseudonymise when the key is set; false")
    pseudonym_key_env: str = Field(
        "SHOPMINE_PSEUDONYM_KEY", description="the environment variable holding the HMAC key (never a file)")
    encryption_key_env: str = Field("SHOPMINE_PII_KEY", description="the environment variable holding the AES-GCM key")
    pii: dict[Literal["email", "phone", "ip"], Literal["drop", "encrypt"]] = Field(
        {"email": "drop", "phone": "drop", "ip": "drop"},
        description="per optional PII input column: drop, or encrypt into pii_sealed")
    quarantine: Literal["keep", "encrypt", "auto"] = Field(
        "auto", description="raw_record of rejected lines: keep, encrypt, or auto (encrypt when both keys are set)")
    dp: DpConf = Field(DpConf(), description="the publish job's differentially private bi.* tables (Laplace mechanism)")
    erasure: ErasureConf = ErasureConf()


class TrackingConf(_Strict):
    enabled: bool = True
    uri: str | None = Field(
        None, description="null: $MLFLOW_TRACKING_URI when set, else SQLite <lake.root>/mlflow.db + <lake.root>/mlruns")
    experiment: str = "shopmine"
    log_models: bool = Field(
        True, description="copy saved models into the MLflow run (local lakes; remote ones get a path tag)")


SOURCE_FORMATS = tuple(BUILT_IN_FORMATS)  # the built-in adapters, defined once in shopmine.io.sources


class Settings(_Strict):
    lake: LakeConf = LakeConf()
    spark: SparkConf = SparkConf()
    generate: GenerateConf = GenerateConf()
    ingest: IngestConf = IngestConf()
    clean: CleanConf = CleanConf()
    features: FeaturesConf = FeaturesConf()
    profile: ProfileConf = ProfileConf()
    recommend: RecommendConf = RecommendConf()
    predict: PredictConf = Field(
        PredictConf(),
        description="behaviour predictors (train-predict: MLlib LR / NB; train-cnn: Keras CNN on Horovod)")
    maintain: MaintainConf = Field(
        MaintainConf(), description="the maintain job: OPTIMIZE (compaction, Z-order) and VACUUM")
    monitor: MonitorConf = Field(
        MonitorConf(), description="the monitor job: data-quality checks per clean run and drift between runs")
    risk: RiskConf = Field(
        RiskConf(), description="the risk job: one gold.risk_flags row per user and flag, with a score and reasons")
    campaigns: CampaignsConf = Field(
        CampaignsConf(), description="the campaigns job: target lists from purchase propensity x profile")
    demand: DemandConf = Field(
        DemandConf(), description="the demand job: purchase patterns and a daily units forecast per category")
    feedback: FeedbackConf = Field(
        FeedbackConf(), description="the feedback job: what users did with the lists they were served")
    tracking: TrackingConf = Field(
        TrackingConf(),
        description="MLflow: params, metrics and models of every training run, tagged with its ops.runs id")
    privacy: PrivacyConf = Field(
        PrivacyConf(), description="pseudonyms, sealed PII, DP aggregates, data-subject requests (README: Privacy)")
    sources: dict[str, SourceConf] = Field(
        {**{fmt: SourceConf() for fmt in SOURCE_FORMATS}, "online_retail": SourceConf(timezone="Europe/London"),
         "jdata": SourceConf(timezone="Asia/Shanghai"), "movielens": SourceConf(min_time=date(1995, 1, 1))},
        description="per input format: timezone of naive timestamps, valid time range; a new name declares a "
                    "format of your own (docs/sources.md)")

    def source(self, fmt: str) -> SourceConf:
        return self.sources.get(fmt, SourceConf())

    def fingerprint(self) -> str:
        """A short stable hash of the effective configuration (recorded in ``ops.runs``)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------------
# conf/base.yaml is generated from the models above (their defaults and descriptions), so the defaults live once:
# ``python -m shopmine.docs`` rewrites it, tests/test_conf.py checks it. Overlays and --conf merge onto it.

BASE_YAML_HEADER = (
    "# Shopmine's defaults, generated from lib/shopmine/conf.py (python -m shopmine.docs): edit the code, not this file.\n"
    "# Overlays (conf/local.yaml, conf/cluster.yaml, ...) and `--conf key=value` override it; every key is validated\n"
    "# at start: an unknown or ill-typed key stops the job naming the key and the file.\n")
_COMMENT_COLUMN = 28


def _scalar(v: Any, flow: bool) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, date):
        return f'"{v.isoformat()}"'
    if isinstance(v, str) and flow and any(c in v for c in ",[]{}#:"):
        return json.dumps(v)
    text = yaml.safe_dump(v, default_flow_style=True, width=10**6, allow_unicode=True).strip()
    return text[:-len("\n...")].strip() if text.endswith("\n...") else text


def entries(value: BaseModel | dict) -> list[tuple[str, Any, str | None]]:
    """(key, value, description) of a settings model's fields, or of a mapping's items (no descriptions)."""
    if isinstance(value, BaseModel):
        return [(k, getattr(value, k), f.description) for k, f in type(value).model_fields.items()
                if not _unset_declaration(f, getattr(value, k))]
    return [(k, v, None) for k, v in value.items()]


def yaml_flow(v: Any) -> str:
    """A value in YAML flow style, on one line: {a: 1, b: [x, y]}."""
    if isinstance(v, (BaseModel, dict)):
        return "{" + ", ".join(f"{k}: {yaml_flow(x)}" for k, x, _ in entries(v)) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(yaml_flow(x) for x in v) + "]"
    return _scalar(v, flow=True)


def _flowable(v: Any) -> bool:
    """A value written on one line: no nested model whose fields carry their own descriptions."""
    if isinstance(v, BaseModel):
        shown = entries(v)
        return not any(d for _, _, d in shown) and all(_flowable(x) for _, x, _ in shown)
    if isinstance(v, dict):
        return all(_flowable(x) for x in v.values())
    return True


def _line(indent: int, key: str, rendered: str, description: str | None) -> str:
    """``key: value  # description``, the description wrapped onto comment lines of its own past 118 columns."""
    import textwrap

    text = f"{' ' * indent}{key}:{(' ' + rendered) if rendered else ''}"
    if not description:
        return text
    lead = text.ljust(_COMMENT_COLUMN) if len(text) < _COMMENT_COLUMN else text + "  "
    column = max(len(lead), _COMMENT_COLUMN)
    chunks = textwrap.wrap(description, width=max(40, 118 - column - 3))
    return "\n".join([f"{lead} # {chunks[0]}"] + [f"{' ' * column} # {c}" for c in chunks[1:]])


def _render(value: Any, indent: int) -> list[str]:
    out = []
    for key, v, description in entries(value):
        one = _line(indent, key, yaml_flow(v), description)
        if isinstance(v, (BaseModel, dict)) and v and (not _flowable(v) or len(one) > 118):
            out.append(_line(indent, key, "", description))
            out += _render(v, indent + 2)
        else:
            out.append(one)
    return out


def default_yaml() -> str:
    """conf/base.yaml: every key of :class:`Settings` with its default and description."""
    return BASE_YAML_HEADER + "\n".join(_render(Settings(), 0)) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Loading with provenance: remember which file set each dotted key, so errors can name it.


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfError(f"config file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def _merge(base: dict, over: dict, origin: str, prov: dict[str, str], prefix: str = "") -> dict:
    out = dict(base)
    for key, value in over.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(out.get(key), dict) and value:
            out[key] = _merge(out[key], value, origin, prov, dotted + ".")
        else:
            out[key] = value
            _record(value, dotted, origin, prov)
    return out


def _record(value: Any, dotted: str, origin: str, prov: dict[str, str]) -> None:
    prov[dotted] = origin
    if isinstance(value, dict):
        for k, v in value.items():
            _record(v, f"{dotted}.{k}", origin, prov)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a","b","c"], parsed value). Values are YAML scalars (numbers, true/false, null, lists)."""
    if "=" not in item:
        raise ConfError(f"--conf {item!r}: expected key=value, e.g. --conf lake.root=/data/lake")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfError(f"--conf {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _overlay_path(overlay: str | None) -> Path | None:
    if not overlay:
        return None
    candidate = Path(overlay)
    if candidate.suffix in (".yaml", ".yml"):
        return candidate if candidate.is_absolute() else (Path.cwd() / candidate)
    return CONF_DIR / f"{overlay}.yaml"


def load_settings(overlay: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Settings:
    """Load ``base.yaml``, then the overlay (a name under conf/ or a .yaml path), then ``key=value`` overrides."""
    prov: dict[str, str] = {}
    base_path = CONF_DIR / "base.yaml"
    data = _merge({}, _read_yaml(base_path), str(base_path), prov)
    over_path = _overlay_path(overlay)
    if over_path is not None:
        data = _merge(data, _read_yaml(over_path), str(over_path), prov)
    for item in overrides:
        keys, value = parse_override(item)
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        data = _merge(data, nested, "--conf", prov)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfError(_explain(exc, prov)) from None
    check_sources(settings, prov)
    return settings


def check_sources(settings: Settings, prov: dict[str, str] | None = None) -> None:
    """Every ``sources.<name>``: a built-in format only sets timezone / min_time; any other name declares a whole
    layout, checked by ``shopmine.io.sources.declare``. A mistake names its key and the file that set it."""
    from shopmine.io.sources import FORMATS, DeclarationError, declare

    prov = prov or {}

    def fail(key: str, message: str) -> None:
        origin = prov.get(key) or _nearest_origin(key, prov)
        raise ConfError(f"config key '{key}' in {origin}: {message}")

    for name, d in settings.sources.items():
        declared = d.declares()
        if name in FORMATS:
            if declared:
                fail(f"sources.{name}.{next(iter(declared))}",
                     f"{name!r} is a built-in format; its layout cannot be redeclared (declare yours under another "
                     "name; a built-in takes only timezone and min_time)")
            continue
        if d.columns is None:
            fail(f"sources.{name}", f"{name!r} is not a built-in format ({', '.join(FORMATS)}); a format of your own "
                                    "needs at least columns and fields (docs/sources.md)")
        try:
            declare(name, d)
        except DeclarationError as exc:
            fail(exc.key, exc.message)


def _explain(exc: ValidationError, prov: dict[str, str]) -> str:
    lines = []
    for err in exc.errors():
        dotted = ".".join(str(p) for p in err["loc"])
        origin = prov.get(dotted) or _nearest_origin(dotted, prov)
        if err["type"] == "extra_forbidden":
            what = "unknown key"
        elif err["type"] == "literal_error":
            what = f"invalid value {err.get('input')!r}: {err['msg'].lower()}"
        else:
            what = f"{err['msg'].lower()} (got {err.get('input')!r})"
        lines.append(f"config key '{dotted}' in {origin}: {what}")
    return "; ".join(lines)


def _nearest_origin(dotted: str, prov: dict[str, str]) -> str:
    parts = dotted.split(".")
    while parts:
        parts.pop()
        if ".".join(parts) in prov:
            return prov[".".join(parts)]
    return "the configuration"
