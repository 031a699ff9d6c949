"""Recommender quality on MovieLens-100k with the protocol of ../shared/REFERENCE.md (Microsoft Recommenders):
per-user random 75/25 split, k = 10, items seen in training removed, MAP divided by the number of relevant items.

The ratings go through the same jobs as any source: ingest (movielens adapter) -> clean -> sessionize -> featurize
-> recommend. Protocol settings (passed as --conf): every rating is one interaction of strength 1 (no time decay:
the split ignores time), the explicit rating is kept beside it for the item-CF formula.

    .venv/bin/python bench/recsys_movielens.py [--out bench/results/recsys_movielens.json] [--lake DIR]

Writes JSON: our metrics per model, the published rows, seconds per step.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, SHARED_DATA, latest_metrics, run_steps, write_json  # noqa: E402

DATA = SHARED_DATA / "movielens_100k" / "u.data.gz"

PUBLISHED = {  # ../shared/REFERENCE.md, Microsoft Recommenders README (MAP, nDCG@10, Precision@10, Recall@10)
    "ALS (Spark, explicit)": (0.0047, 0.0442, 0.0485, 0.0178),
    "SAR (item similarity)": (0.1106, 0.3825, 0.3308, 0.1764),
    "BPR": (0.1325, 0.4420, 0.3882, 0.2125),
    "NCF": (0.1077, 0.3961, 0.3473, 0.1808),
    "LightGCN": (0.0885, 0.4198, 0.3796, 0.1443),
    "BiVAE": (0.1461, 0.4751, 0.4118, 0.2191),
}
PROTOCOL = [
    "lake.root={lake}", "spark.master=local[*]",
    "features.half_life_days=1000000", "features.event_weights.review=1",
    "recommend.split=stratified", "recommend.test_ratio=0.25", "recommend.seed=42",
    "recommend.exclude=seen", "recommend.ks=[10]", "recommend.select_k=10", "recommend.relevant_types=[review]",
    "recommend.models=[popularity,als,item_cf,item_cf_sim,item_cf_sum]", "recommend.top_n=10",
    "recommend.als.rank=[32,64]", "recommend.als.reg_param=[0.1,0.3,1.0]", "recommend.als.alpha=[1.0,3.0]",
    "recommend.als.max_iter=15", "recommend.item_cf.neighbours=100", "recommend.item_cf.max_items_per_user=1000",
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "recsys_movielens.json"))
    p.add_argument("--lake", default=None, help="lake folder (default: a fresh temp folder)")
    args = p.parse_args()
    if not DATA.exists():
        sys.exit(f"MovieLens-100k not found at {DATA} (../shared/data beside the project)")
    from jobs import clean, featurize, ingest, recommend, sessionize

    lake = args.lake or tempfile.mkdtemp(prefix="shopmine-ml100k-")
    settings = [kv.format(lake=lake) for kv in PROTOCOL]
    seconds = run_steps(settings, [("ingest", ingest.main, ["--format", "movielens", "--input", str(DATA)]),
                                   ("clean", clean.main, []), ("sessionize", sessionize.main, []),
                                   ("featurize", featurize.main, []), ("recommend", recommend.main, ["--force"])])
    run, ours = latest_metrics(settings)
    write_json(args.out, {
        "protocol": "stratified 75/25 per user (seed 42), k=10, seen items removed, MAP / |relevant|",
        "conf": PROTOCOL, "seconds": seconds, "run_id": run, "ours": ours,
        "published": {k: dict(zip(("map", "ndcg@10", "precision@10", "recall@10"), v)) for k, v in PUBLISHED.items()}})
    print(f"{'model':<24}{'MAP':>8}{'nDCG@10':>9}{'P@10':>8}{'R@10':>8}")  # noqa: T201 - a benchmark report
    for model, v in ours.items():
        print(f"{model:<24}{v['map@10']:>8.4f}{v['ndcg@10']:>9.4f}{v['precision@10']:>8.4f}{v['recall@10']:>8.4f}")  # noqa: T201
    for model, v in PUBLISHED.items():
        print(f"{model + ' (published)':<24}{v[0]:>8.4f}{v[1]:>9.4f}{v[2]:>8.4f}{v[3]:>8.4f}")  # noqa: T201
    print(f"wrote {args.out}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
