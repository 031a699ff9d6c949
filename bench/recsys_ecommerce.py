"""Recommenders on real e-commerce histories: the 814 complete Taobao UserBehavior users (../shared/data), time
split (the last 2 days held out; training re-folded from events before them), every model against the baselines.

    .venv/bin/python bench/recsys_ecommerce.py [--out bench/results/recsys_taobao814.json] [--lake DIR]
        [--conf key=value ...]   (settings on top of the protocol's, recorded in the results)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, SHARED_DATA, latest_metrics, run_steps, write_json  # noqa: E402

DATA = SHARED_DATA / "taobao_userbehavior_814users" / "UserBehavior_first814users.csv.gz"
SETTINGS = ["lake.root={lake}", "spark.master=local[*]", "recommend.split=time", "recommend.holdout_days=2",
            "recommend.ks=[10,20]", "recommend.exclude=bought",
            "recommend.als.rank=[16,32,64]", "recommend.als.reg_param=[0.05,0.3]", "recommend.als.alpha=[3.0,10.0]"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "recsys_taobao814.json"))
    p.add_argument("--lake", default=None, help="keep the lake here (a rerun only re-runs recommend)")
    p.add_argument("--conf", action="append", default=[], help="an extra key=value setting (repeatable)")
    args = p.parse_args()
    if not DATA.exists():
        sys.exit(f"the Taobao 814-user sample is not at {DATA} (../shared/data beside the project)")
    from jobs import clean, featurize, ingest, recommend, sessionize

    lake = args.lake or tempfile.mkdtemp(prefix="shopmine-taobao-")
    conf = SETTINGS + args.conf
    settings = [kv.format(lake=lake) for kv in conf]
    seconds = run_steps(settings, [("ingest", ingest.main, ["--format", "taobao", "--input", str(DATA)]),
                                   ("clean", clean.main, []), ("sessionize", sessionize.main, []),
                                   ("featurize", featurize.main, []), ("recommend", recommend.main, ["--force"])])
    run, ours = latest_metrics(settings)
    write_json(args.out, {"data": str(DATA.name), "protocol": "time split, last 2 days held out, bought items excluded",
                          "conf": conf, "seconds": seconds, "run_id": run, "ours": ours})
    cols = ("precision@10", "recall@10", "ndcg@10", "map@10", "hit_rate@10", "recall@20", "coverage@10")
    print(f"{'model':<22}" + "".join(f"{c:>13}" for c in cols))  # noqa: T201 - a benchmark report
    for model, v in ours.items():
        print(f"{model:<22}" + "".join(f"{v[c]:>13.4f}" for c in cols))  # noqa: T201
    print(f"wrote {args.out}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
