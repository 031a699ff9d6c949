"""Delta maintenance: OPTIMIZE (bin-packing compaction, Z-order clustering where reads filter by user or item) and
VACUUM (delete files no version inside the retention references), with file statistics before and after."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

from shopmine.conf import ConfError, Settings
from shopmine.io.delta import Lake
from shopmine.io.tables import OPS_MAINTENANCE, TABLES

log = logging.getLogger("shopmine.maintain")


def plan(lake: Lake, settings: Settings) -> list[tuple[str, list[str]]]:
    """(table, Z-order columns) for every table to maintain; configuration mistakes name the key."""
    conf = settings.maintain
    unknown = sorted(set(conf.tables) - set(TABLES)) + sorted(set(conf.zorder) - set(TABLES))
    if unknown:
        raise ConfError(f"config key 'maintain': unknown table(s) {unknown}; known: {sorted(TABLES)}")
    for name, cols in conf.zorder.items():
        spec = TABLES[name]
        bad = [c for c in cols if c not in spec.schema.fieldNames()]
        parts = [c for c in cols if c in spec.partition_by]
        if bad or parts:
            raise ConfError(f"config key 'maintain.zorder.{name}': "
                            + (f"no column(s) {bad} in {name}" if bad else f"{parts} partition {name}; "
                               "Z-order clusters within partitions, by other columns"))
    names = conf.tables or [n for n in TABLES if n != OPS_MAINTENANCE.name]
    return [(n, conf.zorder.get(n, [])) for n in names if lake.exists(n)]


def run_maintain(lake: Lake, settings: Settings, run_id: str) -> list[tuple]:
    """OPTIMIZE and VACUUM every planned table; one ``ops.maintenance`` row per table (also returned)."""
    conf = settings.maintain
    rows = []
    todo = plan(lake, settings)
    for i, (name, zorder) in enumerate(todo, 1):
        t0 = time.perf_counter()
        before = lake.detail(name)
        opt = lake.optimize(name, zorder) if conf.optimize else {"files_added": 0, "files_removed": 0}
        after = lake.detail(name)
        vacuumed = lake.vacuum(name, conf.retention_hours) if conf.vacuum else 0
        seconds = time.perf_counter() - t0
        log.info("[%d/%d] %-28s files %5d -> %5d, MB %8.2f -> %8.2f%s, vacuumed %d files (%.1fs)", i, len(todo), name,
                 before["files"], after["files"], before["bytes"] / 1e6, after["bytes"] / 1e6,
                 f", z-order by {', '.join(zorder)}" if zorder and conf.optimize else "", vacuumed, seconds)
        rows.append((run_id, name, ",".join(zorder) if zorder and conf.optimize else None, before["files"],
                     before["bytes"], after["files"], after["bytes"], opt["files_removed"], opt["files_added"],
                     vacuumed, float(conf.retention_hours) if conf.vacuum else None, float(seconds),
                     datetime.now(timezone.utc)))
    if rows:
        lake.append(lake.spark.createDataFrame(rows, OPS_MAINTENANCE.schema), OPS_MAINTENANCE.name)
    return rows
