"""Configuration: overlays, overrides, and errors that name the key and the file."""

from __future__ import annotations

import re

import pytest

from shopmine.conf import CONF_DIR, ConfError, load_settings, parse_override


def test_base_and_local_overlay_load():
    s = load_settings("local")
    assert s.spark.master == "local[*]"
    assert s.clean.dedupe.near_window_seconds == 2
    assert s.source("jdata").timezone == "Asia/Shanghai"
    assert s.source("movielens").min_time.year == 1995


def test_overrides_are_typed_yaml_scalars():
    s = load_settings("local", ["generate.events=1234", "clean.outliers.action=cap", "lake.root=/x/y",
                                "clean.dedupe.near_types=[view]"])
    assert s.generate.events == 1234
    assert s.clean.outliers.action == "cap"
    assert s.lake.resolved_root() == "/x/y"
    assert s.clean.dedupe.near_types == ["view"]


def test_unknown_key_names_key_and_origin():
    with pytest.raises(ConfError) as e:
        load_settings("local", ["clean.dedupe.windw=3"])
    assert "clean.dedupe.windw" in str(e.value) and "--conf" in str(e.value) and "unknown key" in str(e.value)


def test_ill_typed_value_in_a_file_names_the_file(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("generate:\n  events: lots\n")
    with pytest.raises(ConfError) as e:
        load_settings(str(bad))
    assert "generate.events" in str(e.value) and str(bad) in str(e.value)


def test_invalid_choice_and_zone_are_rejected():
    with pytest.raises(ConfError, match="clean.outliers.action"):
        load_settings(None, ["clean.outliers.action=explode"])
    with pytest.raises(ConfError, match="sources.taobao.timezone"):
        load_settings(None, ["sources.taobao.timezone=Mars/Olympus"])


def test_missing_overlay_and_bad_override_syntax():
    with pytest.raises(ConfError, match="not found"):
        load_settings("nonexistent-overlay")
    with pytest.raises(ConfError, match="key=value"):
        parse_override("lake.root")


def test_fingerprint_changes_with_settings():
    assert load_settings("local").fingerprint() != load_settings("local", ["generate.seed=7"]).fingerprint()
    assert (CONF_DIR / "cluster.yaml").exists()
    assert load_settings("cluster").spark.shuffle_partitions == 400


def test_the_code_defaults_are_what_a_job_runs_with():
    """conf/base.yaml is generated from the models (and checked below), so the two cannot disagree."""
    from shopmine.conf import Settings, default_yaml

    assert Settings() == load_settings(None)
    assert (CONF_DIR / "base.yaml").read_text(encoding="utf-8") == default_yaml()


def test_generated_docs_are_current():
    """README's lineage table, docs/jobs.md, docs/tables.md, docs/quarantine-reasons.md, docs/configuration.md,
    docs/behaviour-features.md and conf/base.yaml are generated from the job registry, the table registry, clean's
    reason codes, the configuration models and the feature definitions; regenerate them after a change (`python -m shopmine.docs`)."""
    from conftest import ROOT
    from shopmine.docs import sync

    assert sync(ROOT, check=True) == []


def test_the_readme_is_a_manual_not_a_reference():
    from conftest import ROOT

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.encode("utf-8")) <= 15_000
    for linked in re.findall(r"`((?:docs|bench)/[\w./-]+\.md)`", text):  # every page the README points to exists
        assert (ROOT / linked).is_file(), linked


def test_the_registry_holds_every_job_and_only_known_tables():
    from conftest import ROOT
    from shopmine.io.tables import TABLES
    from shopmine.registry import EVERY_TABLE, JOBS

    assert sorted(j.file for j in JOBS) == sorted(f"jobs/{p.name}" for p in (ROOT / "jobs").glob("*.py")
                                                  if p.stem != "__init__")
    for j in JOBS:
        unknown = {t for t in j.reads + j.writes if t != EVERY_TABLE} - set(TABLES)
        assert not unknown, (j.name, unknown)
    written = {t for j in JOBS for t in j.writes}
    # ops.runs is written by every run (shopmine.jobrun); ops.erasures by forget-user, which writes every table
    assert set(TABLES) - written - {"ops.runs", "ops.erasures"} == set()
