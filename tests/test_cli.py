"""The user interface: spark-submit.sh, exit codes and one-line errors, ops.runs records."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from conftest import ROOT, job_args, settings_for
from jobs import clean as clean_job
from jobs import ingest as ingest_job
from shopmine.io.delta import Lake


def sh(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK")}
    return subprocess.run([str(ROOT / "spark-submit.sh"), *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=ROOT)


def test_help_lists_every_job():
    out = sh("--help")
    assert out.returncode == 0
    jobs = sorted(p.stem for p in (ROOT / "jobs").glob("*.py") if p.stem != "__init__")
    assert len(jobs) >= 12
    for job in [{"profiles": "profile"}.get(j, j).replace("_", "-") for j in jobs] + ["test"]:
        assert re.search(rf"\n  {job} +\S", out.stdout), job  # listed, with its description
    assert sh("nosuchjob").returncode == 2


def test_no_job_file_shadows_a_standard_module():
    """spark-submit puts jobs/ first on sys.path: jobs/profile.py once shadowed `profile`, which pyspark imports."""
    import sys

    clashes = [p.name for p in (ROOT / "jobs").glob("*.py") if p.stem in sys.stdlib_module_names]
    assert clashes == []


@pytest.mark.slow
def test_real_spark_submit_run_reports_bad_input_in_one_line(tmp_path):
    """Through the real spark-submit (a JVM of its own): a missing file is exit 1 with one named line."""
    missing = tmp_path / "nowhere.csv"
    out = sh("ingest", "--conf", f"lake.root={tmp_path / 'lake'}", "--format", "taobao", "--input", str(missing))
    assert out.returncode == 1, out.stderr[-2000:]
    ours = [line for line in out.stderr.splitlines() if line.startswith("shopmine ingest:")]
    assert ours == [f"shopmine ingest: input {missing}: no such file or directory"]
    assert "Traceback" not in out.stderr


def test_configuration_errors_exit_2_naming_the_key(lake_root, capsys):
    assert clean_job.main(job_args(lake_root, "clean.dedupe.windw=3")) == 2
    err = capsys.readouterr().err.strip()
    assert err == "shopmine clean: configuration error: config key 'clean.dedupe.windw' in --conf: unknown key"


def test_clean_before_ingest_says_what_to_run(spark, lake_root, capsys):
    assert clean_job.main(job_args(lake_root)) == 1
    assert "table bronze.events_raw does not exist yet" in capsys.readouterr().err


def test_runs_are_recorded_with_counts_and_versions(spark, tmp_path, lake_root):
    f = tmp_path / "t.csv"
    f.write_text("1,2,3,pv,1511658000\n1,2,3,pv,1511658000\n,2,3,pv,1511658000\n")
    assert ingest_job.main(job_args(lake_root) + ["--format", "taobao", "--input", str(f)]) == 0
    assert clean_job.main(job_args(lake_root)) == 0
    lake = Lake(spark, settings_for(lake_root))
    run = lake.read("ops.runs").where("job = 'clean'").first()
    assert (run["status"], run["rows_read"], run["rows_written"], run["rows_rejected"]) == ("ok", 3, 1, 1)
    assert run["counts"]["duplicates_exact"] == 1 and run["counts"]["reason_missing_user"] == 1
    assert run["input_versions"]["bronze.events_raw"] == lake.version("bronze.events_raw")
    assert run["output_versions"]["silver.events"] == lake.version("silver.events")
    assert run["seconds"] > 0 and len(run["conf_hash"]) == 16
