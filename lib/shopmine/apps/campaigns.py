"""Marketing: campaign target lists from purchase propensity x profile (segment, spending power, lifecycle, habits).

A campaign is declared in conf as a Spark SQL condition on the user's profile and features plus a minimum
propensity. Every target gets:

- ``propensity``: the purchase model's score (``gold.propensity_scores``, task ``purchase``, model ``campaigns.model``);
- ``expected_conversion``: the purchase rate the model's test users with a score in the same tenth actually showed
  (its calibration table in ``ops.model_metrics``): class weights make raw scores too high, the observed rate is not;
  a tenth with no test users falls back to the score;
- ``holdout``: a deterministic draw (hash of campaign, user and seed) of ``holdout_share`` of the targets, not to be
  contacted, so the campaign's lift can be measured later as the targets' conversion minus the holdout's. The draw
  never changes for a user and campaign, so reruns and later lists keep the same control group.

Users flagged by risk (``exclude_flags``) are never targeted.
"""

from __future__ import annotations

import json
import logging

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from shopmine.conf import CampaignsConf, ConfError, Settings
from shopmine.io.delta import Lake
from shopmine.io.tables import GOLD_CAMPAIGN_TARGETS, GOLD_PROPENSITY_SCORES, OPS_MODEL_METRICS
from shopmine.jobrun import ShopmineError

log = logging.getLogger("shopmine.apps.campaigns")

BINS = 10
# the columns a campaign's `where` can use: the profile's, plus these features
FEATURE_COLUMNS = ["n_events", "n_view", "n_cart", "n_purchase", "recency_days", "purchase_recency_days", "frequency",
                   "sessions", "view_to_cart", "cart_to_purchase", "avg_bought_price", "avg_viewed_price"]


def calibration_map(details_json: str | None) -> dict[int, float]:
    """tenth of the score -> observed purchase rate, from a model's ``ops.model_metrics`` details."""
    if not details_json:
        return {}
    bins = json.loads(details_json).get("calibration") or []
    return {int(b["bin"]): float(b["observed"]) for b in bins if b.get("rows")}


def expected_conversion(score: Column, calibration: dict[int, float]) -> Column:
    tenth = F.least(F.floor(score * BINS), F.lit(BINS - 1)).cast("int")
    if not calibration:
        return score
    lookup = F.create_map(*[x for k, v in sorted(calibration.items()) for x in (F.lit(k), F.lit(v))])
    return F.coalesce(F.element_at(lookup, tenth), score)


def audience(profiles: DataFrame, features: DataFrame, scores: DataFrame, flags: DataFrame | None,
             conf: CampaignsConf) -> DataFrame:
    """One row per user who can be targeted: profile + features + propensity, risk-flagged users removed."""
    feats = features.select("user_id", *[c for c in FEATURE_COLUMNS if c not in profiles.columns])
    df = (profiles.join(feats, "user_id")
          .join(scores.select("user_id", F.col("score").alias("propensity")), "user_id"))
    if flags is not None and conf.exclude_flags:
        df = df.join(flags.where(F.col("flag").isin(conf.exclude_flags)).select("user_id").distinct(), "user_id",
                     "left_anti")
    return df.where(~F.col("is_bot"))


def targets(aud: DataFrame, conf: CampaignsConf, calibration: dict[int, float]) -> DataFrame:
    """Every campaign's targets: (campaign, user_id, propensity, expected_conversion, segment, spending_power,
    lifecycle_stage, holdout, offer)."""
    parts = []
    for name, c in conf.definitions.items():
        try:
            chosen = aud.where(F.expr(c.where)) if c.where else aud
            chosen = chosen.where(F.col("propensity") >= c.min_propensity)
            chosen.schema  # noqa: B018 - resolve the condition now, so a typo names its key
        except Exception as exc:  # noqa: BLE001 - Spark's ParseException or AnalysisException: the user's SQL
            first = str(exc).strip().splitlines()[0][:200]
            raise ConfError(f"config key 'campaigns.definitions.{name}.where': {c.where!r} is not a valid condition "
                            f"on the profile and features ({first})") from None
        draw = F.abs(F.xxhash64(F.lit(name), F.col("user_id"), F.lit(conf.seed))) % 10_000 / 10_000.0
        parts.append(chosen.select(
            F.lit(name).alias("campaign"), "user_id", "propensity",
            expected_conversion(F.col("propensity"), calibration).alias("expected_conversion"),
            "segment", "spending_power", "lifecycle_stage",
            (draw < conf.holdout_share).alias("holdout"), F.lit(c.offer).alias("offer")))
    if not parts:
        raise ConfError("config key 'campaigns.definitions': no campaign defined")
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    return out


def run_campaigns(lake: Lake, settings: Settings, run_id: str, profiles: DataFrame, features: DataFrame,
                  scores: DataFrame, flags: DataFrame | None) -> dict[str, int]:
    """gold.campaign_targets from the purchase ``scores`` of ``campaigns.model``, the ``profiles``, ``features`` and
    risk ``flags``. Returns the run's counts."""
    conf = settings.campaigns
    counts: dict[str, int] = {}
    if scores.limit(1).count() == 0:
        raise ShopmineError(f"no purchase scores of model {conf.model!r} in {GOLD_PROPENSITY_SCORES.name}: run "
                            f"train-predict with 'purchase' in predict.tasks and {conf.model!r} in predict.models")
    # the calibration of the very run that wrote these scores (ops.model_metrics is not an input: every training
    # job appends to it, and that must not make this job rerun)
    (score_run,) = scores.select("run_id").first()
    last = (lake.read(OPS_MODEL_METRICS.name)
            .where((F.col("run_id") == score_run) & (F.col("model") == f"purchase.{conf.model}"))
            .select("details").first())
    calibration = calibration_map(last[0] if last else None)
    if not calibration:
        log.warning("no calibration table for purchase.%s: expected conversion = the raw score", conf.model)
    as_of = scores.agg(F.max("as_of")).first()[0]
    out = targets(audience(profiles, features, scores, flags, conf), conf, calibration)
    out = out.select("*", F.lit(conf.model).alias("model"), F.lit(as_of).alias("as_of"),
                     F.lit(run_id).alias("run_id"), F.current_timestamp().alias("generated_at"))
    lake.overwrite(out, GOLD_CAMPAIGN_TARGETS.name)
    summary = (lake.read(GOLD_CAMPAIGN_TARGETS.name).groupBy("campaign")
               .agg(F.count("*").alias("targets"), F.sum(F.col("holdout").cast("int")).alias("holdout"),
                    F.avg("propensity").alias("propensity"),
                    F.sum(F.when(~F.col("holdout"), F.col("expected_conversion"))).alias("expected_buyers"))
               .orderBy("campaign").collect())  # one row per campaign of conf
    for r in summary:
        log.info("  %-28s %7s targets (%s holdout), mean propensity %.3f, expected buyers among contacted %.1f",
                 r["campaign"], f"{r['targets']:,}", f"{r['holdout']:,}", r["propensity"] or 0.0,
                 r["expected_buyers"] or 0.0)
    missing = sorted(set(conf.definitions) - {r["campaign"] for r in summary})
    if missing:
        log.info("  no targets for %s", ", ".join(missing))
    counts.update(rows_written=sum(r["targets"] for r in summary),
                  **{f"targets_{r['campaign']}": r["targets"] for r in summary})
    return counts
