"""Configuration: ``conf/base.yaml`` + one overlay (``local`` / ``cluster`` / a path) + ``--conf key=value`` overrides.

Every key is validated by the pydantic models below. An unknown key, or a value of the wrong type, stops the job
at start with a :class:`ConfError` naming the dotted key and the file (or ``--conf``) that set it.
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

# The checkout: where conf/ is and what a relative lake.root means. spark-submit.sh says so explicitly, because on a
# cluster the driver imports this module from the zip it ships with --py-files, not from the checkout.
PROJECT_DIR = Path(os.environ.get("SHOPMINE_PROJECT_DIR") or Path(__file__).resolve().parents[2])
CONF_DIR = Path(os.environ.get("SHOPMINE_CONF_DIR", PROJECT_DIR / "conf"))


class ConfError(ValueError):
    """A configuration problem, with a message fit to show the user as is."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LakeConf(_Strict):
    root: str = "lake"
    catalog: str | None = None

    def resolved_root(self) -> str:
        """The lake root as a URI or absolute path (relative paths resolve against the project directory)."""
        if "://" in self.root or self.root.startswith("dbfs:"):
            return self.root.rstrip("/")
        path = Path(self.root)
        return str(path if path.is_absolute() else (PROJECT_DIR / path).resolve())


class SparkConf(_Strict):
    app_name: str = "shopmine"
    master: str | None = None
    driver_memory: str = "4g"
    shuffle_partitions: int | None = Field(default=None, ge=1)
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"] = "WARN"
    extra: dict[str, str] = {}


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
    bot_share: float = Field(0.01, ge=0, le=0.5)
    json_share: float = Field(0.2, ge=0, le=1)
    exact_duplicate_share: float = Field(0.01, ge=0, le=0.5)
    near_duplicate_share: float = Field(0.01, ge=0, le=0.5)
    malformed_share: float = Field(0.005, ge=0, le=0.5)
    files: int = Field(4, ge=1)
    pii: bool = False          # add made-up email / phone / IP columns (to exercise privacy.pii)


class IngestConf(_Strict):
    max_bad_width_share: float = Field(0.5, gt=0, le=1)


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
    action: Literal["flag", "cap", "quarantine"] = "flag"
    mad_threshold: float = Field(8.0, gt=0)
    min_category_events: int = Field(20, ge=1)


class LimitsConf(_Strict):
    max_price: float = Field(1_000_000.0, gt=0)
    max_quantity: int = Field(10_000, ge=1)


class BotConf(_Strict):
    max_events_per_minute: int = Field(60, ge=1)
    max_events_per_day: int = Field(5_000, ge=1)
    min_events_for_regularity: int = Field(50, ge=3)
    max_gap_cv: float = Field(0.1, ge=0)


class CleanConf(_Strict):
    dedupe: DedupeConf = DedupeConf()
    missing: dict[Literal["price", "quantity"], MissingPolicy] = {
        "price": MissingPolicy(strategy="keep"),
        "quantity": MissingPolicy(strategy="constant", value=1),
    }
    outliers: OutlierConf = OutlierConf()
    limits: LimitsConf = LimitsConf()
    bots: BotConf = BotConf()
    future_tolerance_hours: int = Field(24, ge=0)


class SourceConf(_Strict):
    timezone: str = "UTC"
    min_time: date = date(2000, 1, 1)

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
    session_gap_minutes: int = Field(30, ge=1)
    half_life_days: float = Field(7.0, gt=0)
    event_weights: dict[Literal["view", "search", "favourite", "cart", "remove_from_cart", "purchase", "review"],
                        float] = {"view": 1.0, "search": 0.0, "favourite": 2.0, "cart": 3.0,
                                  "remove_from_cart": 0.0, "purchase": 5.0, "review": 1.0}
    exclude_bots: bool = True
    window_days: int | None = Field(None, ge=1)
    trend_window_days: int = Field(7, ge=1)
    as_of: date | None = None

    @field_validator("event_weights")
    @classmethod
    def _non_negative(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, w in v.items() if w < 0]
        if bad:
            raise ValueError(f"weights must be >= 0 (implicit feedback is a confidence), got negative for {bad}")
        return v


class ProfileConf(_Strict):
    top_n: int = Field(5, ge=1, le=50)
    new_user_days: int = Field(7, ge=1)
    active_days: int = Field(7, ge=1)
    lapsing_days: int = Field(30, ge=1)
    quantile_accuracy: int = Field(10_000, ge=100)

    @model_validator(mode="after")
    def _ordered(self) -> "ProfileConf":
        if self.lapsing_days < self.active_days:
            raise ValueError(f"lapsing_days ({self.lapsing_days}) must be >= active_days ({self.active_days})")
        return self


RECOMMENDERS = ("popularity", "category_popularity", "revisit", "als", "item_cf", "item_cf_sim", "item_cf_sum",
                "ranker")
RANKER_SOURCES = ("revisit", "covisit", "category_popularity", "popularity")


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
    enabled: bool = False
    weight: float = Field(1.0, gt=0)       # an ignored item enters ALS with strength -weight (preference 0)
    window_days: int = Field(7, ge=1)      # the user must come back within this many days of the list's cut


class RankerConf(_Strict):
    """The two-stage ``ranker``: candidates per source, then a gradient-boosted tree (see ``recsys/ranker.py``)."""

    cutoffs: int = Field(4, ge=1)              # training cutoffs, one day apart, the latest label window ending at the test cut
    sources: dict[Literal[RANKER_SOURCES], int] = {  # type: ignore[valid-type]
        "revisit": 100, "covisit": 50, "category_popularity": 30, "popularity": 30}
    seed_items: int = Field(20, ge=1)          # covisit: the user's most recent items whose neighbours are proposed
    covisit_neighbours: int = Field(30, ge=1)  # covisit: neighbours kept per item
    basket_items: int = Field(50, ge=2)        # covisit: items per user-day basket at most (the strongest)
    popularity_days: int = Field(3, ge=1)      # popularity: distinct users over the last N days before the cutoff
    negatives_per_user: int = Field(50, ge=1)  # training: negatives kept per user and cutoff (positives all kept)
    max_iter: int = Field(20, ge=1)            # GBTClassifier (more trees overfit on Taobao: bench/README.md)
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
    split: Literal["time", "leave_last", "stratified"] = "time"
    holdout_days: int = Field(2, ge=1)
    leave_last_n: int = Field(1, ge=1)
    test_ratio: float = Field(0.25, gt=0, lt=1)
    relevant_types: list[Literal["view", "search", "favourite", "cart", "remove_from_cart", "purchase", "review"]] = [
        "view", "favourite", "cart", "purchase", "review"]
    ks: list[int] = [10, 20]
    exclude: Literal["bought", "seen", "none"] = "bought"
    models: list[Literal[RECOMMENDERS]] = list(RECOMMENDERS)  # type: ignore[valid-type]
    select_metric: Literal["precision", "recall", "ndcg", "map", "hit_rate"] = "ndcg"
    select_k: int = Field(10, ge=1)
    serve_model: Literal[RECOMMENDERS] | None = None  # type: ignore[valid-type]
    top_n: int = Field(20, ge=1, le=1000)
    candidate_buffer: int = Field(50, ge=0)
    seed: int = 7
    als: AlsConf = AlsConf()
    item_cf: ItemCfConf = ItemCfConf()
    served_negatives: ServedNegativesConf = ServedNegativesConf()
    ranker: RankerConf = RankerConf()

    @model_validator(mode="after")
    def _consistent(self) -> "RecommendConf":
        if "ranker" in self.models and self.split != "time":
            raise ValueError("the ranker needs split: time (it trains on cutoffs before the held-out days); "
                             "drop it from recommend.models for other splits")
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
    workers: int = Field(2, ge=1)
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(0.001, gt=0)
    variant: Literal["adam_ce", "sgd_mse", "deep"] = "adam_ce"
    compare: list[Literal["adam_ce", "sgd_mse", "deep"]] = ["sgd_mse"]
    time_buckets: int = Field(24, ge=2)
    bucket_hours: int = Field(6, ge=1)
    validation_steps: int | None = Field(None, ge=1)
    plateau_patience: int = Field(2, ge=1)
    seed: int = 7


class PredictConf(_Strict):
    horizon_days: int = Field(3, ge=1)
    test_cutoff: date | None = None
    train_cutoffs: int = Field(3, ge=1)  # training windows, one day apart, the latest ending where the test one starts
    tasks: list[Literal[PREDICT_TASKS]] = list(PREDICT_TASKS)  # type: ignore[valid-type]
    models: list[Literal[PREDICTORS]] = list(PREDICTORS)  # type: ignore[valid-type]
    category_groups: int = Field(9, ge=1)
    validation_share: float = Field(0.2, gt=0, lt=1)
    train_ratio: float = Field(0.75, gt=0, lt=1)
    class_weights: bool = True
    seed: int = 42
    calibration: Literal["isotonic", "none"] = "isotonic"  # binary scores: isotonic regression on validation users
    select_by: Literal["roc_auc", "pr_auc"] = "roc_auc"    # the served binary model or rule: best on validation
    lr: LrConf = LrConf()
    nb: NbConf = NbConf()
    gbt: GbtConf = GbtConf()
    cnn: CnnConf = CnnConf()


class MaintainConf(_Strict):
    tables: list[str] = []
    optimize: bool = True
    zorder: dict[str, list[str]] = {}
    vacuum: bool = True
    retention_hours: float = Field(168.0, ge=0)


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
    bins: int = Field(10, ge=2, le=100)
    categories: int = Field(20, ge=1, le=1000)
    min_rows: int = Field(100, ge=1)
    warn_psi: float = Field(0.1, gt=0)
    fail_psi: float = Field(0.25, gt=0)
    accuracy: int = Field(10000, ge=10)
    tables: dict[str, DriftTableConf] = {}

    @model_validator(mode="after")
    def _ordered(self) -> "DriftConf":
        if self.fail_psi < self.warn_psi:
            raise ValueError(f"fail_psi ({self.fail_psi}) must be at least warn_psi ({self.warn_psi})")
        return self


class QualityConf(_Strict):
    max_quarantine_share: float = Field(0.05, ge=0, le=1)
    max_duplicate_share: float = Field(0.1, ge=0, le=1)
    max_bot_share: float = Field(0.5, ge=0, le=1)
    row_count_ratio: tuple[float, float] = (0.5, 2.0)
    max_null_share: dict[str, float] = {}
    mix_warn_psi: float = Field(0.1, gt=0)
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
    fail_on: Literal["fail", "warn", "never"] = "fail"
    quality: QualityConf = QualityConf()
    drift: DriftConf = DriftConf()


class ScraperConf(_Strict):
    min_views: int = Field(200, ge=1)
    min_view_share: float = Field(0.99, ge=0, le=1)
    min_session_events: float = Field(100, ge=1)


class ClickFarmingConf(_Strict):
    window_minutes: int = Field(60, ge=1)
    min_accounts: int = Field(5, ge=2)
    min_new_share: float = Field(0.8, ge=0, le=1)
    new_account_days: int = Field(2, ge=0)


class AbnormalPurchaseConf(_Strict):
    min_history: int = Field(3, ge=2)
    min_ratio: float = Field(10.0, ge=1)
    z_threshold: float = Field(6.0, gt=0)


class AnomalyConf(_Strict):
    columns: list[str] = ["n_events", "avg_session_events", "rate_view", "n_categories"]
    log_columns: list[str] = ["n_events", "avg_session_events", "n_categories"]
    z_threshold: float = Field(4.0, gt=0)
    min_events: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _subset(self) -> "AnomalyConf":
        extra = sorted(set(self.log_columns) - set(self.columns))
        if extra:
            raise ValueError(f"log_columns {extra} are not among columns")
        return self


class RiskConf(_Strict):
    bot_min_share: float = Field(0.5, gt=0, le=1)
    scraper: ScraperConf = ScraperConf()
    click_farming: ClickFarmingConf = ClickFarmingConf()
    abnormal_purchase: AbnormalPurchaseConf = AbnormalPurchaseConf()
    anomaly: AnomalyConf = AnomalyConf()


RISK_FLAGS = ("bot", "scraper", "click_farming", "abnormal_purchase", "anomaly")


class CampaignConf(_Strict):
    where: str = ""
    min_propensity: float = Field(0.0, ge=0, le=1)
    offer: str = ""


class CampaignsConf(_Strict):
    model: Literal[PREDICTORS] = "lr"  # type: ignore[valid-type]
    holdout_share: float = Field(0.1, ge=0, lt=1)
    seed: int = 11
    exclude_flags: list[Literal[RISK_FLAGS]] = ["bot", "scraper", "click_farming"]  # type: ignore[valid-type]
    definitions: dict[str, CampaignConf] = {}

    @field_validator("definitions")
    @classmethod
    def _names(cls, v: dict[str, CampaignConf]) -> dict[str, CampaignConf]:
        bad = [k for k in v if not k.replace("_", "").isalnum()]
        if bad:
            raise ValueError(f"campaign names must be letters, digits and underscores: {bad}")
        return v


class DemandConf(_Strict):
    horizon_days: int = Field(7, ge=1, le=366)
    holdout_days: int = Field(3, ge=1)
    level_days: int = Field(7, ge=1)
    damping: float = Field(0.9, gt=0, le=1)
    shrinkage: float = Field(2.0, ge=0)


class FeedbackConf(_Strict):
    window_days: int = Field(7, ge=1)


class DpCategoryConf(_Strict):
    epsilon: float = Field(1.0, gt=0)
    max_cells: int = Field(10, ge=1)          # (day, category) cells one user may count in
    max_revenue: float = Field(500.0, gt=0)   # a user's purchases in one cell are clamped to this


class DpSegmentConf(_Strict):
    epsilon: float = Field(1.0, gt=0)
    max_spend: float = Field(2000.0, gt=0)    # a user's monetary value is clamped to this


class DpConf(_Strict):
    seed: int | None = None                   # null: fresh noise every run (a fixed seed is for tests only)
    confidence: float = Field(0.95, gt=0, lt=1)
    daily_category_activity: DpCategoryConf = DpCategoryConf()
    segment_summary: DpSegmentConf = DpSegmentConf()


class ErasureConf(_Strict):
    vacuum_retention_hours: float = Field(168.0, ge=0)   # VACUUM after forget-user (0: the erased rows' files go at once)


class PrivacyConf(_Strict):
    pseudonymise: bool | Literal["auto"] = "auto"         # auto: when the key variable is set
    pseudonym_key_env: str = "SHOPMINE_PSEUDONYM_KEY"
    encryption_key_env: str = "SHOPMINE_PII_KEY"
    pii: dict[Literal["email", "phone", "ip"], Literal["drop", "encrypt"]] = {"email": "drop", "phone": "drop",
                                                                              "ip": "drop"}
    quarantine: Literal["keep", "encrypt", "auto"] = "auto"   # auto: encrypt when both keys are set
    dp: DpConf = DpConf()
    erasure: ErasureConf = ErasureConf()


class TrackingConf(_Strict):
    enabled: bool = True
    uri: str | None = None
    experiment: str = "shopmine"
    log_models: bool = True


SOURCE_FORMATS = ("canonical", "taobao", "retailrocket", "rees46", "online_retail", "jdata", "movielens")


class Settings(_Strict):
    lake: LakeConf = LakeConf()
    spark: SparkConf = SparkConf()
    generate: GenerateConf = GenerateConf()
    ingest: IngestConf = IngestConf()
    clean: CleanConf = CleanConf()
    features: FeaturesConf = FeaturesConf()
    profile: ProfileConf = ProfileConf()
    recommend: RecommendConf = RecommendConf()
    predict: PredictConf = PredictConf()
    maintain: MaintainConf = MaintainConf()
    monitor: MonitorConf = MonitorConf()
    risk: RiskConf = RiskConf()
    campaigns: CampaignsConf = CampaignsConf()
    demand: DemandConf = DemandConf()
    feedback: FeedbackConf = FeedbackConf()
    tracking: TrackingConf = TrackingConf()
    privacy: PrivacyConf = PrivacyConf()
    sources: dict[Literal[SOURCE_FORMATS], SourceConf] = {}  # type: ignore[valid-type]

    def source(self, fmt: str) -> SourceConf:
        return self.sources.get(fmt, SourceConf())

    def fingerprint(self) -> str:
        """A short stable hash of the effective configuration (recorded in ``ops.runs``)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


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
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfError(_explain(exc, prov)) from None


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
