"""Models against the rules on the generated lake (issue 26 part 3 / issue 32): the generator's users have tastes,
repeat visits and a purchase propensity, so the learned models should win there. Runs the ordinary jobs (generate
-> ingest -> clean -> sessionize -> featurize -> recommend -> train-predict) at the default size or another, and
writes every recommender's and behaviour model's metrics with the served choice.

    .venv/bin/python bench/generated_quality.py [--out bench/results/generated_quality.json] [--lake DIR]
        [--conf key=value ...]   (e.g. generate.events=60000; recorded in the results)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, latest_metrics, run_steps, write_json  # noqa: E402

SETTINGS = ["lake.root={lake}", "spark.master=local[*]", "predict.tasks=[purchase,item_purchase]"]
RANKING = ("ndcg@10", "recall@20", "map@10")
BINARY = ("roc_auc", "pr_auc")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "generated_quality.json"))
    p.add_argument("--lake", default=None, help="a lake folder (default: a new temporary one)")
    p.add_argument("--conf", action="append", default=[], help="an extra key=value setting (repeatable)")
    args = p.parse_args()
    from jobs import clean, featurize, generate, ingest, recommend, sessionize, train_predict

    lake = args.lake or tempfile.mkdtemp(prefix="shopmine-generated-quality-")
    conf = SETTINGS + args.conf
    settings = [kv.format(lake=lake) for kv in conf]
    raw = Path(lake) / "raw" / "generated"
    seconds = run_steps(settings, [("generate", generate.main, []),
                                   ("ingest", ingest.main, ["--format", "canonical", "--input", str(raw / "csv"),
                                                            str(raw / "json")]),
                                   ("clean", clean.main, []), ("sessionize", sessionize.main, []),
                                   ("featurize", featurize.main, []), ("recommend", recommend.main, ["--force"]),
                                   ("train-predict", train_predict.main, ["--force"])])
    ours = {job: latest_metrics(settings, job)[1] for job in ("recommend", "train-predict")}
    write_json(args.out, {"conf": conf, "seconds": seconds, "ours": ours})
    for job, cols in (("recommend", RANKING), ("train-predict", BINARY)):
        print(f"{job:<30}" + "".join(f"{c:>11}" for c in cols))  # noqa: T201 - a benchmark report
        for model, v in sorted(ours.get(job, {}).items()):
            print(f"  {model:<28}" + "".join(f"{v[c]:>11.4f}" if c in v else f"{'-':>11}" for c in cols))  # noqa: T201
    print(f"seconds: {seconds}\nwrote {args.out}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
