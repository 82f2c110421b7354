"""The study (``search/study.py``) end to end on its smoke version (``configs/study/smoke.yaml``:
every arm and phase of ``configs/study/cpu.yaml`` on a tiny random model): interrupted in its
search phase, resumed, and reported by ``promptinit report``."""

from __future__ import annotations

import csv
import json
import math
import re
import time
from pathlib import Path

import pytest
import yaml

from promptinit.analysis import findings
from tests.conftest import load_benchmark
from tests.platform.conftest import (
    ROOT, keep_only_portable_files, kill_ray_under, kill_tree, run_sweep, start_sweep, sweep_env, tail,
)

study_plan = load_benchmark("study_plan")

pytestmark = pytest.mark.timeout(1200)
STUDY = ROOT / "search" / "study.py"
SMOKE = ROOT / "configs" / "study" / "smoke.yaml"


def smoke_config(folder: Path, drop: tuple[str, ...] = (), name: str = "smoke.yaml") -> Path:
    """smoke.yaml storing in ``folder``, without the preset arms ``drop``."""
    raw = yaml.safe_load(SMOKE.read_text())
    raw["partition"] = str((SMOKE.parent / raw["partition"]).resolve())
    raw["storage_path"] = str(folder / "runs")
    raw["study"]["presets"] = {k: v for k, v in raw["study"]["presets"].items() if k not in drop}
    path = folder / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def expected_arms(raw: dict) -> set[str]:
    from promptinit.search.phases.study_config import Arm

    return (
        {Arm("labels", "pt").label}
        | {Arm("preset", p.get("method") or a, name=a).label for a, p in raw["study"]["presets"].items()}
        | {Arm("search", m, algorithm=a).label for m in raw["methods"] for a in raw["study"]["algorithms"]}
    )


def report(study: Path, out: Path) -> set[str]:
    """``promptinit report STUDY --out OUT --no-mlflow``; the arms of its table."""
    from promptinit.cli import main

    assert main(["report", str(study), "--out", str(out), "--no-mlflow"]) == 0  # the real parser: every option
    with (out / "tables" / "arg_table.csv").open() as f:
        return {r["method"] for r in csv.DictReader(f)}


def test_smoke_study_survives_an_interrupt_and_reports_every_arm_with_an_interval(tmp_path, ray_tmp):
    """The first run lacks the last ablation arm, which the resumed run's config adds (an arm
    decided on later), so the resume also runs an added arm and keeps everything else. The first
    run is killed as its last preset round starts: after the searches, which run before the
    presets they are not compared with."""
    config = smoke_config(tmp_path)
    raw = yaml.safe_load(config.read_text())
    presets = list(raw["study"]["presets"])
    added = presets[-1]
    first = smoke_config(tmp_path, drop=(added,), name="first.yaml")
    rounds = [", ".join(presets[i : i + 2]) for i in range(0, len(presets), 2)]
    assert rounds[-1] == added  # an odd number of presets: the added arm is a round of its own
    killed = rounds[-2]  # the first run's last round
    study = tmp_path / "runs" / raw["name"]
    env = sweep_env(ray_tmp)
    log = tmp_path / "first.log"
    last = f"upstream {killed}:"  # printed as the first run's last preset round starts
    proc = start_sweep(first, env=env, log=log, script=STUDY)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None and last not in log.read_text(errors="replace"):
            time.sleep(1)
        assert proc.poll() is None, f"the study ended before it could be interrupted:\n{tail(log)}"
        assert last in log.read_text(errors="replace"), tail(log)
    finally:
        kill_tree(proc)  # the driver and its local Ray, no goodbyes
        kill_ray_under(ray_tmp)
    partial = json.loads((study / "study.json").read_text())  # the arms done so far are in the table already
    # PT from labels, the searched methods' presets, the 4 searches, the other presets up to the killed round
    searches = [f"{m} ({a} + ASHA)" for m in ("mtl", "maml") for a in ("TPE", "random")]
    others = [f"{p} (preset)" for p in presets[2:-3]]  # not the killed round's two, not the added one
    assert not partial["finished"] and partial["done"] == [
        "pt (class labels)",
        "mtl (preset)",
        "maml (preset)",
        *searches,
        *others,
    ]
    assert report(study, tmp_path / "partial") == set(partial["done"])
    assert "**Partial**" in (tmp_path / "partial" / "index.md").read_text()

    log2 = tmp_path / "resume.log"
    assert run_sweep(config, env=env, log=log2, script=STUDY, timeout=900) == 2  # a study already ran there
    assert "pass --resume" in log2.read_text()
    assert run_sweep(config, "--resume", env=env, log=log2, script=STUDY, timeout=900) == 0, tail(log2)
    text = log2.read_text()
    # Nothing finished before the interrupt runs again: the curves, the presets' upstream runs
    # and the search sweeps are kept.
    assert "curves: 2 jobs (2 done before" in text, tail(log2)
    assert f"resume: arms added, or changed before they ran, since the last run: {added}\n" in text, tail(log2)
    upstream = re.findall(r"^upstream ([^:]+): (\d+) jobs(?: \((\d+) done before)?", text, re.M)
    assert [arms for arms, _, _ in upstream] == rounds
    assert all(n == kept for arms, n, kept in upstream if arms not in (killed, added)), upstream
    assert [kept for arms, _, kept in upstream if arms == added] == [""], upstream  # the added arm alone, new
    assert "== search arm" not in text

    result = json.loads((study / "study.json").read_text())
    assert result["finished"] and result["done"] == result["arms"]
    assert result["tuning"]["steps"] == result["downstream_steps"] in {2, 4}  # an evaluation step > 0 of the curves

    out = tmp_path / "report"
    assert report(study, out) == expected_arms(raw)
    with (out / "tables" / "arg_table.csv").open() as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert "**Partial**" not in (out / "index.md").read_text()
    for arm, r in rows.items():  # every arm: an interval around its difference with PT, on the same pairs
        lo, mean, hi = float(r["diff_lo"]), float(r["diff_mean"]), float(r["diff_hi"])
        assert math.isfinite(lo) and lo <= mean <= hi, (arm, r)
        assert r["verdict"], arm
    with (out / "tables" / "target_scores.csv").open() as f:
        pairs = {}
        for r in csv.DictReader(f):
            pairs.setdefault(r["method"], set()).add((r["task"], r["seed"]))
    assert len({frozenset(p) for p in pairs.values()}) == 1  # every arm on the same (task, seed) pairs
    index = (out / "index.md").read_text()
    assert "plots/pt_curves.png" in index and (out / "plots" / "pt_curves.png").stat().st_size > 0
    assert "plots/best_so_far.png" in index
    for label in ("mtl (TPE + ASHA)", "mtl (random + ASHA)", "mtl defaults"):
        assert label in (out / "tables" / "best_so_far.csv").read_text()
    with (out / "tables" / "best_so_far.csv").open() as f:  # the defaults line is the trial at Qin et al.'s MTL values
        (defaults,) = {r["trial_id"] for r in csv.DictReader(f) if r["method"] == "mtl defaults"}
    with (out / "tables" / "trials.csv").open() as f:
        params = next(json.loads(r["params"]) for r in csv.DictReader(f) if r["trial_id"] == defaults)
    assert (params["lr"], params["batch_size"]) == (0.5, 4), params
    with (out / "tables" / "contrasts.csv").open() as f:  # the arms against each other, each with an interval
        contrasts = {(r["a"], r["b"]): r for r in csv.DictReader(f)}
    assert {
        ("supmer (preset)", "supmer-no-mgr (preset)"),
        ("metapt (preset)", "metapt-random (preset)"),
        ("maml (preset)", "mtl (preset)"),
        ("mtl (TPE + ASHA)", "mtl (random + ASHA)"),
    } <= set(contrasts)
    for pair, r in contrasts.items():
        assert float(r["diff_lo"]) <= float(r["diff_mean"]) <= float(r["diff_hi"]) and r["verdict"], pair
    assert "## The study's arms against each other" in index


SMOKE_V2 = ROOT / "configs" / "study" / "smoke-v2.yaml"


def test_smoke_v2_tunes_every_arm_at_two_budgets_and_reports_calibration_after_an_interrupt(tmp_path, ray_tmp):
    """configs/study/smoke-v2.yaml (study v2 in miniature): killed once its first search sweep has
    finished, resumed; every arm has a row at the start budget and, except the start-only arms, at
    PT's converged budget, each against PT at the same budget; PT from the class labels on the
    target that has labels only; the searches' calibration is in the report."""
    from promptinit.search.phases.study_config import Arm, load_study_config

    raw = yaml.safe_load(SMOKE_V2.read_text())
    raw["partition"] = str((SMOKE_V2.parent / raw["partition"]).resolve())
    raw["storage_path"] = str(tmp_path / "runs")
    config = tmp_path / "smoke-v2.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    study = tmp_path / "runs" / raw["name"]
    env = sweep_env(ray_tmp)
    log = tmp_path / "first.log"
    proc = start_sweep(config, env=env, log=log, script=STUDY)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None and "search arm mtl, random" not in log.read_text():
            time.sleep(1)
        assert proc.poll() is None, f"the study ended before it could be interrupted:\n{tail(log)}"
    finally:
        kill_tree(proc)
        kill_ray_under(ray_tmp)
    # resumed on a fresh machine: only what `python -m promptinit.search.phases.rebuild <study> |
    # git add -f --pathspec-from-file=-` would have committed is left (no Tune state, no optimizer state, no sqlite files)
    keep_only_portable_files(study)
    log2 = tmp_path / "resume.log"
    assert run_sweep(config, "--resume", env=env, log=log2, script=STUDY, timeout=900) == 0, tail(log2)
    assert "== search arm mtl, TPE + ASHA" not in log2.read_text()  # the finished sweep is kept
    supmer = sorted((study / "final" / "upstream").glob("supmer-seed*"))  # its psi kept apart, for the commit
    assert len(supmer) == 2 and all((run / "psi.safetensors").is_file() for run in supmer), supmer

    result = json.loads((study / "study.json").read_text())
    start, end = (b["steps"] for b in result["budgets"])
    assert result["done"] == result["arms"]  # every row, in the planned order
    assert result["finished"] and start == raw["study"]["start_steps"] < end == result["downstream_steps"]
    assert end <= raw["target"]["tuning"]["steps"] and [b["end"] for b in result["budgets"]] == [False, True]
    # PT's problems are tuned once for the study and its 4 searches: the searches' target phase
    # reuses the study's PT at the start budget, and only the first search of a method tunes PT on validation
    sweeps = sorted((study / "sweeps").iterdir())
    kept_pt = [json.loads(f.read_text())["key"] for s in sweeps for f in (s / "final").glob("target-*.json")]
    pt = [k for k in kept_pt if "method" not in k]
    assert len(sweeps) == 4 and not pt, pt
    # the random searches start with the paper defaults, as the TPE searches did: that trial (and
    # any other both proposed) is replayed from the TPE search's reports (trainables/replay.py)
    twins = set()  # ((random sweep, trial id), (TPE sweep, trial id))
    for method in ("mtl", "maml"):
        first = {(f.parent.name, r["upstream/step"]): r for f in (study / "sweeps" / f"{raw['name']}-{method}-tpe").glob("*/result.json")
                 for r in map(json.loads, f.read_text().splitlines())}
        replayed = [(f.parent, r) for f in (study / "sweeps" / f"{raw['name']}-{method}-random").glob("*/result.json")
                    for r in map(json.loads, f.read_text().splitlines()) if "replay/of" in r]
        assert replayed, method
        for folder, r in replayed:
            sweep, trial = r["replay/of"].split("/")
            assert sweep == f"{raw['name']}-{method}-tpe" and r["val/delta"] == first[trial, r["upstream/step"]]["val/delta"]
            twins.add(((folder.parent.name, folder.name.split("_")[-1]), (sweep, trial.split("_")[-1])))
    # ... once per validation recipe: MAML's searches validate with their own (study.validation)
    val_steps: dict[str, set[int]] = {}
    for s in sweeps:
        method = s.name.removeprefix(f"{raw['name']}-").split("-")[0]
        for f in (s / "final").glob("validation PT-*.json"):
            val_steps.setdefault(method, set()).add(json.loads(f.read_text())["key"]["tuning"]["steps"])
    assert val_steps == {"mtl": {raw["validation"]["tuning"]["steps"]}, "maml": {raw["study"]["validation"]["maml"]["steps"]}}
    assert [len(list((s / "final").glob("validation PT-*.json"))) for s in sweeps].count(0) == 2
    # the measured cost per phase (benchmarks/study_plan.py --measured), by the jobs kept: 2 targets x
    # 2 seeds = 4 pairs, upstream seeds 1 and 2, 2 searches per method with 2 calibrated trials each
    # (on seed 100 alone: search.calibrate_seeds)
    kept = study_plan.measured(study, start)
    # each search's choice meta-trained afresh with upstream seeds 1 and 2, unless it is a
    # configuration already trained (the preset's paper defaults, or the other search's choice):
    # its runs and their target problems are then reused. Which trial a search chooses follows
    # ASHA's stops, which follow the order trials report in.
    maml_runs = {p.resolve() for p in (study / "final" / "upstream").glob("maml-seed*")}  # the preset's
    for s in sweeps:
        if s.name.endswith(("maml-tpe", "maml-random")):
            maml_runs |= {(s / rel).resolve() for rel in json.loads((s / "chosen.json").read_text())["maml"]["upstream"].values()}
    assert len(maml_runs) in (2, 4, 6) and kept["maml: upstream"].done == len(maml_runs)
    assert kept["maml: tuning, start"].done == len(maml_runs) * 4 == kept["maml: tuning, end"].done  # 4 pairs each
    assert kept["fomaml: tuning, start"].done == 2 * 4 and "fomaml: tuning, end" not in kept  # start only
    assert kept["PT: tuning, start"].done == 4 and kept["PT: curves"].done == 2  # PT once for the 5 runners
    assert kept["mtl searches: trials"].cpu_s > 0
    cfg = load_study_config(config)
    units = study_plan.Units(dict.fromkeys(("mtl", "maml", "fomaml", "reptile", "supmer"), 1.0), 1.0, 10.0)
    text = study_plan.measured_markdown(cfg, study_plan.plan(cfg, units, end), kept, cores=2)
    unplanned = {ln.split(" | ")[0][2:] for ln in text.splitlines()[2:] if "unplanned" in ln}
    assert unplanned <= {"preparation (SUPMER, MetaPT)"}, text
    arms = [Arm(**{k: v for k, v in r.items() if k != "label"}) for r in result["arm_records"]]
    expected = {a.label + f" · {start} steps" for a in arms} | {
        a.label + f" · {end} steps" for a in arms if a.key not in raw["study"]["start_only"]
    }
    out = tmp_path / "report"
    assert report(study, out) == expected
    with (out / "tables" / "target_scores.csv").open() as f:
        pt = {}
        for r in csv.DictReader(f):  # each budget's rows share PT's scores at that budget
            pt.setdefault(r["method"].rsplit(" · ", 1)[1], {}).setdefault((r["task"], r["seed"]), set()).add(r["pt"])
    assert set(pt) == {f"{start} steps", f"{end} steps"} and all(len(v) == 1 for b in pt.values() for v in b.values())
    with (out / "tables" / "target_scores.csv").open() as f:  # the label init: the labelled target only
        labelled = {r["task"] for r in csv.DictReader(f) if r["method"].startswith("pt (class labels)")}
    assert labelled == {"bb_sports_understanding"}, labelled
    index = (out / "index.md").read_text()
    assert f"{start} steps (a start) and {end} steps (the end" in index
    assert "## Does the search objective predict the target?" in index
    assert "Each method's searches together" in index  # TPE's and random's calibrated trials pooled, twins once
    assert "## The papers' findings" in index
    with (out / "tables" / "findings.csv").open() as f:  # judged at both budgets from the arms' rows
        judged = {r["finding"]: r for r in csv.DictReader(f)}
    assert {"MAML beats PT", findings.MTL.finding} <= set(judged)
    assert all(judged["MAML beats PT"][f"verdict · {n} steps"] in findings.VERDICTS for n in (start, end))
    with (out / "tables" / "calibration.csv").open() as f:
        calibrated = list(csv.DictReader(f))
    assert len(calibrated) == 4 * raw["search"]["calibrate"]  # every search arm's calibrated trials
    assert {r["pairs"] for r in calibrated} == {"2"}  # 2 targets x seed 100 (search.calibrate_seeds)
    # each calibrated configuration tuned on its 2 pairs once: a trial both MTL searches ran (the
    # preset, replayed by the random search) is calibrated from the TPE search's kept jobs
    mtl_configs = {r["config"] for r in calibrated if r["base_method"] == "mtl"}
    assert "" not in mtl_configs and kept["mtl searches: calibration"].done == 2 * len(mtl_configs)
    with (out / "tables" / "trials.csv").open() as f:  # a replay costs what its original did (one report each here)
        wall = {(r["sweep"], r["trial_id"]): float(r["wall_s"]) for r in csv.DictReader(f)}
    assert all(wall[copy] >= wall[original] > 0 for copy, original in twins), (twins, wall)
    with (out / "tables" / "contrasts.csv").open() as f:
        contrasts = {(r["a"], r["b"]) for r in csv.DictReader(f)}
    for steps in (start, end):  # each question asked within each budget
        assert (f"maml (preset) · {steps} steps", f"mtl (preset) · {steps} steps") in contrasts
        assert (f"mtl (TPE + ASHA) · {steps} steps", f"mtl (preset) · {steps} steps") in contrasts
