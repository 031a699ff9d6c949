"""A one-screen summary of the lake: every table's location, version and rows, reconciliation, quarantine reasons."""

from __future__ import annotations

from pyspark.sql import functions as F

from shopmine.io.delta import Lake
from shopmine.io.tables import OPS_CLEAN_BATCHES, SILVER_QUARANTINE, TABLES


def lake_summary(lake: Lake) -> str:
    lines = [f"Shopmine lake at {lake.root}", "", f"{'table':<24}{'version':>8}{'rows':>14}  location"]
    for name in TABLES:
        if not lake.exists(name):
            continue
        rows = lake.read(name).count()
        lines.append(f"{name:<24}{lake.version(name):>8}{rows:>14,}  {lake.ident(name)}")
    if lake.exists(OPS_CLEAN_BATCHES.name):
        t = lake.read(OPS_CLEAN_BATCHES.name).agg(*[F.sum(c).alias(c) for c in (
            "rows_in", "accepted", "quarantined", "duplicates_exact", "duplicates_near")]).first()
        lines += ["", "clean reconciliation: rows in {:,} = accepted {:,} + quarantined {:,} + exact duplicates {:,} "
                  "+ near duplicates {:,}".format(*(int(x or 0) for x in t))]
    if lake.exists(SILVER_QUARANTINE.name):
        reasons = lake.read(SILVER_QUARANTINE.name).groupBy("reason").count().orderBy(F.desc("count")).collect()
        if reasons:  # bounded: one row per reason code
            lines += ["quarantine by reason: " + ", ".join(f"{r['reason']} {r['count']:,}" for r in reasons)]
    return "\n".join(lines) + "\n"
