"""Privacy: keyed pseudonyms for user ids, sealed PII, and differentially private aggregates.

* **Pseudonyms.** ``silver`` and every table after it hold ``HMAC-SHA256(k_user, raw user id)`` (first 128 bits, hex)
  instead of the raw id. HMAC is computed by Spark SQL itself (``sha2`` over the RFC 2104 inner and outer pads), so no
  Python UDF slows the clean pass, and it equals Python's ``hmac`` bit for bit (tested). Without the key a pseudonym
  cannot be computed or reversed; with it, :func:`pseudonym` finds a user's rows (``lookup-user``, ``forget-user``).
* **Sealed PII.** Optional email / phone / IP columns of the input are dropped before silver, or sealed with
  AES-256-GCM (Spark's ``aes_encrypt``, synthetic IV: see :meth:`Privacy.seal`) into ``silver.events.pii_sealed``.
* **Keys** come from environment variables named in conf (``privacy.pseudonym_key_env``,
  ``privacy.encryption_key_env``), are never logged or written, and each purpose uses its own sub-key derived by
  HMAC from the master key. The derived keys travel to executors as binary literals in the query plan; Spark's
  ``spark.sql.redaction.string.regex`` (set by :mod:`shopmine.spark`) blanks them in explain output and the UI.
  A lake records a *fingerprint* of the pseudonym key (an HMAC of a constant: reveals nothing) so that a run with a
  different key, or none, cannot silently mix pseudonymised and raw ids in one table.
* **Differential privacy** for ``bi.*`` aggregates: see :func:`laplace`, :func:`bound_contributions`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from shopmine.conf import ConfError, Settings
from shopmine.io.tables import BI_DAILY_CATEGORY_ACTIVITY, BI_SEGMENT_SUMMARY, SILVER_EVENTS
from shopmine.logs import step
from shopmine.vocab import revenue

if TYPE_CHECKING:
    from shopmine.io.delta import Lake

PSEUDONYM_HEX = 32          # 128 bits: no collision among 10^15 users with any practical probability
MIN_KEY_BYTES = 16
PII_FIELDS = ("email", "phone", "ip")
# Spark's explain / UI redaction for the key material inside plans (binary literals print as 0x<hex> or x'<hex>').
REDACTION_REGEX = "(?i)(0x|x')[0-9a-f]{32,}"


class PrivacyError(ConfError):
    """A missing, short or mismatched key: a configuration error (exit 2) naming the variable to set."""


def read_key(env_name: str) -> bytes | None:
    """The key in ``$env_name`` (hex of ≥ 16 bytes, or any text of ≥ 16 characters), or None when unset."""
    value = os.environ.get(env_name)
    if not value:
        return None
    try:
        key = bytes.fromhex(value) if len(value) % 2 == 0 and len(value) >= 2 * MIN_KEY_BYTES else value.encode()
    except ValueError:
        key = value.encode()
    if len(key) < MIN_KEY_BYTES:
        raise PrivacyError(f"${env_name} is too short: give at least {MIN_KEY_BYTES} bytes "
                           f"(e.g. export {env_name}=$(openssl rand -hex 32))")
    return key


def derive(master: bytes, purpose: str) -> bytes:
    """A 32-byte sub-key for one purpose: HMAC-SHA256(master, 'shopmine/<purpose>')."""
    return hmac.new(master, f"shopmine/{purpose}".encode(), hashlib.sha256).digest()


def fingerprint(master: bytes) -> str:
    """Identifies a key without revealing it (stored in the lake to detect key changes)."""
    return derive(master, "fingerprint").hex()[:16]


# -- HMAC-SHA256 in Spark SQL --------------------------------------------------------------------------------------

def hmac_sha256_hex(value: Column, key: bytes) -> Column:
    """HMAC-SHA256(key, UTF-8 bytes of ``value``) as 64 lower-case hex digits (RFC 2104, block size 64)."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    ipad = bytes(b ^ 0x36 for b in key)
    opad = bytes(b ^ 0x5C for b in key)
    inner = F.unhex(F.sha2(F.concat(F.lit(ipad), value.cast("binary")), 256))
    return F.sha2(F.concat(F.lit(opad), inner), 256)


def pseudonym(raw: str, key: bytes) -> str:
    """Python twin of :meth:`Privacy.pseudonymise` for one id (what ``lookup-user`` / ``forget-user`` compute)."""
    return hmac.new(derive(key, "user_id"), raw.encode(), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX]


def erasure_token(raw: str, key: bytes) -> str:
    """What ``ops.erasures`` stores instead of the id: a keyed hash in its own domain, so it matches no pseudonym
    in any table but still answers "was this user erased?" for whoever holds the key."""
    return hmac.new(derive(key, "erasure"), raw.encode(), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX]


# -- policy ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Privacy:
    """The privacy settings of one run, with the keys read from the environment."""

    pseudonym_key: bytes | None
    encryption_key: bytes | None
    pii: dict[str, str]                 # field -> drop | encrypt
    seal_quarantine: bool

    @classmethod
    def from_settings(cls, settings) -> Privacy:
        conf = settings.privacy
        key = read_key(conf.pseudonym_key_env)
        if conf.pseudonymise is True and key is None:
            raise PrivacyError(f"privacy.pseudonymise is true but ${conf.pseudonym_key_env} is not set: export the "
                               f"pseudonym key (e.g. {conf.pseudonym_key_env}=$(openssl rand -hex 32), kept in your "
                               "secret store) or set privacy.pseudonymise: auto / false")
        if conf.pseudonymise is False:
            key = None
        enc = read_key(conf.encryption_key_env)
        needs = [f for f, action in conf.pii.items() if action == "encrypt"]
        if needs and enc is None:
            raise PrivacyError(f"privacy.pii encrypts {', '.join(needs)} but ${conf.encryption_key_env} is not set")
        if conf.quarantine == "encrypt" and enc is None:
            raise PrivacyError(f"privacy.quarantine is encrypt but ${conf.encryption_key_env} is not set")
        seal = conf.quarantine == "encrypt" or (conf.quarantine == "auto" and key is not None and enc is not None)
        return cls(key, enc, dict(conf.pii), seal)

    @property
    def pseudonymising(self) -> bool:
        return self.pseudonym_key is not None

    @property
    def fingerprint(self) -> str | None:
        return fingerprint(self.pseudonym_key) if self.pseudonym_key else None

    def pseudonymise(self, user_id: Column) -> Column:
        """The column's pseudonym (null stays null); the column unchanged when pseudonymisation is off."""
        if self.pseudonym_key is None:
            return user_id
        key = derive(self.pseudonym_key, "user_id")
        return F.when(user_id.isNotNull(), hmac_sha256_hex(user_id, key).substr(1, PSEUDONYM_HEX))

    def pseudonym(self, raw: str) -> str:
        return pseudonym(raw, self.pseudonym_key) if self.pseudonym_key else raw

    def _aes_key(self) -> bytes:
        assert self.encryption_key is not None
        return derive(self.encryption_key, "aes-gcm")

    def seal(self, value: Column) -> Column:
        """AES-256-GCM, base64 text (null stays null), with a *synthetic* IV: the first 96 bits of an HMAC of the
        plaintext under its own sub-key. Re-cleaning a batch therefore writes byte-identical ciphertexts (reruns stay
        idempotent); the price is that equal plaintexts seal equally, which the per-user pseudonym reveals anyway.
        Distinct plaintexts get distinct IVs (a 96-bit collision needs ~2^48 values), so GCM's nonce rule holds."""
        data = value.cast("binary")
        iv = F.substring(F.unhex(hmac_sha256_hex(data, derive(self.encryption_key, "aes-gcm-iv"))), 1, 12)
        return F.base64(F.aes_encrypt(data, F.lit(self._aes_key()), F.lit("GCM"), F.lit("DEFAULT"), iv))

    def unseal(self, sealed: Column) -> Column:
        return F.aes_decrypt(F.unbase64(sealed), F.lit(self._aes_key()), F.lit("GCM")).cast("string")

    def sealed_pii(self, fields: dict[str, Column]) -> Column:
        """The fields whose policy is encrypt, as one sealed JSON object; null when none of them has a value."""
        keep = {f: c for f, c in fields.items() if self.pii.get(f) == "encrypt"}
        if not keep:
            return F.lit(None).cast("string")
        any_value = F.coalesce(*keep.values()).isNotNull()
        return F.when(any_value, self.seal(F.to_json(F.struct(*[c.alias(f) for f, c in keep.items()]))))


# -- differential privacy --------------------------------------------------------------------------------------------

KEY_PROPERTY = "shopmine.pseudonymKey"  # silver.events' table property: the fingerprint of the key its ids use


def check_key(lake: Lake, privacy: Privacy, reprocess: bool) -> None:
    """Refuse to add batches pseudonymised with another key (or not at all) to a silver table: the ids would no
    longer join. ``--all`` re-cleans every batch, so it may change the key (and must be followed by the later jobs).
    ``clean`` checks before it writes; ``lookup-user`` / ``forget-user`` before they pseudonymise an id to look up."""
    if reprocess or not lake.exists(SILVER_EVENTS.name):
        return
    stored = lake.properties(SILVER_EVENTS.name).get(KEY_PROPERTY)
    want = privacy.fingerprint or "none"
    if stored is None or stored == want:
        return
    settings_env = "the pseudonym key variable (conf privacy.pseudonym_key_env)"
    if stored == "none":
        msg = f"silver.events holds raw user ids, but {settings_env} is now set"
    elif want == "none":
        msg = f"silver.events is pseudonymised (key fingerprint {stored}), but {settings_env} is not set"
    else:
        msg = f"silver.events is pseudonymised with another key (fingerprint {stored}, this key {want})"
    raise PrivacyError(msg + ": mixing would break every join on user_id. Use the lake's key, or re-clean "
                       "everything with `clean --all` and rerun the later jobs")


def laplace(scale: float, seed: Column | int | None = None) -> Column:
    """Laplace(0, scale) noise by inverse CDF of a uniform: -b·sgn(u)·ln(1 - 2|u|), u ∈ (-1/2, 1/2).

    ``seed`` fixes the draw for tests; production runs leave it None (a fresh seed per run), since noise that can be
    regenerated protects nothing.
    """
    u = (F.rand(seed) if seed is not None else F.rand()) - F.lit(0.5)
    return F.lit(-scale) * F.signum(u) * F.log(F.lit(1.0) - F.lit(2.0) * F.abs(u))


def error_bound(scale: float, confidence: float) -> float:
    """|Laplace(scale)| ≤ scale·ln(1/(1-confidence)) with the given probability (P(|X| > t) = e^(-t/scale))."""
    return scale * math.log(1.0 / (1.0 - confidence))


def bound_contributions(df: DataFrame, user: str, cells: list[str], max_cells: int, seed: int) -> DataFrame:
    """Keep each user's rows in at most ``max_cells`` distinct cells (chosen by a keyed hash, i.e. at random but
    reproducibly): the sensitivity of any per-cell count of users is then ``max_cells``."""
    cell_rank = F.dense_rank().over(Window.partitionBy(user).orderBy(F.xxhash64(F.lit(seed), user, *cells), *cells))
    return df.withColumn("_cell_rank", cell_rank).where(F.col("_cell_rank") <= max_cells).drop("_cell_rank")


def _seeded(seed: int | None, k: int) -> int | None:
    return None if seed is None else seed + k


def _noisy(value: str, sensitivity: float, epsilon: float, seed: int | None, confidence: float,
           count: bool) -> tuple[Column, Column]:
    """(released value, its error bound): value + Laplace(sensitivity/epsilon), clamped at 0 (the truth is never
    negative, so clamping cannot move it further away); counts rounded (the bound grows by 0.5)."""
    scale = sensitivity / epsilon
    noisy = F.greatest(F.col(value).cast("double") + laplace(scale, seed), F.lit(0.0))
    if count:
        return F.round(noisy).cast("long"), F.lit(error_bound(scale, confidence) + 0.5)
    return F.round(noisy, 2), F.lit(error_bound(scale, confidence) + 0.005)


def category_cells(events: DataFrame, categories: DataFrame, conf, seed: int | None) -> DataFrame:
    """The exact, contribution-bounded aggregates the noise is added to: (event_date, category_id, v, b, r) for
    every day of the events' range and every catalogue category (the cell list is public: a cell's presence reveals
    nobody). Each user keeps at most ``conf.max_cells`` cells and at most ``conf.max_revenue`` per cell."""
    human = events.where(~F.col("is_bot") & F.col("category_id").isNotNull())
    spend = F.when(F.col("event_type") == "purchase", revenue())
    per_user = human.groupBy("user_id", "event_date", "category_id").agg(
        F.max((F.col("event_type") == "purchase").cast("int")).alias("bought"),
        F.least(F.coalesce(F.sum(spend), F.lit(0.0)), F.lit(conf.max_revenue)).alias("spent"))
    bounded = bound_contributions(per_user, "user_id", ["event_date", "category_id"], conf.max_cells,
                                  seed if seed is not None else 0)
    cells = bounded.groupBy("event_date", "category_id").agg(
        F.count("*").alias("v"), F.sum("bought").alias("b"), F.sum("spent").alias("r"))
    span = events.agg(F.min("event_date").alias("lo"), F.max("event_date").alias("hi"))
    days = span.select(F.explode(F.sequence("lo", "hi")).alias("event_date"))
    grid = days.crossJoin(categories.select("category_id").distinct())
    return grid.join(cells, ["event_date", "category_id"], "left").na.fill({"v": 0, "b": 0, "r": 0.0})


def dp_daily_category_activity(events: DataFrame, categories: DataFrame, conf, confidence: float,
                               seed: int | None) -> DataFrame:
    """Noisy visitors / buyers / revenue per (event_date, category_id) from :func:`category_cells`.

    Adding or removing one user moves visitors and buyers by at most max_cells and revenue by at most
    max_cells·max_revenue (the L1 sensitivities); each measure gets ε/3, so the table as a whole is ε-DP.
    """
    full = category_cells(events, categories, conf, seed)
    eps = conf.epsilon / 3
    v, v_err = _noisy("v", conf.max_cells, eps, _seeded(seed, 1), confidence, True)
    b, b_err = _noisy("b", conf.max_cells, eps, _seeded(seed, 2), confidence, True)
    r, r_err = _noisy("r", conf.max_cells * conf.max_revenue, eps, _seeded(seed, 3), confidence, False)
    return full.select("event_date", "category_id", v.alias("visitors"), b.alias("buyers"), r.alias("revenue"),
                       v_err.alias("visitors_error"), b_err.alias("buyers_error"), r_err.alias("revenue_error"),
                       F.lit(conf.epsilon).alias("epsilon"), F.lit(confidence).alias("confidence"))


def dp_segment_summary(profiles: DataFrame, segments: list[str], conf, confidence: float,
                       seed: int | None) -> DataFrame:
    """Noisy users and total spend per segment (each user is in one segment: sensitivity 1 and max_spend; ε/2 each);
    every segment in ``segments`` appears, empty or not."""
    spark = profiles.sparkSession
    agg = profiles.groupBy("segment").agg(
        F.count("*").alias("n"), F.sum(F.least(F.greatest(F.col("monetary"), F.lit(0.0)), F.lit(conf.max_spend)))
        .alias("s"))
    names = spark.createDataFrame([(x,) for x in segments], "segment string")
    full = names.join(agg, "segment", "left").na.fill({"n": 0, "s": 0.0})
    eps = conf.epsilon / 2
    n, n_err = _noisy("n", 1.0, eps, _seeded(seed, 4), confidence, True)
    t, t_err = _noisy("s", conf.max_spend, eps, _seeded(seed, 5), confidence, False)
    out = full.select("segment", n.alias("users"), t.alias("total_spend"), n_err.alias("users_error"),
                      t_err.alias("total_spend_error"))
    return out.select("*", F.when(F.col("users") > 0, F.round(F.col("total_spend") / F.col("users"), 2))
                      .alias("avg_spend"), F.lit(conf.epsilon).alias("epsilon"), F.lit(confidence).alias("confidence"))


__all__ = ["Privacy", "PrivacyError", "pseudonym", "erasure_token", "hmac_sha256_hex", "derive", "fingerprint",
           "laplace", "error_bound", "bound_contributions", "category_cells", "dp_daily_category_activity", "dp_segment_summary", "read_key", "PII_FIELDS", "REDACTION_REGEX", "run_publish"]


def run_publish(lake: Lake, settings: Settings, run_id: str, events: DataFrame, items: DataFrame,
                profiles: DataFrame) -> dict[str, int]:
    """The differentially private bi.daily_category_activity and bi.segment_summary. Returns the run's counts."""
    from shopmine.features.profiles import SEGMENTS

    log = logging.getLogger("shopmine.publish")
    dp = settings.privacy.dp
    counts: dict[str, int] = {}
    stamp = [F.lit(run_id).alias("run_id"), F.current_timestamp().alias("generated_at")]
    written = 0
    conf = dp.daily_category_activity
    with step(log, f"{BI_DAILY_CATEGORY_ACTIVITY.name}: epsilon {conf.epsilon}, <= {conf.max_cells} cells per user, "
                   f"revenue clamped at {conf.max_revenue:g}") as info:
        activity = dp_daily_category_activity(events, items.where(F.col("category_id").isNotNull()), conf,
                                              dp.confidence, dp.seed)
        lake.overwrite(activity.select("*", *stamp), BI_DAILY_CATEGORY_ACTIVITY.name)
        info["rows"] = lake.last_write_metrics(BI_DAILY_CATEGORY_ACTIVITY.name).get("numOutputRows", 0)
        written += info["rows"]
    conf = dp.segment_summary
    with step(log, f"{BI_SEGMENT_SUMMARY.name}: epsilon {conf.epsilon}, spend clamped at {conf.max_spend:g}") as info:
        summary = dp_segment_summary(profiles, list(SEGMENTS), conf, dp.confidence, dp.seed)
        lake.overwrite(summary.select("*", *stamp), BI_SEGMENT_SUMMARY.name)
        info["rows"] = lake.last_write_metrics(BI_SEGMENT_SUMMARY.name).get("numOutputRows", 0)
        written += info["rows"]
    counts.update(rows_written=written)
    return counts
