"""Fault injection.

* The driver of ``clean`` and ``featurize`` is killed (SIGKILL to its whole process group: Python and its JVM) at
  random points; after each kill every table still reads at a committed version (Spark and delta-rs), and the rerun
  converges to exactly the tables of an uninterrupted run: no row lost or duplicated.
* Real sample files (Taobao UserBehavior, UCI Online Retail) get random corruptions; ingest + clean still reconcile
  exactly (rows in = lines in the file = accepted + quarantined + duplicates), and every line corrupted in a way with
  one right answer is quarantined with that reason.

CI runs a small version (2 kills of each job, one fuzz seed per format); ``pytest tests/test_faults.py --full`` runs
20 kills of each job and 5 seeds (the issue's load-test size). Two concurrent writers: ``test_concurrency.py``;
executor loss: ``test_cluster.py``; every job run twice: ``test_pipeline_generated.py::test_reruns_leave_tables_identical``.
"""

from __future__ import annotations

import gzip
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chispa import assert_approx_df_equality
from pyspark.sql import functions as F

from conftest import ROOT, job_args, settings_for
from jobs import clean, featurize, generate, ingest, sessionize
from shopmine.io.delta import Lake

pytestmark = pytest.mark.slow  # drivers killed mid-job and rerun

SIZE = ["generate.events=8000", "generate.users=200", "generate.items=300", "generate.files=2"]
VARYING = {"run_id", "updated_at", "updated_by_run", "generated_at", "created_at"}
OUTPUTS = {
    "clean": {"silver.events": ["event_id"], "silver.quarantine": ["source_file", "line_number"],
              "ops.clean_batches": ["ingest_batch_id"]},
    "featurize": {"gold.interactions_daily": ["user_id", "item_id", "event_date"],
                  "gold.user_daily": ["user_id", "event_date"], "gold.interactions": ["user_id", "item_id"],
                  "gold.user_features": ["user_id"], "gold.item_features": ["item_id"],
                  "gold.category_features": ["category_id"]},
}


def _kills(request) -> int:
    return 20 if request.config.getoption("--full") else 2


@pytest.fixture(scope="module")
def stages(spark, tmp_path_factory):
    """Lakes at the start of each faulty job, and the reference lake the uninterrupted jobs produced, with how
    long each job took here."""
    base = tmp_path_factory.mktemp("faults")
    ingested = base / "ingested"
    args = job_args(str(ingested), *SIZE)
    raw = ingested / "raw" / "generated"
    assert generate.main(args) == 0
    assert ingest.main(args + ["--format", "canonical", "--input", str(raw / "csv"), str(raw / "json")]) == 0
    reference = base / "reference"
    shutil.copytree(ingested, reference)
    ref_args = job_args(str(reference), *SIZE)
    seconds = {}
    t0 = time.perf_counter()
    assert clean.main(ref_args) == 0
    seconds["clean"] = time.perf_counter() - t0
    assert sessionize.main(ref_args) == 0
    cleaned = base / "cleaned"
    shutil.copytree(reference, cleaned)
    t0 = time.perf_counter()
    assert featurize.main(ref_args) == 0
    seconds["featurize"] = time.perf_counter() - t0
    return {"clean": ingested, "featurize": cleaned}, reference, seconds


def _run_killed(job: str, lake: Path, delay: float) -> bool:
    """Run the job as its own driver process; SIGKILL its process group after ``delay`` s. True if it was killed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "lib")])}
    proc = subprocess.Popen([sys.executable, str(ROOT / "jobs" / f"{job}.py"), *job_args(str(lake), *SIZE)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def _assert_every_table_reads(spark, lake: Path) -> int:
    """Every Delta table under the lake reads at its latest commit, with Spark and with delta-rs."""
    from deltalake import DeltaTable

    n = 0
    for log_dir in lake.glob("*/*/_delta_log"):
        if not any(log_dir.glob("*.json")):
            continue  # the kill came before the table's first commit: there is no table yet
        path = str(log_dir.parent)
        assert spark.read.format("delta").load(path).count() == DeltaTable(path).to_pyarrow_dataset().count_rows()
        n += 1
    return n


def _assert_same_tables(spark, job: str, lake: Path, reference: Path) -> None:
    for name, key in OUTPUTS[job].items():
        layer, short = name.split(".")
        got = spark.read.format("delta").load(str(lake / layer / short))
        want = spark.read.format("delta").load(str(reference / layer / short))
        cols = [c for c in want.columns if c not in VARYING]
        assert got.count() == want.count() > 0, name
        assert_approx_df_equality(got.select(cols).orderBy(*key), want.select(cols).orderBy(*key), precision=1e-9,
                                  ignore_row_order=True, ignore_nullable=True)


@pytest.mark.parametrize("job", ["clean", "featurize"])
def test_killed_driver_leaves_readable_tables_and_the_rerun_converges(spark, stages, job, request, tmp_path):
    starts, reference, seconds = stages
    rng = random.Random(f"{job}-kills")
    # the job alone took t in this process; a fresh driver adds a JVM start-up: kill anywhere in [0.2, 1.1] x (t + 10 s)
    span = seconds[job] + 10
    module = {"clean": clean, "featurize": featurize}[job]
    killed = 0
    for i in range(_kills(request)):
        lake = tmp_path / f"run{i}"
        shutil.copytree(starts[job], lake)
        killed += _run_killed(job, lake, rng.uniform(0.2, 1.1) * span)
        assert _assert_every_table_reads(spark, lake) >= 3
        assert module.main(job_args(str(lake), *SIZE)) == 0  # the rerun
        _assert_same_tables(spark, job, lake, reference)
        shutil.rmtree(lake)
    assert killed >= 1  # at least one run really died mid-way


# -- malformed input fuzzing ----------------------------------------------------------------------------------------

TAOBAO = "taobao_userbehavior/UserBehavior_2017-11-26_0100-0310.csv.gz"
UCI = "uci_online_retail_sample/online_retail_sample.csv.gz"


def _corrupt(fields: list[str], kind: str, fmt: str, delim: str = ",") -> str:
    user = {"taobao": 0, "online_retail": 6}[fmt]
    when = {"taobao": 4, "online_retail": 4}[fmt]
    f = list(fields)
    if kind == "wrong_column_count":
        f = f[:-3]
    elif kind == "invalid_user_id":
        f[user] = "user#" + f[user]
    elif kind == "unparseable_timestamp":
        f[when] = "soon"
    elif kind == "unknown_event_type":
        f[3] = "teleport"
    elif kind == "invalid_price":
        f[5] = "-" + f[5]
    elif kind == "null_only_row":
        return delim * (len(fields) - 1)
    return delim.join(f)


KINDS = {"taobao": ["wrong_column_count", "invalid_user_id", "unparseable_timestamp", "unknown_event_type",
                    "null_only_row", "duplicate"],
         "online_retail": ["wrong_column_count", "invalid_user_id", "unparseable_timestamp", "invalid_price",
                           "null_only_row", "duplicate"]}


def _plain(line: str, fmt: str) -> bool:
    """A line whose only problem after corruption will be the injected one (UCI has lines without a customer,
    cancellations and non-positive quantities or prices, which clean reports first)."""
    if '"' in line:
        return False
    if fmt != "online_retail":
        return True
    f = line.split(",")
    try:
        return bool(f[6]) and not f[0].startswith("C") and float(f[3]) > 0 and float(f[5]) > 0
    except ValueError:
        return False


def _fuzzed_file(src: Path, fmt: str, seed: int, out: Path, lines: int = 3000) -> tuple[dict[int, str], int]:
    """The first ``lines`` data lines of a sample with ~8 % corrupted; returns {line number: expected reason} and the
    number of injected exact copies."""
    rng = random.Random(seed)
    with gzip.open(src, "rt", encoding="utf-8", newline="") as fh:
        header = fh.readline().rstrip("\n") if fmt == "online_retail" else None
        data = [fh.readline().rstrip("\r\n") for _ in range(lines)]
    out_lines = [header] if header else []
    expected: dict[int, str] = {}
    copies = 0
    for line in data:
        if not line:
            continue
        if rng.random() < 0.08 and _plain(line, fmt):
            kind = rng.choice(KINDS[fmt])
            if kind == "duplicate":
                out_lines += [line, line]
                copies += 1
                continue
            out_lines.append(_corrupt(line.split(","), kind, fmt))
            expected[len(out_lines)] = kind  # 1-based line number in the file
        else:
            out_lines.append(line)
    if expected.get(len(out_lines)) == "wrong_column_count":
        # A short last line is what a file cut off mid-line looks like; clean reports it as such (a bad shape on a
        # file's last line is `truncated_line`), since the text reader does not keep whether a newline followed it.
        expected[len(out_lines)] = "truncated_line"
    out.write_text("\n".join(out_lines) + "\n", encoding="utf-8")
    return expected, copies


@pytest.mark.shared_data
@pytest.mark.parametrize("fmt,sample", [("taobao", TAOBAO), ("online_retail", UCI)])
def test_fuzzed_real_samples_reconcile_exactly(spark, shared_data, fmt, sample, request, tmp_path):
    seeds = range(5) if request.config.getoption("--full") else range(1)
    for seed in seeds:
        root = tmp_path / f"lake{seed}"
        src = tmp_path / f"{fmt}-{seed}.csv"
        expected, copies = _fuzzed_file(shared_data / sample, fmt, seed, src)
        assert len(expected) > 100
        args = job_args(str(root))
        assert ingest.main(args + ["--format", fmt, "--input", str(src)]) == 0
        assert clean.main(args) == 0
        lake = Lake(spark, settings_for(str(root)))
        rec = lake.read("ops.clean_batches").first()
        data_lines = sum(1 for _ in src.open(encoding="utf-8")) - (1 if fmt == "online_retail" else 0)
        assert rec["rows_in"] == data_lines
        assert rec["rows_in"] == rec["accepted"] + rec["quarantined"] + rec["duplicates_exact"] + rec["duplicates_near"]
        assert lake.read("silver.events").count() == rec["accepted"]
        assert lake.read("silver.quarantine").count() == rec["quarantined"]
        assert rec["duplicates_exact"] >= copies
        got = {r["line_number"]: r["reason"] for r in
               lake.read("silver.quarantine").where(F.col("line_number").isin(list(expected))).collect()}
        assert got == expected, {k: (v, got.get(k)) for k, v in expected.items() if got.get(k) != v}
