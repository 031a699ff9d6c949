"""Data-subject requests: find every row about one user (``lookup-user``) and erase them (``forget-user``).

A user appears in three ways:

* by **pseudonym** in ``user_id`` of silver and every later table (or by the raw id when the lake is not
  pseudonymised): matched by equality;
* by **raw id** in ``ops.generator_truth`` (the generator's ground truth);
* **inside raw lines**: ``bronze.events_raw`` (verbatim input) and ``silver.quarantine`` (rejected lines, maybe
  sealed). These are found by parsing bronze with the same adapters clean uses and keeping the lines whose normalised
  user id is the subject's, or that carry an email or phone number of those lines (a line whose user id is missing
  or garbled still names the person); the quarantine rows are the ones with the same (source_file, line_number).

Only the subject's rows ever reach the driver (``lookup-user`` exports them); a search is a scan of each table.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shopmine.io.delta import Lake
from shopmine.io.sources import parse_fields
from shopmine.io.tables import BRONZE_EVENTS_RAW, OPS_ERASURES, OPS_GENERATOR_TRUTH, SILVER_QUARANTINE, TABLES
from shopmine.governance.privacy import Privacy

log = logging.getLogger(__name__)

RAW_ID_TABLES = (OPS_GENERATOR_TRUTH.name,)
# quarantine before bronze: the subject's lines are found by parsing bronze, so bronze is erased last
LINE_TABLES = (SILVER_QUARANTINE.name, BRONZE_EVENTS_RAW.name)
SKIP = (OPS_ERASURES.name,)


def id_forms(raw: str) -> list[str]:
    """The forms clean may have stored the id in: as given (code ids), and without '.0' / '+' (integer ids)."""
    raw = raw.strip()
    forms = [raw]
    if re.fullmatch(r"\+?\d+(\.0+)?", raw):
        digits = re.sub(r"\.0+$", "", raw).lstrip("+").lstrip("0") or "0"
        if digits not in forms:
            forms.append(digits)
    return forms


@dataclass(frozen=True)
class Subject:
    raw_forms: list[str]
    pseudonyms: list[str]

    @classmethod
    def of(cls, raw: str, privacy: Privacy) -> Subject:
        forms = id_forms(raw)
        return cls(forms, sorted({privacy.pseudonym(f) for f in forms}))


def user_tables(lake: Lake) -> list[str]:
    """Existing tables with a ``user_id`` column (pseudonym or raw), in registry order."""
    return [name for name, s in TABLES.items()
            if name not in SKIP and "user_id" in s.schema.fieldNames() and lake.exists(name)]


# PII fields that identify one person: a line carrying the subject's email or phone is the subject's even when its
# user id is missing or garbled (such lines are quarantined, but bronze keeps them verbatim). An IP address is shared
# by households and NATs, so it is not used to attribute a line.
IDENTIFYING_PII = ("email", "phone")


def subject_lines(lake: Lake, subject: Subject) -> DataFrame:
    """(source_file, line_number) of every bronze line about the subject: small, one user's lines.

    A line is the subject's when its normalised user id is one of the subject's forms, or when it carries an email or
    phone number that one of those lines carries (lower-cased, trimmed)."""
    from shopmine.etl.clean import formats_in, normalise_id

    bronze = lake.read(BRONZE_EVENTS_RAW.name)
    parts = []
    for name, fmt in formats_in(bronze, lake.settings).items():
        parsed = parse_fields(bronze.where(F.col("source_format") == name), fmt)
        user, _ = normalise_id(F.col("f_user_id"), fmt.user_id_kind)
        mine = user.isin(*subject.raw_forms)
        pii = [f for f in IDENTIFYING_PII if f in fmt.fields]
        if pii:
            values = {f: F.lower(F.col(f"f_{f}")) for f in pii}
            known = parsed.where(mine).select(*[F.collect_set(v).alias(f) for f, v in values.items()]).first()
            for f, v in values.items():
                if known[f]:  # the distinct emails / phones of one user's lines
                    mine = mine | v.isin(*known[f])
        parts.append(parsed.where(mine).select("source_file", "line_number"))
    if not parts:
        return lake.spark.createDataFrame([], "source_file string, line_number long")
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    return out.distinct()


def matches(lake: Lake, name: str, subject: Subject, lines: DataFrame | None) -> DataFrame:
    """The subject's rows of one table."""
    df = lake.read(name)
    if name in LINE_TABLES:
        assert lines is not None
        return df.join(F.broadcast(lines), ["source_file", "line_number"], "left_semi")
    ids = subject.raw_forms if name in RAW_ID_TABLES else subject.pseudonyms
    return df.where(F.col("user_id").isin(*ids))


def lookup(lake: Lake, subject: Subject, privacy: Privacy) -> dict[str, list[dict]]:
    """Every row about the subject, per table, as JSON-ready dicts (sealed values opened when the key is set)."""
    import json

    lines = subject_lines(lake, subject).persist() if lake.exists(BRONZE_EVENTS_RAW.name) else None
    out: dict[str, list[dict]] = {}
    for name in user_tables(lake) + [t for t in LINE_TABLES if lake.exists(t)]:
        rows = matches(lake, name, subject, lines)
        if privacy.encryption_key is not None:
            if "pii_sealed" in rows.columns:
                rows = rows.withColumn("pii_sealed", privacy.unseal(F.col("pii_sealed")))
            if name == SILVER_QUARANTINE.name and privacy.seal_quarantine:
                rows = rows.withColumn("raw_record", privacy.unseal(F.col("raw_record")))
        found = [json.loads(j) for j in rows.toJSON().collect()]  # one user's rows
        if found:
            out[name] = found
    if lines is not None:
        lines.unpersist()
    return out


def erase(lake: Lake, subject: Subject) -> tuple[dict[str, int], dict[str, int]]:
    """Delete the subject's rows from every table: (rows deleted, version committed) per table touched."""
    lines = subject_lines(lake, subject).persist() if lake.exists(BRONZE_EVENTS_RAW.name) else None
    deleted: dict[str, int] = {}
    versions: dict[str, int] = {}
    for name in user_tables(lake) + [t for t in LINE_TABLES if lake.exists(t)]:
        if matches(lake, name, subject, lines).isEmpty():
            continue
        if name in LINE_TABLES:
            n = lake.delete_matching(name, lines, ["source_file", "line_number"])
        else:
            ids = subject.raw_forms if name in RAW_ID_TABLES else subject.pseudonyms
            n = lake.delete_where(name, "user_id IN (" + ", ".join("'" + i.replace("'", "''") + "'" for i in ids) + ")")
        deleted[name] = n
        versions[name] = lake.version(name)
        log.info("erased %d row(s) from %s (v%d)", n, name, versions[name])
    if lines is not None:
        lines.unpersist()
    return deleted, versions


def vacuum(lake: Lake, names: list[str], retention_hours: float) -> None:
    """VACUUM the tables so the files that held the deleted rows go (once older than the retention, which is the
    user's explicit conf: below Delta's 168 h minimum its safety check is off for that call only)."""
    for name in names:
        lake.vacuum(name, retention_hours)
        log.info("vacuumed %s (retain %g hours)", name, retention_hours)


__all__ = ["Subject", "id_forms", "user_tables", "subject_lines", "lookup", "erase", "vacuum"]
