"""Reading the lake without Spark: delta-rs, polars and DuckDB (through Arrow), with time travel.

This is the BI side's recipe, small enough to copy into a dashboard's code. Tables are the path-based Delta tables
``<lake.root>/<layer>/<name>`` written by the jobs (reader protocol 1, writer protocol 3 for CHECK constraints,
deletion vectors off): every Delta reader can open them, no Spark and no metastore needed.

    from shopmine.surfaces import bi
    bi.polars(root, "gold.user_profiles").filter(...).collect()          # a polars LazyFrame
    bi.duckdb(root, "SELECT segment, count(*) FROM gold.user_profiles GROUP BY 1").fetchall()
    bi.arrow(root, "gold.recs_topn", version=3).to_table()               # time travel by version ...
    bi.arrow(root, "gold.recs_topn", as_of="2025-11-20T08:00:00Z")      # ... or by time

From a shell: ``python -m shopmine.surfaces.bi tables --lake LAKE`` lists the tables with version, rows and protocol, and
``python -m shopmine.surfaces.bi sql --lake LAKE "SELECT ..."`` runs DuckDB SQL naming tables as ``layer.name``.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime
from pathlib import Path

import duckdb as _duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

LAYERS = ("bronze", "silver", "gold", "ops", "bi")
_NAME = re.compile(r"\b(" + "|".join(LAYERS) + r")\.([a-z_][a-z0-9_]*)\b")


def table_path(root: str, name: str) -> str:
    layer, short = name.split(".", 1)
    return f"{str(root).rstrip('/')}/{layer}/{short}"


def delta_table(root: str, name: str, version: int | None = None, as_of: str | datetime | None = None) -> DeltaTable:
    """The table at its current version, at ``version``, or as it was at time ``as_of`` (ISO string or datetime)."""
    dt = DeltaTable(table_path(root, name), version=version)
    if as_of is not None:
        dt.load_as_version(as_of)
    return dt


def arrow(root: str, name: str, version: int | None = None, as_of: str | datetime | None = None) -> pads.Dataset:
    """A lazy Arrow dataset (only the files of that version; filters and projections are pushed down)."""
    return delta_table(root, name, version, as_of).to_pyarrow_dataset()


def polars(root: str, name: str, version: int | None = None) -> pl.LazyFrame:
    """A polars LazyFrame over the table (polars reads Delta through delta-rs)."""
    return pl.scan_delta(table_path(root, name), version=version)


def tables(root: str) -> list[str]:
    """Every Delta table under the lake root, as ``layer.name``."""
    out = []
    for layer in LAYERS:
        folder = Path(root) / layer
        if folder.is_dir():
            out += [f"{layer}.{d.name}" for d in sorted(folder.iterdir()) if (d / "_delta_log").is_dir()]
    return out


def duckdb(root: str, sql: str, version: int | None = None, con: _duckdb.DuckDBPyConnection | None = None):
    """Run DuckDB SQL in which tables are named ``layer.name`` (e.g. ``gold.user_profiles``); each one named is
    registered as an Arrow dataset view (at ``version`` when given). Returns DuckDB's relation."""
    con = con or _duckdb.connect()
    views: dict[str, str] = {}
    for layer, short in set(_NAME.findall(sql)):
        name = f"{layer}.{short}"
        if not (Path(table_path(root, name)) / "_delta_log").is_dir():
            raise FileNotFoundError(f"no Delta table {name} at {table_path(root, name)}")
        view = f"{layer}__{short}"
        con.register(view, arrow(root, name, version))
        views[name] = view
    return con.sql(_NAME.sub(lambda m: views.get(m.group(0), m.group(0)), sql))


def describe(root: str, name: str) -> dict:
    dt = delta_table(root, name)
    proto = dt.protocol()
    adds = pa.table(dt.get_add_actions(flatten=True))  # delta-rs returns an arro3 table; Arrow's C interface
    rows = int(pc.sum(adds.column("num_records")).as_py() or 0) if adds.num_rows else 0
    return {"table": name, "version": dt.version(), "rows": rows, "files": len(dt.file_uris()),
            "reader": proto.min_reader_version, "writer": proto.min_writer_version,
            "features": sorted(set(proto.reader_features or []) | set(proto.writer_features or []))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m shopmine.surfaces.bi", description="read the Shopmine lake without Spark")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tables", help="every table with its version, rows, files and protocol")
    t.add_argument("--lake", required=True)
    s = sub.add_parser("sql", help="DuckDB SQL over the tables, named layer.name")
    s.add_argument("--lake", required=True)
    s.add_argument("--version", type=int, default=None, help="read every table named at this version")
    s.add_argument("query")
    a = p.parse_args(argv)
    try:
        if a.cmd == "tables":
            print(f"{'table':<32}{'version':>8}{'rows':>12}{'files':>7}  protocol")  # noqa: T201 - CLI output
            for name in tables(a.lake):
                d = describe(a.lake, name)
                print(f"{name:<32}{d['version']:>8}{d['rows']:>12,}{d['files']:>7}  "  # noqa: T201
                      f"r{d['reader']}/w{d['writer']} {' '.join(d['features'])}")
        else:
            duckdb(a.lake, a.query, a.version).show(max_rows=50)
    except (FileNotFoundError, DeltaError, _duckdb.Error, OSError) as exc:
        sys.stderr.write(f"shopmine bi: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
