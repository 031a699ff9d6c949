"""spark-submit.sh on a real Spark standalone cluster: a master and two workers started from the pip-installed pyspark
on loopback. The ETL and feature jobs run on it through spark-submit.sh, the same jobs run on local[2] into a second
lake, and every table holds the same rows in both (columns naming the lake's own paths aside)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from chispa import assert_approx_df_equality
from pyspark.sql import functions as F

from conftest import ROOT

pytestmark = pytest.mark.slow  # a standalone cluster and spark-submit JVMs

JOBS = [("generate", []), ("clean", []), ("sessionize", []), ("featurize", [])]
# columns that name where a lake is (file paths, fingerprints of those paths) or when a run happened
VARYING = {"source_file", "ingest_batch_id", "source_fingerprint", "ingested_at", "updated_at", "updated_by_run",
           "run_id", "generated_at", "created_at"}
TABLES = {"silver.events": ["event_id"], "silver.quarantine": ["line_number", "raw_record"],
          "gold.sessions": ["session_id"], "gold.interactions": ["user_id", "item_id"],
          "gold.user_features": ["user_id"], "gold.item_features": ["item_id"]}
SIZE = ["generate.events=6000", "generate.users=200", "generate.items=300", "generate.files=2"]
OVERLAY = """
spark: {master: null, driver_memory: 1g, shuffle_partitions: 4}
generate: {events: 6000, users: 200, items: 300, files: 2}
lake: {root: %s}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, check, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s")


def _alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as r:
            return sum(w["state"] == "ALIVE" for w in json.load(r)["workers"])
    except OSError:
        return 0


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    """spark://127.0.0.1:<port> with two 1-core workers; stopped (by pid) after the module."""
    import pyspark

    home = Path(pyspark.__file__).parent
    logs = tmp_path_factory.mktemp("standalone")
    port, ui = _free_port(), _free_port()
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOG_DIR": str(logs)}
    spark_class = [str(home / "bin" / "spark-class")]
    procs = [subprocess.Popen(spark_class + ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                             "--port", str(port), "--webui-port", str(ui)],
                              stdout=open(logs / "master.log", "w"), stderr=subprocess.STDOUT, env=env,
                              start_new_session=True)]
    try:
        _wait("the master", lambda: _alive_workers(ui) == 0 and _port_open(port))
        for i in range(2):
            procs.append(subprocess.Popen(
                spark_class + ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "1",
                               "--memory", "2g", "--webui-port", str(_free_port()), "--work-dir", str(logs / f"w{i}"),
                               f"spark://127.0.0.1:{port}"],
                stdout=open(logs / f"worker{i}.log", "w"), stderr=subprocess.STDOUT, env=env,
                start_new_session=True))
        _wait("two workers", lambda: _alive_workers(ui) == 2)
        yield f"spark://127.0.0.1:{port}", ui, procs[1:]
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _run_jobs(master: str, lake: Path, overlay: Path) -> None:
    overlay.write_text(OVERLAY % json.dumps(str(lake)))
    extra = ["--conf", "spark.driver.host=127.0.0.1"] if master.startswith("spark://") else []
    raw = lake / "raw" / "generated"
    steps = [("generate", []), ("ingest", ["--format", "canonical", "--input", str(raw / "csv"), str(raw / "json")]),
             *JOBS[1:]]
    for job, args in steps:
        r = subprocess.run([str(ROOT / "spark-submit.sh"), job, "--master", master, "--overlay", str(overlay),
                            *extra, *args], capture_output=True, text=True, timeout=900,
                           env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"})
        assert r.returncode == 0, f"{job} on {master}: {r.stderr[-2000:]}\n{r.stdout[-4000:]}"


def _run_in_process(lake: Path) -> None:
    """The reference: the same jobs in this test process on local[2] (no spark-submit start-up to pay again)."""
    from conftest import job_args
    from jobs import clean, featurize, generate, ingest, sessionize

    args = job_args(str(lake), *SIZE)
    raw = lake / "raw" / "generated"
    assert generate.main(args) == 0
    assert ingest.main(args + ["--format", "canonical", "--input", str(raw / "csv"), str(raw / "json")]) == 0
    for job in (clean, sessionize, featurize):
        assert job.main(args) == 0, job.__name__


@pytest.fixture(scope="module")
def lakes(standalone, spark, tmp_path_factory):
    """The ETL and feature jobs run on the cluster into one lake and in-process into another."""
    master, ui, _ = standalone
    root = tmp_path_factory.mktemp("cluster-lakes")
    _run_jobs(master, root / "cluster", root / "cluster.yaml")
    with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=5) as r:
        apps = json.load(r)["completedapps"]
    assert len(apps) == len(JOBS) + 1, apps  # every job ran as an application of the cluster
    _run_in_process(root / "local")
    return {"cluster": root / "cluster", "local": root / "local", "overlay": root / "cluster.yaml"}


def test_jobs_on_a_standalone_cluster_match_a_local_run(lakes, spark):
    _assert_same(spark, lakes["cluster"], lakes["local"], TABLES)


def test_losing_a_worker_mid_job_changes_nothing(standalone, lakes, spark):
    """One worker (and the executor it runs) is killed while `clean --all` re-cleans every batch on the cluster,
    once the job has tasks running: Spark reruns the lost tasks on the other worker and the tables still equal the
    local run's."""
    master, _, workers = standalone
    ui = _free_port()
    cmd = [str(ROOT / "spark-submit.sh"), "clean", "--all", "--master", master, "--overlay", str(lakes["overlay"]),
           "--conf", "spark.driver.host=127.0.0.1", "--conf", f"spark.ui.port={ui}"]
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        _wait("running tasks", lambda: _active_tasks(ui) > 0, timeout=240)
        os.killpg(workers[1].pid, signal.SIGKILL)
        out, _ = job.communicate(timeout=900)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, out[-4000:]
    _assert_same(spark, lakes["cluster"], lakes["local"], {k: v for k, v in TABLES.items() if k.startswith("silver")})


def _active_tasks(ui_port: int) -> int:
    """Tasks running now in the driver's application (its UI's REST API), 0 while it is not up."""
    try:
        base = f"http://127.0.0.1:{ui_port}/api/v1/applications"
        with urllib.request.urlopen(base, timeout=2) as r:
            app = json.load(r)[0]["id"]
        with urllib.request.urlopen(f"{base}/{app}/stages?status=active", timeout=2) as r:
            return sum(st.get("numActiveTasks", 0) for st in json.load(r))
    except (OSError, IndexError, ValueError):
        return 0


def _assert_same(spark, cluster_lake: Path, local_lake: Path, tables: dict[str, list[str]]) -> None:
    for name, key in tables.items():
        layer, short = name.split(".")
        cluster = spark.read.format("delta").load(str(cluster_lake / layer / short))
        local = spark.read.format("delta").load(str(local_lake / layer / short))
        cols = [c for c in cluster.columns if c not in VARYING]
        assert cluster.count() > 0, name

        def comparable(df):
            if "detail" in df.columns:  # a future_timestamp detail names the run's ingest time
                df = df.withColumn("detail", F.regexp_replace("detail", "the ingest time .*", "the ingest time"))
            return df.select(cols).orderBy(*key)

        # doubles summed in another partition order may differ in the last bits
        assert_approx_df_equality(comparable(cluster), comparable(local), precision=1e-9,
                                  ignore_row_order=True, ignore_nullable=True)
