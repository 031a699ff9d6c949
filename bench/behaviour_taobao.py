"""Behaviour predictors on real e-commerce histories: the 814 complete Taobao UserBehavior users (../shared/data),
through the ordinary jobs (ingest -> clean -> sessionize -> featurize -> train-predict [-> train-cnn]), with issue 32's
protocol: features before 2017-12-02 00:00 UTC (the lake's days are UTC days: 08:00 China time), labels from then to
the end of the data (12-03 23:59 China time, 40 h; a 2-day horizon), three rolling training
cutoffs; every model beside the majority baseline and the rules, and the served choice.

    .venv/bin/python bench/behaviour_taobao.py [--out bench/results/behaviour_taobao814.json] [--lake DIR]
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
SETTINGS = ["lake.root={lake}", "spark.master=local[*]", "predict.horizon_days=2", "predict.test_cutoff=2017-12-02",
            "predict.tasks=[purchase,item_purchase]",
            "predict.cnn.epochs=10", "predict.cnn.batch_size=32", "predict.cnn.compare=[sgd_mse]"]
PROTOCOL = ("features < 2017-12-02 00:00 UTC (08:00 China time), labels 2017-12-02 00:00 UTC .. the end of the data "
            "(2017-12-03 15:59 UTC), 3 training cutoffs one day apart")
HEADLINE = ("roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1", "macro_f1", "log_loss")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "behaviour_taobao814.json"))
    p.add_argument("--lake", default=None, help="reuse a lake that already holds the ingested sample")
    p.add_argument("--cnn", action="store_true", help="also run train-cnn (next_category)")
    p.add_argument("--conf", action="append", default=[], help="an extra key=value setting (repeatable)")
    args = p.parse_args()
    if not DATA.exists():
        sys.exit(f"the Taobao 814-user sample is not at {DATA} (../shared/data beside the project)")
    from jobs import clean, featurize, ingest, sessionize, train_cnn, train_predict

    lake = args.lake or tempfile.mkdtemp(prefix="shopmine-taobao-behaviour-")
    conf = SETTINGS + args.conf
    settings = [kv.format(lake=lake) for kv in conf]
    seconds = run_steps(settings, [("ingest", ingest.main, ["--format", "taobao", "--input", str(DATA)]),  # no-ops
                                   # when --lake already holds the sample
                                   ("clean", clean.main, []), ("sessionize", sessionize.main, []),
                                   ("featurize", featurize.main, []),
                                   ("train-predict", train_predict.main, ["--force"])]
                        + ([("train-cnn", train_cnn.main, ["--force"])] if args.cnn else []))
    ours = {model: m for job in ("train-predict", "train-cnn") for model, m in latest_metrics(settings, job)[1].items()}
    write_json(args.out, {"data": DATA.name, "protocol": PROTOCOL,
                          "conf": conf, "seconds": seconds, "ours": ours,
                          "claimed_for_the_design": {"accuracy": 0.90, "recall": 0.85, "f1": 0.875,
                                                     "note": "claimed on 100k records, protocol unpublished"}})
    print(f"{'model':<30}" + "".join(f"{c:>10}" for c in HEADLINE))  # noqa: T201 - a benchmark report
    for model, v in sorted(ours.items()):
        print(f"{model:<30}" + "".join(f"{v[c]:>10.4f}" if c in v else f"{'-':>10}" for c in HEADLINE))  # noqa: T201
    print(f"wrote {args.out}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
