"""databricks.yml cannot be deployed from here (no workspace), so this checks what can go wrong on our side: every
task runs a job file that exists, with parameters that job's own parser accepts, in the pipeline's order, on an
overlay that loads."""

from __future__ import annotations

import importlib

import yaml

from conftest import ROOT
from jobs.pipeline import steps
from shopmine.conf import load_settings


def _bundle() -> dict:
    return yaml.safe_load((ROOT / "databricks.yml").read_text())


def test_bundle_tasks_follow_the_pipeline_and_parse():
    job = _bundle()["resources"]["jobs"]["shopmine_pipeline"]
    tasks = job["tasks"]
    keys = [t["task_key"] for t in tasks]
    assert keys == [name for name, _ in steps() if name != "train-cnn"]  # train-cnn needs Horovod (see the file)
    for prev, task in zip(tasks, tasks[1:]):
        assert task["depends_on"] == [{"task_key": prev["task_key"]}], task["task_key"]
    modules = dict(steps())
    for task in tasks:
        spec = task["spark_python_task"]
        assert (ROOT / spec["python_file"]).is_file()
        module = importlib.import_module(f"jobs.{spec['python_file'][len('jobs/'):-len('.py')]}")
        assert module is modules[task["task_key"]]
        params = [p.replace("${var.lake_root}", "/Volumes/main/shopmine/lake") for p in spec["parameters"]]
        args = module.parser().parse_args(params)  # exits (fails the test) on an unknown argument
        assert args.overlay == "databricks"
        assert task["job_cluster_key"] == job["job_clusters"][0]["job_cluster_key"] and task["libraries"]


def test_databricks_overlay_loads():
    settings = load_settings("databricks", ["lake.root=/Volumes/main/shopmine/lake"])
    assert settings.spark.master is None and settings.tracking.uri == "databricks"
    assert settings.lake.resolved_root() == "/Volumes/main/shopmine/lake"
