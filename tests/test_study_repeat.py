"""``benchmarks/study_repeat.py``: a repeat's jobs against the first run's, by phase and label."""
from __future__ import annotations

import json
import math
import importlib.util
from pathlib import Path

import pytest
import torch

from promptinit.backbones import save_prompt
from promptinit.trainables.scoring import PROMPT_FILE
from tests.conftest import load_benchmark


study_repeat = load_benchmark("study_repeat")


def write_job(folder: Path, phase: str, digest: str, label: str, key: dict, value) -> None:
    (folder / "final").mkdir(parents=True, exist_ok=True)
    (folder / "final" / f"{phase}-{digest}.json").write_text(
        json.dumps({"label": label, "key": key, "value": value, "cpu_s": 10.0}))


def study_run(folder: Path, score: float, best_dev: float, prompt: torch.Tensor, extra: bool = False) -> Path:
    write_job(folder, "baselines", "aa", "PT bbc_topic, seeds 100 13", {"pt": True},
              [["bbc_topic", 100, 0.61], ["bbc_topic", 13, score]])
    write_job(folder, "curves", "bb", "PT curves bbc_topic, seeds 100 13", {"curves": True},
              [{"task": "bbc_topic", "seed": s, "lr": 0.5, "step": k, "best_dev": best_dev if s == 13 and k == 10
                else 0.5} for s in (100, 13) for k in (0, 10)])
    ckpt = folder / "upstream" / "mtl-seed0"
    save_prompt(prompt, ckpt / PROMPT_FILE)
    # a target job's key names its checkpoint by path, which differs between the two folders
    write_job(folder, "upstream", "cc", "mtl preset, upstream seed 0 (200 steps)", {"method": "mtl"}, str(ckpt))
    write_job(folder, "target", f"d{folder.name}", "target mtl preset (upstream 0) bbc_topic, seeds 100 13",
              {"method": "mtl", "checkpoint": str(ckpt)}, [["bbc_topic", 100, 0.7], ["bbc_topic", 13, 0.72]])
    if extra:
        write_job(folder, "target", "ee", "target maml preset (upstream 0) bbc_topic, seeds 100 13", {"method": "maml"},
                  [["bbc_topic", 100, 0.7]])
    return folder


def by_phase(rows: list[dict]) -> dict[str, dict]:
    return {r["phase"]: r for r in rows}


def test_an_identical_repeat_is_identical_and_a_changed_score_is_measured_in_points(tmp_path):
    prompt = torch.arange(16.0).reshape(2, 8)
    first = study_run(tmp_path / "first", 0.71, 0.625, prompt)
    same = study_run(tmp_path / "same", 0.71, 0.625, prompt.clone(), extra=True)
    rows, missing = study_repeat.compare(first, same)
    assert {p: (r["jobs"], r["identical"], r["max_diff"]) for p, r in by_phase(rows).items()} == {
        "baselines": (1, 1, 0.0), "curves": (1, 1, 0.0), "upstream": (1, 1, 0.0), "target": (1, 1, 0.0)}
    assert missing == ["target: target maml preset (upstream 0) bbc_topic, seeds 100 13"]

    changed = prompt.clone()
    changed[1, 3] += 0.25
    other = study_run(tmp_path / "other", 0.68, 0.5, changed)
    rows = by_phase(study_repeat.compare(first, other)[0])
    assert rows["baselines"]["identical"] == 0 and math.isclose(rows["baselines"]["max_diff"], 3.0)  # 71 vs 68 %
    assert math.isclose(rows["curves"]["max_diff"], 12.5)  # 62.5 vs 50 % at step 10
    assert rows["upstream"]["max_diff"] == 0.25 and rows["target"]["identical"] == 1
    assert "| baselines | 1 | 0 | 3 points | 10 |" in study_repeat.table(list(rows.values()))


def test_a_job_whose_key_differs_is_not_counted_identical(tmp_path):
    prompt = torch.zeros(2, 8)
    first = study_run(tmp_path / "first", 0.71, 0.625, prompt)
    second = study_run(tmp_path / "second", 0.71, 0.625, prompt)
    write_job(second, "baselines", "aa", "PT bbc_topic, seeds 100 13", {"pt": True, "tuning": "other"},
              [["bbc_topic", 100, 0.61], ["bbc_topic", 13, 0.71]])
    rows = by_phase(study_repeat.compare(first, second)[0])
    assert rows["baselines"]["identical"] == 0 and rows["baselines"]["max_diff"] == math.inf


def test_a_slice_keeps_only_the_named_tasks_arms_and_upstream_seeds(tmp_path):
    from promptinit.errors import PromptinitError
    from promptinit.search.phases import study_config as study

    cpu = study.STUDY_DIR / "cpu.yaml"
    path, name = study_repeat.repeat_config(cpu, tmp_path, ["bbc_topic"], ["mtl"], [0])
    assert name == "cpu-study-repeat-mtl-bbc_topic-u0"
    cfg = study.load_study_config(path)  # a valid study config, its partition found from tmp_path
    assert (cfg.name, cfg.target.tasks, cfg.target.upstream_seeds) == (name, ["bbc_topic"], [0])
    assert list(cfg.study.presets) == ["mtl"] and not cfg.study.labels and cfg.study.algorithms == []
    full = study.load_study_config(cpu)
    # the same job keys as the first run: seeds, tuning, the preset's settings and steps unchanged
    assert (cfg.target.seeds, cfg.target.tuning, cfg.study.presets["mtl"]) == (
        full.target.seeds, full.target.tuning, full.study.presets["mtl"])
    assert study_repeat.repeat_config(cpu, tmp_path)[1] == "cpu-study-repeat"
    with pytest.raises(PromptinitError, match=r"field 'study.presets' has no arm 'reptil'"):
        study_repeat.repeat_config(cpu, tmp_path, presets=["mtl", "reptil"])


def test_the_repeat_shares_the_downloaded_assets_but_no_computed_results(tmp_path, monkeypatch):
    from promptinit.paths import CACHE_ENV, cache_dir

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "warm"))
    for name in ("models", "bigbench", "baselines"):
        (cache_dir(name) / "kept.json").write_text(name)
    cache = study_repeat.repeat_cache(tmp_path / "repeat")
    assert (cache / "models" / "kept.json").read_text() == "models"
    assert (cache / "bigbench" / "kept.json").read_text() == "bigbench"
    assert not (cache / "baselines").exists()  # PT's scores are computed again, not read back
    assert study_repeat.repeat_cache(tmp_path / "repeat") == cache  # a resumed repeat keeps its cache
