"""``benchmarks/objective_proxy.py``: proxy vs full recipe over a study's checkpoints, end to end
on a tiny random model (its rho, its CSV, its resume and its errors)."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from scipy.stats import spearmanr

from promptinit.backbones import save_prompt
from promptinit.trainables import scoring
from tests.conftest import CAUSAL, fresh_cache, load_benchmark, tiny_backbone

objective_proxy = load_benchmark("objective_proxy")

TASK = "bb_si_conversion"  # a fast-to-score catalog task whose scores vary between random prompts (tiny-test.yaml)
L = 4
CHECKPOINTS = [("mtl", 0), ("mtl", 1), ("mtl", 2), ("maml", 0), ("maml", 1)]
# tiny recipes: the proxy one lr, the full one two lrs chosen on dev, more steps
TINY = [
    "--proxy",
    "steps=2",
    "eval_every=2",
    "batch_size=2",
    "test_size=16",
    "eval_batch_size=16",
    "--full",
    "lr=0.5,0.3",
    "steps=3",
    "eval_every=1",
    "batch_size=2",
    "test_size=16",
    "eval_batch_size=16",
]


def write_study(folder: Path, hidden: int) -> Path:
    """A study folder whose upstream/ holds random prompts of varied scale (and an arm not asked for)."""
    g = torch.Generator().manual_seed(0)
    for i, (arm, u) in enumerate([*CHECKPOINTS, ("supmer", 0)]):
        prompt = torch.randn(L, hidden, generator=g) * (0.5 + i)
        method = {"method": arm} if arm == "supmer" else None  # train_job's metadata; the others have none
        save_prompt(prompt, folder / "upstream" / f"{arm}-seed{u}-{i:016x}" / scoring.PROMPT_FILE, method)
    return folder


def argv(study: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--study",
        str(study),
        "--tasks",
        TASK,
        "--seeds",
        "100",
        "13",
        "--arms",
        "mtl",
        "maml",
        "--model",
        CAUSAL,
        "--prompt-length",
        str(L),
        "--dtype",
        "float32",
        "--threads",
        "1",
        "--out",
        str(out),
        *TINY,
        *extra,
    ]


def test_proxy_vs_full_writes_rho_of_its_csv_and_resume_redoes_only_missing_parts(tmp_path, monkeypatch, capsys):
    from promptinit.analysis.calibration import spearman

    calls = []
    real = scoring.score_problems

    def counted(backbone, task, tuning, problems):
        calls.append((task.name, tuple(tuning["lr"]) if isinstance(tuning["lr"], list) else tuning["lr"]))
        return real(backbone, task, tuning, problems)

    monkeypatch.setattr(scoring, "score_problems", counted)
    study = write_study(tmp_path / "study", tiny_backbone(CAUSAL, prompt_length=L).hidden_size)
    out = tmp_path / "out"
    (tmp_path / "cache").mkdir()
    with fresh_cache(tmp_path / "cache"):
        assert objective_proxy.main(argv(study, out)) == 0
        assert calls == [(TASK, 0.3), (TASK, (0.5, 0.3))]  # one batched run per (recipe, task), the proxy first
        printed = capsys.readouterr().out

        with open(out / "objective_proxy.csv") as f:
            rows = list(csv.DictReader(f))
        assert [(r["arm"], int(r["upstream_seed"])) for r in rows] == CHECKPOINTS  # supmer not asked for
        numbers = [f"{r}_{k}" for r in ("proxy", "full") for k in ("arg", "arg_se", "delta", "delta_se", "cpu_s")]
        assert all(math.isfinite(float(r[k])) for r in rows for k in numbers)
        assert all(float(r["proxy_cpu_s"]) > 0 and float(r["full_cpu_s"]) > 0 for r in rows)

        # rho in the markdown is spearman() of the CSV's columns; its point estimate is scipy's
        proxy, full = [float(r["proxy_arg"]) for r in rows], [float(r["full_arg"]) for r in rows]
        rho = spearman(proxy, full)
        md = (out / "objective_proxy.md").read_text()
        assert f"= {rho.fmt()}**" in md and md in printed
        assert math.isfinite(rho.rho), "the tiny checkpoints should rank apart under both recipes"
        shown = float(re.search(r"Spearman rho \(proxy ARG vs full ARG\) = ([+-][0-9.]+) \[", md).group(1))
        assert shown == pytest.approx(spearmanr(proxy, full).statistic, abs=0.005)
        assert "Verdict: proxy not admissible" in md  # 5 < 12 checkpoints, whatever rho is
        assert "chosen on dev per problem from [0.5, 0.3]" in md and "lr 0.3, adafactor, batch 2, 2 steps" in md

        # a second run into the same folder without --resume is refused; with it, only the
        # deleted part is computed again
        assert objective_proxy.main(argv(study, out)) == 2
        assert "--resume" in capsys.readouterr().err
        (out / "parts" / f"full-{TASK}.json").unlink()
        calls.clear()
        assert objective_proxy.main(argv(study, out, "--resume")) == 0
        assert calls == [(TASK, (0.5, 0.3))]
        with open(out / "objective_proxy.csv") as f:
            again = list(csv.DictReader(f))
        assert [r["proxy_arg"] for r in again] == [r["proxy_arg"] for r in rows]  # read back, not recomputed


def test_a_study_without_upstream_folder_exits_2_naming_it(tmp_path, capsys):
    missing = tmp_path / "no-study"
    assert objective_proxy.main(argv(missing, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "upstream/" in err and "--study" in err


def test_fewer_than_3_checkpoints_and_a_supmer_arm_are_refused(tmp_path, capsys):
    study = write_study(tmp_path / "study", tiny_backbone(CAUSAL, prompt_length=L).hidden_size)
    assert objective_proxy.main([*argv(study, tmp_path / "out"), "--arms", "maml"]) == 2
    assert "2 checkpoint(s)" in capsys.readouterr().err
    assert objective_proxy.main([*argv(study, tmp_path / "out"), "--arms", "mtl", "supmer"]) == 2
    err = capsys.readouterr().err
    assert "supmer" in err and "ψ" in err and "--arms" in err


def test_verdict_admits_only_a_point_estimate_of_at_least_0_8_over_12_checkpoints():
    from promptinit.analysis.calibration import Rho

    assert objective_proxy.verdict(Rho(0.85, 0.62, 0.95, 15, 0.0)).startswith("proxy admissible")
    assert "lower bound +0.62 is below 0.8" in objective_proxy.verdict(Rho(0.85, 0.62, 0.95, 15, 0.0))
    assert "lower bound +0.81 is >= 0.8 too" in objective_proxy.verdict(Rho(0.9, 0.81, 0.97, 12, 0.0))
    assert objective_proxy.verdict(Rho(0.9, 0.81, 0.97, 11, 0.0)).startswith("proxy not admissible yet")
    assert objective_proxy.verdict(Rho(0.79, 0.5, 0.9, 15, 0.0)).startswith("proxy not admissible (rho +0.79 < 0.8")
    assert objective_proxy.verdict(Rho(math.nan, math.nan, math.nan, 15, 1.0)).startswith("undetermined")


def write_sweep(folder: Path, trials: list[tuple[str, dict, torch.Tensor, float]]) -> Path:
    """A sweep folder as a calibrating search leaves it: ``calibration.csv`` (objective Δ) and each
    trial's ``<method>_<id>/checkpoint_*`` (prompt, trial.json with its report); the calibrated
    checkpoint is the second of two, the first reports other scores."""
    rows = ["method,trial_id,val_rank,val_arg,rescored_arg,target_diff,pairs,chosen,val_delta,objective,target_rank"]
    for i, (trial, settings, prompt, val) in enumerate(trials):
        for j, score in enumerate((val - 0.5, val)):
            ck = folder / f"mtl_{trial}" / f"checkpoint_00000{j}"
            save_prompt(prompt * (1 + j), ck / scoring.PROMPT_FILE)
            report = {"val/arg": 2 * score, "val/arg_se": 0.1, "val/delta": score, "val/delta_se": 0.05}
            (ck / "trial.json").write_text(
                json.dumps({"step": j, "method": "mtl", "settings": settings, "report": report})
            )
        target = val / 2 + 0.03 * i  # the calibration's target Δ
        rows.append(f"mtl,{trial},{i + 1},{2 * val!r},,{target!r},3,{i == 0},{val!r},delta,{i + 1}")
    (folder / "calibration.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_calibrated_trials_of_two_searches_are_scored_once_each_against_their_search_scores(tmp_path, capsys):
    """--calibrated: each calibrated trial at the checkpoint its report matches, a twin in the other
    search once; the proxy columns are the search's own report (nothing recomputed), only the full
    recipe runs, and the verdict is on the sweeps' objective (Δ)."""
    hidden = tiny_backbone(CAUSAL, prompt_length=L).hidden_size
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randn(L, hidden, generator=g) * (0.5 + i) for i in range(4)]
    a = write_sweep(tmp_path / "tpe", [("aa", {"lr": 0.5}, prompts[0], 0.08), ("bb", {"lr": 0.3}, prompts[1], 0.02)])
    b = write_sweep(
        tmp_path / "random",
        [
            ("cc", {"lr": 0.5}, prompts[0], 0.08),
            ("dd", {"lr": 0.2}, prompts[2], 0.05),
            ("ee", {"lr": 0.4}, prompts[3], -0.01),
        ],
    )
    out = tmp_path / "out"
    (tmp_path / "cache").mkdir()
    cli = [*argv(tmp_path / "unused", out), "--calibrated", str(a), str(b)]
    with fresh_cache(tmp_path / "cache"):
        assert objective_proxy.main(cli) == 0
    with open(out / "objective_proxy.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["checkpoint"] for r in rows] == ["tpe/aa", "tpe/bb", "random/dd", "random/ee"]  # cc is aa again
    assert [float(r["proxy_delta"]) for r in rows] == [0.08, 0.02, 0.05, -0.01]  # the search's reports
    assert [float(r["proxy_arg"]) for r in rows] == [0.16, 0.04, 0.1, -0.02]
    assert all(float(r["proxy_cpu_s"]) == 0 and float(r["full_cpu_s"]) > 0 for r in rows)
    assert sorted(p.name for p in (out / "parts").iterdir()) == [f"full-{TASK}.json"]
    md = (out / "objective_proxy.md").read_text()
    shown = float(re.search(r"Spearman rho \(proxy Δ vs full Δ\) = ([+-][0-9.]+) \[", md).group(1))
    full = [float(r["full_delta"]) for r in rows]
    assert shown == pytest.approx(spearmanr([0.08, 0.02, 0.05, -0.01], full).statistic, abs=0.005)
    assert "random/cc = tpe/aa" in md and "not recomputed" in md and "Verdict: proxy not admissible" in md
    # each recipe's validation against the calibration's target Δ (aa's, not its twin cc's)
    targets = [float(r["target_delta"]) for r in rows]
    assert targets == pytest.approx([0.04, 0.04, 0.055, 0.055])
    against = re.search(r"with it, proxy ([+-][0-9.]+) \[.*\], full ([+-][0-9.]+) \[", md)
    assert float(against.group(1)) == pytest.approx(spearmanr([0.08, 0.02, 0.05, -0.01], targets).statistic, abs=0.005)
    assert float(against.group(2)) == pytest.approx(spearmanr(full, targets).statistic, abs=0.005)


def test_a_calibrated_trial_whose_checkpoint_is_gone_exits_2_naming_its_folder(tmp_path, capsys):
    hidden = tiny_backbone(CAUSAL, prompt_length=L).hidden_size
    trials = [(t, {"lr": 0.1 * i}, torch.ones(L, hidden) * i, 0.01 * i) for i, t in enumerate(["aa", "bb", "cc"])]
    sweep = write_sweep(tmp_path / "tpe", trials)
    shutil.rmtree(sweep / "mtl_bb" / "checkpoint_000001")  # the calibrated one; checkpoint_000000 reports other scores
    assert objective_proxy.main([*argv(tmp_path / "unused", tmp_path / "out"), "--calibrated", str(sweep)]) == 2
    err = capsys.readouterr().err
    assert str(sweep / "mtl_bb") in err and "num_to_keep" in err
    assert objective_proxy.main([*argv(tmp_path / "unused", tmp_path / "out"), "--calibrated", str(tmp_path)]) == 2
    assert "no calibration.csv" in capsys.readouterr().err
