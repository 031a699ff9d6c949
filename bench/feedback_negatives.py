"""Served-but-ignored items as ALS negatives (recommend.served_negatives), on the 814 complete Taobao users.

Protocol: features as of day 5 (2017-11-29) and an ALS-served recommend run there, as if in production; then the
whole history, time split (the last 2 days held out, training up to 2017-12-01), ALS retrained twice with the same
parameters: with the negatives (items served on day 5 that returning users ignored on days 6-7) and without. Same
seed, same split: the difference is the negatives alone.

    .venv/bin/python bench/feedback_negatives.py [--out bench/results/feedback_negatives_taobao814.json]
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
            "recommend.ks=[10,20]", "recommend.exclude=bought", "recommend.models=[als]", "recommend.serve_model=als",
            "recommend.als.rank=[16]", "recommend.als.reg_param=[0.05]", "recommend.als.alpha=[3.0]"]
COLS = ("precision@10", "recall@10", "ndcg@10", "map@10", "hit_rate@10", "recall@20", "coverage@10")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "feedback_negatives_taobao814.json"))
    p.add_argument("--weights", type=float, nargs="+", default=[1.0, 3.0])
    args = p.parse_args()
    if not DATA.exists():
        sys.exit(f"the Taobao 814-user sample is not at {DATA} (../shared/data beside the project)")
    from jobs import clean, featurize, ingest, recommend, sessionize

    lake = tempfile.mkdtemp(prefix="shopmine-negatives-")
    base = [kv.format(lake=lake) for kv in SETTINGS]
    seconds = run_steps(base + ["features.as_of=2017-11-29"], [
        ("ingest", ingest.main, ["--format", "taobao", "--input", str(DATA)]), ("clean", clean.main, []),
        ("sessionize", sessionize.main, []), ("featurize_day5", featurize.main, ["--full"]),
        ("recommend_day5", recommend.main, ["--force"])])
    seconds |= run_steps(base, [("featurize_all", featurize.main, ["--full"])])
    results = {}
    # the served lists are replaced by each run: the runs with negatives come first, each reading the day-5 lists
    for w in args.weights:
        on = base + ["recommend.served_negatives.enabled=true", f"recommend.served_negatives.weight={w}"]
        seconds |= run_steps(on, [(f"recommend_negatives_w{w:g}", recommend.main, ["--force"])])
        run, ours = latest_metrics(on)
        results[f"als + negatives (weight {w:g})"] = ours["als"]
        if w != args.weights[-1]:  # put the day-5 lists back for the next weight
            seconds |= run_steps(base + ["features.as_of=2017-11-29"], [
                ("featurize_day5_again", featurize.main, ["--full"]), ("recommend_day5_again", recommend.main, ["--force"])])
            seconds |= run_steps(base, [("featurize_all_again", featurize.main, ["--full"])])
    seconds |= run_steps(base, [("recommend_plain", recommend.main, ["--force"])])
    _, ours = latest_metrics(base)
    results["als (no negatives)"] = ours["als"]
    write_json(args.out, {"data": DATA.name, "protocol": __doc__.split("\n\n")[1], "conf": SETTINGS,
                          "seconds": seconds, "results": results})
    print(f"{'model':<30}" + "".join(f"{c:>13}" for c in COLS) + f"{'negatives':>11}")  # noqa: T201
    for name, v in results.items():
        neg = v["details"].get("served_negatives")
        print(f"{name:<30}" + "".join(f"{v[c]:>13.4f}" for c in COLS) + f"{neg if neg is not None else '-':>11}")  # noqa: T201
    print(f"wrote {args.out}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
