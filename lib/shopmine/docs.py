"""The generated parts of README.md and docs/: each sits between ``<!-- generated:NAME -->`` and
``<!-- end:NAME -->`` and is rendered from its one definition (the job registry, the table registry, clean's reason
codes, the configuration models); docs/behaviour-features.md and conf/base.yaml are generated whole from the feature
definitions and the configuration models. ``python -m shopmine.docs`` rewrites them; ``--check`` (and
``tests/test_conf.py``) fails when one is stale.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def usage(spec) -> str:
    """A job's own arguments, from its argparse parser (the options every job shares left out)."""
    line = " ".join(spec.entry().parser().format_usage().split())  # argparse wraps long usage lines
    for shared in ("usage: spark-submit.sh ", "[-h] ", "[--conf KEY=VALUE] ", "[--overlay OVERLAY]"):
        line = line.replace(shared, "")
    return " ".join(line.split())


def commands_markdown() -> str:
    """Every job's command line and one-line description (docs/jobs.md)."""
    from shopmine.registry import JOBS

    rows = ["| command | what it does |", "|---|---|"]
    for j in JOBS:
        command = usage(j).replace("|", "\\|")  # a literal bar inside a table cell
        rows.append(f"| `{command}` | {j.description} |")
    return "\n".join(rows)


def _blocks() -> dict[str, dict[str, Callable[[], str]]]:
    from shopmine.etl.clean import reasons_markdown
    from shopmine.io.tables import markdown_reference
    from shopmine.registry import lineage_markdown

    return {
        "README.md": {"lineage": lineage_markdown},
        "docs/jobs.md": {"commands": commands_markdown, "lineage": lineage_markdown, "formats": formats_markdown},
        "docs/tables.md": {"tables": markdown_reference},
        "docs/quarantine-reasons.md": {"reasons": reasons_markdown},
        "docs/configuration.md": {"keys": config_markdown},
        "docs/sources.md": {"source-keys": source_keys_markdown, "formats": formats_markdown},
    }


def source_keys_markdown() -> str:
    """The keys of ``sources.<name>`` (docs/sources.md), from ``SourceConf``."""
    from shopmine.conf import SourceConf, yaml_flow

    rows = ["| key | default | what it says |", "|---|---|---|"]
    for key, f in SourceConf.model_fields.items():
        desc = f.description or {"timezone": "the zone of naive times (also for the built-ins)",
                                 "min_time": "earlier events are quarantined (also for the built-ins)"}.get(key, "")
        rows.append(f"| `{key}` | `{yaml_flow(f.get_default(call_default_factory=True))}` | {desc.replace('|', '/')} |")
    return "\n".join(rows)


def formats_markdown() -> str:
    """The built-in formats (docs/sources.md), from ``shopmine.io.sources.FORMATS``."""
    from shopmine.io.sources import FORMATS

    rows = ["| format | layout |", "|---|---|"] + [f"| `{f.name}` | {f.description} |" for f in FORMATS.values()]
    return "\n".join(rows)


def config_markdown() -> str:
    """Every configuration key with its default and description, from the pydantic models (docs/configuration.md)."""
    from pydantic import BaseModel

    from shopmine.conf import Settings, entries, yaml_flow

    rows = ["| key | default | description |", "|---|---|---|"]

    def walk(value, prefix: str) -> None:
        for key, v, desc in entries(value):
            dotted = f"{prefix}{key}"
            if isinstance(v, BaseModel) or (isinstance(v, dict) and v and all(isinstance(x, BaseModel)
                                                                               for x in v.values())):
                if desc:
                    rows.append(f"| `{dotted}` | | {desc} |")
                walk(v, dotted + ".")
            else:
                rows.append(f"| `{dotted}` | `{yaml_flow(v)}` | {(desc or '').replace('|', '/')} |")

    walk(Settings(), "")
    return "\n".join(rows)


def _whole_files() -> dict[str, Callable[[], str]]:
    from shopmine.conf import default_yaml
    from shopmine.predict.datasets import features_markdown

    return {"docs/behaviour-features.md": features_markdown, "conf/base.yaml": default_yaml}


def render(text: str, name: str, content: str) -> str:
    """``text`` with block ``name`` replaced by ``content``; a file that lost a block's markers is an error."""
    pattern = re.compile(rf"(<!-- generated:{name} -->\n).*?(<!-- end:{name} -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"no '<!-- generated:{name} -->' ... '<!-- end:{name} -->' block")
    return pattern.sub(lambda m: m.group(1) + content.strip("\n") + "\n" + m.group(2), text, count=1)


def sync(root: Path = ROOT, check: bool = False) -> list[str]:
    """Render every generated block; return the files that were (``check``: would be) changed."""
    stale = []
    for rel, blocks in _blocks().items():
        path = root / rel
        text = path.read_text(encoding="utf-8")
        new = text
        for name, make in blocks.items():
            try:
                new = render(new, name, make())
            except ValueError as exc:
                raise ValueError(f"{rel}: {exc}") from None
        if new != text:
            stale.append(rel)
            if not check:
                path.write_text(new, encoding="utf-8")
    for rel, make in _whole_files().items():
        path, new = root / rel, make()
        if not path.is_file() or path.read_text(encoding="utf-8") != new:
            stale.append(rel)
            if not check:
                path.write_text(new, encoding="utf-8")
    return stale


if __name__ == "__main__":
    check = "--check" in sys.argv[1:]
    changed = sync(check=check)
    for rel in changed:
        print(f"{rel}: {'out of date (run python -m shopmine.docs)' if check else 'regenerated'}")
    sys.exit(1 if check and changed else 0)
