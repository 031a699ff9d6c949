"""The Databricks notebooks, executed cell by cell against the local test session on a small generated lake, in
order (each stage reads what the one before wrote). A failing cell is named by notebook and cell number."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import BASE_CONF, ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
CELL = "\n# COMMAND ----------\n"
SMALL = ["generate.events=12000", "generate.users=300", "generate.items=500", "generate.files=1",
         "predict.lr.reg_param=[0.01]", "predict.tasks=[purchase,next_category]", "predict.models=[lr]",
         "predict.cnn.epochs=1", "predict.cnn.compare=[]", "predict.cnn.workers=1",
         "recommend.models=[popularity,als,item_cf_sum]"]


def cells(path: Path) -> list[str]:
    text = path.read_text()
    assert text.startswith("# Databricks notebook source\n"), f"{path.name}: not in Databricks source format"
    return text.split(CELL)


def test_every_stage_has_a_notebook_in_databricks_format():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04"]
    for path in NOTEBOOKS:
        parts = cells(path)
        assert len(parts) >= 4
        code = "\n".join(p for p in parts if not p.lstrip().startswith(("# MAGIC", "# Databricks")))
        assert "Notebook.open(globals()" in code
        # stages run through the jobs' own entry points, never copies of their logic
        assert re.findall(r"nb\.run\(", code), path.name
        assert "shopmine.etl" not in code and "shopmine.predict" not in code and "shopmine.recsys" not in code


@pytest.fixture(scope="module")
def executed(spark, tmp_path_factory):
    import os

    root = str(tmp_path_factory.mktemp("notebooks") / "lake")
    env = {"SHOPMINE_NB_LAKE_ROOT": root, "SHOPMINE_NB_CONF": "\n".join(BASE_CONF + SMALL)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    namespaces = {}
    try:
        for path in NOTEBOOKS:
            ns = {"__file__": str(path), "__name__": "__main__", "spark": spark}
            for i, cell in enumerate(cells(path), 1):
                try:
                    exec(compile(cell, f"{path.name} [cell {i}]", "exec"), ns)  # noqa: S102 - the notebook itself
                except Exception as exc:
                    raise AssertionError(f"{path.name}, cell {i} failed: {type(exc).__name__}: {exc}") from exc
            namespaces[path.name] = ns
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return root, namespaces


@pytest.mark.slow
def test_notebooks_run_every_stage_cell_by_cell(executed, spark):
    from shopmine.io.delta import Lake

    from conftest import settings_for

    root, namespaces = executed
    lake = Lake(spark, settings_for(root, *SMALL))
    runs = {r["job"]: r["status"] for r in lake.read("ops.runs").select("job", "status").collect()}
    assert runs == {job: "ok" for job in ("generate", "ingest", "clean", "sessionize", "featurize", "profile",
                                          "recommend", "train-predict", "train-cnn")}
    # the notebooks saw the same lake the jobs wrote
    nb = namespaces["01_ingest_clean.py"]["nb"]
    assert nb.lake.root == lake.root
    assert namespaces["01_ingest_clean.py"]["cleaned"]["rows_written"] == lake.read("silver.events").count()
    assert lake.read("gold.recs_topn").count() > 0
    assert lake.read("gold.propensity_scores").where("task = 'purchase' AND model = 'lr'").count() > 0
    assert lake.read("gold.behaviour_predictions").where("model = 'cnn_adam_ce'").count() > 0


@pytest.mark.slow
def test_a_failing_stage_stops_the_notebook_with_the_jobs_reason(executed, spark):
    from shopmine.surfaces.notebook import Notebook, StageFailed

    root, _ = executed
    nb = Notebook(root, "local", BASE_CONF + SMALL, spark)
    with pytest.raises(StageFailed, match=r"ingest failed: .*does-not-exist"):
        nb.run("ingest", "--format", "canonical", "--input", f"{root}/does-not-exist.csv")


def test_widget_values_come_from_databricks_then_environment_then_default(monkeypatch):
    from shopmine.surfaces.notebook import conf_overrides, widgets

    class Widgets:
        def __init__(self):
            self.values = {"overlay": "cluster"}

        def get(self, name):
            if name not in self.values:
                raise ValueError(f"InputWidgetNotDefined: {name}")
            return self.values[name]

        def text(self, name, default, label):
            self.values[name] = default

    class DbUtils:
        widgets = Widgets()

    got = widgets(DbUtils(), {"overlay": "local", "conf": "a=1"})
    assert got == {"overlay": "cluster", "conf": "a=1"}  # an existing widget wins; a new one gets the default
    monkeypatch.setenv("SHOPMINE_NB_OVERLAY", "my.yaml")
    assert widgets(None, {"overlay": "local", "conf": ""}) == {"overlay": "my.yaml", "conf": ""}
    assert conf_overrides("a=1; b=2\n\n c=x;") == ["a=1", "b=2", "c=x"]
