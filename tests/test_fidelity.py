"""docs/fidelity.md against the code: every machine-readable row names a real setting, its
`promptinit` value is what the code builds, a row marked `same` agrees with the paper, and no
row is left "to fix".

The document's fenced ``yaml`` blocks each have one top-level key:

- a registered method (``mtl``, ``maml``, ...): one row per field of ``make_config(name)``,
  compared with ``config_dict(make_config(name))``;
- ``downstream``: one row per field of ``promptinit.evaluation.TuneConfig`` (its defaults);
- ``sweep``: rows named by dotted paths into ``configs/sweep/paper.yaml`` as loaded
  (``prompt_length``, ``target.tuning.lr``, ...), the paper-sized config.
"""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from promptinit.evaluation import TuneConfig
from promptinit.methods import REGISTRY, make_config
from promptinit.methods.common import config_dict

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "fidelity.md"
PAPER_YAML = ROOT / "configs" / "sweep" / "paper.yaml"
VERDICTS = ("same", "deviation", "n/a")


def blocks() -> dict[str, dict[str, dict[str, Any]]]:
    """The document's yaml blocks by top-level key."""
    out: dict[str, dict] = {}
    for text in re.findall(r"^```yaml\n(.*?)^```", DOC.read_text(), flags=re.S | re.M):
        block = yaml.safe_load(text)
        assert isinstance(block, dict) and len(block) == 1, text[:200]
        ((key, rows),) = block.items()
        assert key not in out, f"two yaml blocks for {key!r}"
        out[key] = rows
    return out


def same(a: Any, b: Any) -> bool:
    """Equal as JSON values, numbers to relative 1e-9 (YAML reads 3.0e-05 and 3e-5 alike)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b


def built(key: str) -> dict[str, Any]:
    """What the code builds for a block: a method's config, TuneConfig's defaults, paper.yaml."""
    if key == "downstream":
        return config_dict(TuneConfig())
    if key == "sweep":
        from promptinit.search.phases.config import load_sweep_config

        return load_sweep_config(str(PAPER_YAML)).model_dump(mode="json")
    return config_dict(make_config(key))


def lookup(values: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        assert isinstance(values, dict) and part in values, f"{dotted}: no such setting"
        values = values[part]
    return values


@pytest.mark.parametrize("key", sorted(set(REGISTRY) | {"downstream", "sweep"}))
def test_every_row_is_what_the_code_builds(key):
    doc = blocks()
    assert key in doc, f"docs/fidelity.md has no yaml block for {key!r}"
    rows, values = doc[key], built(key)
    if key != "sweep":
        assert set(rows) == set(values), (
            f"{key}: fields without a row {sorted(set(values) - set(rows))}, "
            f"rows of no field {sorted(set(rows) - set(values))}")
    for name, row in rows.items():
        assert set(row) == {"paper", "promptinit", "source", "verdict"}, (key, name, row)
        actual = lookup(values, name) if key == "sweep" else values[name]
        assert same(row["promptinit"], actual), f"{key}.{name}: document says {row['promptinit']!r}, code builds {actual!r}"


def test_verdicts_are_kept_and_none_is_left_to_fix():
    for key, rows in blocks().items():
        for name, row in rows.items():
            verdict = str(row["verdict"])
            assert verdict.startswith(VERDICTS), (key, name, verdict)
            assert "to fix" not in verdict, f"{key}.{name} is still marked {verdict!r}"
            if verdict == "same" and row["paper"] is not None:
                assert same(row["paper"], row["promptinit"]), f"{key}.{name}: 'same' but paper {row['paper']!r}"


def test_the_human_tables_have_no_row_left_to_fix():
    text = DOC.read_text()
    assert "— to fix (issue 11)" not in text.split("## 9.")[0], "a table row still says 'to fix'"
