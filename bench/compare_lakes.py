"""Compare every Delta table of two lakes row by row, without Spark (delta-rs): did a refactor change any output?

    .venv/bin/python bench/compare_lakes.py LAKE_A LAKE_B

Rows are compared as multisets. Left out: columns that differ on every run by design (run ids, timestamps,
durations, the raw files' generated names, a lake's own path inside strings, the settings hash that includes the lake
root). Floats are compared at 4 significant digits. For a table that differs it prints the columns that differ and
two pairs of differing rows.
"""
import math
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable

VOLATILE = ("run_id", "_at", "time_", "seconds", "duration", "started", "finished", "elapsed", "artifact", "path",
            "mlflow", "version", "processing", "code", "host", "pid", "batch_id", "git", "params_json", "source_file", "fingerprint", "subject", "updated_by", "conf_hash")


def tables(root: Path) -> dict[str, Path]:
    return {str(p.parent.relative_to(root)).replace("/", "."): p.parent for p in root.glob("**/_delta_log")
            if "_staging" not in str(p)}


ROOTS = []


def norm(v):
    if isinstance(v, bytes):
        for r in ROOTS:
            v = v.replace(r.encode(), b"<lake>")
        return v
    if isinstance(v, float):
        return None if math.isnan(v) else float(f"{v:.4g}")
    if isinstance(v, list):
        return tuple(norm(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, norm(x)) for k, x in v.items()))
    if isinstance(v, tuple):
        return tuple(norm(x) for x in v)
    return v


def rows(path: Path, drop: set[str]):
    t = DeltaTable(str(path)).to_pyarrow_table()
    cols = [c for c in t.column_names if c not in drop]
    t = t.select(cols)
    for i, f in enumerate(t.schema):
        if pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
            t = t.set_column(i, f.name, t.column(i).cast(pa.binary()))
    return cols, Counter(tuple(norm(r[c]) for c in cols) for r in t.to_pylist())


def main(a: str, b: str) -> int:
    ROOTS.extend([a, b])
    ta, tb = tables(Path(a)), tables(Path(b))
    for name in sorted(set(ta) | set(tb)):
        if name not in ta or name not in tb:
            print(f"{name:32} only in {'A' if name in ta else 'B'}")
            continue
        cols_a = set(DeltaTable(str(ta[name])).to_pyarrow_table().column_names)
        cols_b = set(DeltaTable(str(tb[name])).to_pyarrow_table().column_names)
        drop = {c for c in cols_a | cols_b if any(v in c for v in VOLATILE)}
        extra = sorted((cols_a ^ cols_b) - drop)
        drop |= cols_a ^ cols_b
        ca, ra = rows(ta[name], drop)
        cb, rb = rows(tb[name], drop)
        na, nb = sum(ra.values()), sum(rb.values())
        diff = sum((ra - rb).values())
        status = "equal" if ra == rb else f"{diff:,} of {na:,} rows differ"
        note = f" (columns only on one side: {extra})" if extra else ""
        print(f"{name:32} A {na:>9,}  B {nb:>9,}  {status}{note}  [left out: {sorted(drop)}]" if ra != rb or extra
              else f"{name:32} A {na:>9,}  B {nb:>9,}  equal")
        if ra != rb and len(ca) < 40:
            # which columns differ: compare column by column
            for i, col in enumerate(ca):
                xa = Counter(r[i] for r in ra.elements())
                xb = Counter(r[i] for r in rb.elements())
                if xa != xb:
                    print(f"    column {col} differs")
            only_a, only_b = list((ra - rb).elements())[:2], list((rb - ra).elements())[:2]
            for x, y in zip(only_a, only_b):
                print("    A:", str(dict(zip(ca, x)))[:600])
                print("    B:", str(dict(zip(cb, y)))[:600])
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
