"""Configuration: overlays, overrides, and errors that name the key and the file."""

from __future__ import annotations

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


def test_readme_table_reference_matches_the_registry():
    """The README's table section is generated from lib/shopmine/io/tables.py; regenerate it when a schema changes
    (`python -m shopmine.io.tables`)."""
    from conftest import ROOT
    from shopmine.io.tables import markdown_reference

    assert markdown_reference().strip() in (ROOT / "README.md").read_text()


def test_behaviour_feature_docs_match_the_code():
    """docs/behaviour-features.md is generated from the feature definitions; regenerate it when one changes
    (`python -m shopmine.predict.datasets > docs/behaviour-features.md`)."""
    from conftest import ROOT
    from shopmine.predict.datasets import features_markdown

    assert (ROOT / "docs" / "behaviour-features.md").read_text() == features_markdown()
