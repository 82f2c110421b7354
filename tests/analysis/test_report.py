"""``promptinit report`` / ``export`` on a fake sweep with known results (see conftest.py)."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from promptinit.analysis.results import load_sweep
from tests.analysis.conftest import FINGERPRINTS, TRIALS, checkpoint_prompt, make_sweep

PNGS = ["arg_bars.png", "learning_curves.png", "sensitivity_maml.png", "sensitivity_mtl.png",
        "importance_maml.png", "importance_mtl.png"]
TABLES = [f"{s}.{e}" for s in ("arg_table", "validation", "task_gains", "cost", "objective_noise") for e in ("md", "csv")] + [
    "importances.csv", "trials.csv", "curves.csv"]


def cli(argv: list[str], monkeypatch) -> int:
    """``promptinit.cli.main`` with the analysis commands joined as their entry points will join them."""
    import promptinit.cli as cli_module
    from promptinit.analysis import commands

    class EntryPoint:
        def __init__(self, name, fn):
            self.name, self._fn = name, fn

        def load(self):
            return self._fn

    eps = [EntryPoint("export", commands.register_export), EntryPoint("report", commands.register_report)]
    monkeypatch.setattr(cli_module, "entry_points", lambda group: eps if group == "promptinit.commands" else [])
    return cli_module.main(argv)


def test_tidy_table_from_the_sweep_directory(fake_sweep):
    sweep = load_sweep(fake_sweep)
    t = sweep.trials.set_index("trial_id")
    assert sorted(t.index) == sorted(TRIALS)
    assert t.loc["m2", "method"] == "maml" and t.loc["m2", "params"] == TRIALS["m2"][1]
    assert t.loc["m2", "param/inner_lr"] == 0.2
    assert set(t["objective"]) == {"arg"}  # recorded without search.objective: ranked by ARG
    assert t.loc["m2", "val"] == pytest.approx(0.30) and t.loc["m2", "val_last"] == pytest.approx(0.30)
    assert t.loc["t2", "val"] == pytest.approx(0.05) and t.loc["t2", "best_step"] == 2
    assert t.loc["t2", "val_arg"] == t.loc["t2", "val"] and t.loc["t2", "val_se"] == pytest.approx(0.01)
    assert [p["val"] for p in t.loc["m1", "curve"]] == [0.05, 0.20]
    assert bool(t.loc["m3", "stopped_early"]) and not bool(t.loc["m1", "stopped_early"])
    assert t.loc["m4", "status"] == "failed" and not bool(t.loc["m4", "stopped_early"])
    assert t.loc["m2", "wall_s"] == 200.0 and t.loc["m2", "gpu_s"] == 100.0 and t.loc["m2", "cpu_s"] == 200.0
    assert (t.drop(index="m4")["status"] == "finished").all()
    assert Path(t.loc["m2", "best_checkpoint"]).name == "checkpoint_000001"
    tg = sweep.targets.set_index("method")
    assert tg.loc["maml", "arg_mean"] == pytest.approx(0.2) and tg.loc["maml", "trial_id"] == "m2"


def test_a_delta_sweep_ranks_trials_reports_and_checkpoints_by_the_score_difference(tmp_path):
    """search.objective: delta. The fake reports carry val/delta = -(val ARG), so Δ ranks in reverse:
    maml's best trial is m3 (Δ +0.10) where ARG's is m2, and m1's best report is its first."""
    from promptinit.analysis.export import best_checkpoint
    from promptinit.analysis.tables import best_so_far, validation_markdown, validation_table

    sweep = load_sweep(make_sweep(tmp_path / "runs", objective="delta"))
    t = sweep.trials.set_index("trial_id")
    assert set(t["objective"]) == {"delta"}
    assert t.loc["m1", "val"] == pytest.approx(-0.05) and t.loc["m1", "val_se"] == pytest.approx(0.005)
    assert t.loc["m1", "val_arg"] == pytest.approx(0.05) and t.loc["m1", "best_step"] == 2
    assert t.loc["m1", "val_last"] == pytest.approx(-0.20)
    assert Path(t.loc["m1", "best_checkpoint"]).name == "checkpoint_000000"
    val = validation_table(sweep.trials).set_index("method")
    assert val.loc["maml", "best_trial"] == "m3" and val.loc["maml", "val_best"] == pytest.approx(0.10)
    assert val.loc["mtl", "best_trial"] == "t1" and val.loc["mtl", "val_best"] == pytest.approx(0.0)
    assert "| val Δ points | +10.0 (SE 0.5) | m3 |" in validation_markdown(validation_table(sweep.trials))
    progress = best_so_far(sweep.trials)
    assert set(progress["objective"]) == {"delta"}
    assert progress[progress["method"] == "maml"]["best"].max() == pytest.approx(0.10)
    best = best_checkpoint(sweep, "maml")
    assert (best.trial_id, best.objective, best.value) == ("m3", "delta", pytest.approx(0.10))
    # the target table's val columns are the chosen trial's objective, named as such, read back from its CSV
    target = sweep.targets.set_index("method")
    assert (target.loc["maml", "objective"], target.loc["maml", "val"]) == ("delta", pytest.approx(-0.30))
    assert target.loc["maml", "val_arg"] == pytest.approx(0.30)
    text = (tmp_path / "runs" / "fake" / "arg_table.md").read_text()
    assert "| val Δ points (SE): search | val Δ points (SE): re-scored |" in text
    assert "| −30.0 (SE 1.0) | −15.0 (SE n/a) |" in text, text


def test_report_numbers_match_hand_computed_values(fake_sweep, tmp_path, monkeypatch):
    out = tmp_path / "report"
    assert cli(["report", str(fake_sweep), "--out", str(out), "--no-mlflow"], monkeypatch) == 0

    # Target: maml's pair gains average 0.2 (difference 0.5 x 0.2 = 10 points), mtl's 0.0; the
    # intervals are promptinit.stats.compare's on the same pairs (tests/analysis/test_stats_tables.py).
    from promptinit.stats import compare
    from tests.analysis.conftest import PT, TARGETS

    arg = pd.read_csv(out / "tables" / "arg_table.csv").set_index("method")
    assert arg.loc["maml", "arg_mean"] == pytest.approx(0.2, abs=1e-12)
    assert arg.loc["maml", "diff_mean"] == pytest.approx(0.1, abs=1e-12)
    assert arg.loc["mtl", "arg_mean"] == pytest.approx(0.0, abs=1e-12)
    assert arg.loc["maml", "n_seeds"] == 3 and arg.loc["maml", "n_pairs"] == 6 and arg.loc["maml", "n_test_min"] == 16
    c = compare({k: PT * (1 + g) for k, g in TARGETS["maml"][1].items()}, {k: PT for k in TARGETS["maml"][1]})
    assert (arg.loc["maml", "diff_lo"], arg.loc["maml", "diff_hi"]) == pytest.approx((c.diff.lo, c.diff.hi), abs=1e-12)
    # maml's 6 pair differences are all positive: p = 2 / 2^6 = 0.031, and Holm over the 2 rows doubles it
    assert arg.loc["maml", "p_value"] == pytest.approx(2 / 64) and arg.loc["maml", "p_holm"] == pytest.approx(4 / 64)
    assert arg.loc["maml", "verdict"] == "better than PT (not after Holm)" and not arg.loc["mtl", "distinguishable"]
    md = (out / "tables" / "arg_table.md").read_text()
    assert md.startswith("| method | Δ vs PT, points [95 % CI] | ARG % [95 % CI] |")
    assert f"| maml | {c.diff.fmt()} | {c.arg.fmt()} |" in md
    c_mtl = compare({k: PT * (1 + g) for k, g in TARGETS["mtl"][1].items()}, {k: PT for k in TARGETS["mtl"][1]})
    assert c_mtl.diff.mean == pytest.approx(0.0, abs=1e-12) and c_mtl.diff.holds_zero
    assert f"| mtl | {c_mtl.diff.fmt()} |" in md and "| undetermined: interval too wide |" in md
    assert "±" not in md

    # Validation: maml best = m2 (0.30; failed m4's 0.50 is no result); its non-failed trials'
    # bests 0.20, 0.30, -0.10 -> mean 0.1333.
    val = pd.read_csv(out / "tables" / "validation.csv").set_index("method")
    assert val.loc["maml", "best_trial"] == "m2" and val.loc["maml", "val_best"] == pytest.approx(0.30)
    assert val.loc["maml", "val_mean"] == pytest.approx((0.20 + 0.30 - 0.10) / 3)
    assert val.loc["maml", "objective"] == "arg" and "| val ARG % | +30.0 (SE 2.0) | m2 |" in (
        out / "tables" / "validation.md"
    ).read_text()
    assert val.loc["maml", "stopped_early"] == 1 and val.loc["maml", "trials"] == 4
    assert val.loc["maml", "failed"] == 1 and val.loc["maml", "finished"] == 3
    assert val.loc["mtl", "best_trial"] == "t1" and val.loc["mtl", "val_best"] == pytest.approx(0.10)

    gains = pd.read_csv(out / "tables" / "task_gains.csv")
    got = {(r.method, r.task): r.rg for r in gains.itertuples()}
    assert got == pytest.approx({("maml", "task_a"): 0.25, ("maml", "task_b"): 0.15,
                                 ("mtl", "task_a"): 0.10, ("mtl", "task_b"): -0.10})
    assert (gains["rg_lo"] < gains["rg"]).all() and (gains["rg"] < gains["rg_hi"]).all()  # 3 seeds that differ
    assert "| maml | +25.0 [" in (out / "tables" / "task_gains.md").read_text()

    # Cost: 0.5 GPU per trial; maml 100 + 200 + 50 + 30 s (the failed trial's time counts)
    # -> 190 GPU-s; ARG 0.2 per 190/3600 GPU-h.
    cost = pd.read_csv(out / "tables" / "cost.csv").set_index("method")
    assert cost.loc["maml", "accelerator"] == "GPU"
    assert cost.loc["maml", "gpu_h"] == pytest.approx(190 / 3600)
    assert cost.loc["maml", "cpu_h"] == pytest.approx(380 / 3600)
    assert cost.loc["maml", "target_arg_per_accel_h"] == pytest.approx(0.2 / (190 / 3600))
    assert cost.loc["mtl", "val_per_accel_h"] == pytest.approx(0.10 / (50 / 3600))

    imp = pd.read_csv(out / "tables" / "importances.csv")
    for method, g in imp.groupby("method"):
        assert g["importance"].sum() == pytest.approx(1.0)
    assert set(imp[imp.method == "maml"]["param"]) == {"inner_lr", "outer_lr"}  # steps never varied

    curves = pd.read_csv(out / "tables" / "curves.csv")
    assert len(curves) == sum(len(t[2]) for t in TRIALS.values())
    assert f"| maml | {c.diff.fmt()} |" in (out / "index.md").read_text()


def test_report_writes_every_promised_file_and_pngs_open(fake_sweep, tmp_path, monkeypatch):
    from matplotlib.image import imread
    from PIL import Image

    from promptinit.backbones import save_prompt

    for i, name in enumerate(["task_a", "task_b", "src_a"]):
        save_prompt(torch.randn(4, 64), tmp_path / "prompts" / f"{name}.safetensors")
    out = tmp_path / "report"
    assert cli(["report", str(fake_sweep), "--out", str(out), "--task-prompts", str(tmp_path / "prompts"),
                "--no-mlflow"], monkeypatch) == 0
    for name in TABLES + ["similarity.csv"]:
        assert (out / "tables" / name).is_file(), name
    index = (out / "index.md").read_text()
    assert "## The search objective's noise" in index and "(tables/objective_noise.md)" in index
    for name in PNGS + ["similarity.png"]:
        path = out / "plots" / name
        with Image.open(path) as im:
            im.verify()
        assert imread(path).shape[0] > 100
        assert f"(plots/{name})" in index
    for link in re.findall(r"\]\(([^)]+)\)", index):
        assert (out / link).is_file(), link
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_the_equivalence_margin_is_a_report_setting(fake_sweep, tmp_path, monkeypatch):
    """mtl's Δ interval holds 0 and reaches past ±2 points (undetermined at the default); with a
    margin of 50 points the same interval reads equivalent, in the table and in its note."""
    out = tmp_path / "report"
    assert cli(["report", str(fake_sweep), "--out", str(out), "--no-mlflow", "--equivalence-margin", "50"],
               monkeypatch) == 0
    arg = pd.read_csv(out / "tables" / "arg_table.csv").set_index("method")
    assert arg.loc["mtl", "verdict"] == "equivalent to PT within 50 points"
    md = (out / "tables" / "arg_table.md").read_text()
    assert "| equivalent to PT within 50 points |" in md and "lies between −50 and +50 points" in md
    assert "lies between −50 and +50 points" in (out / "index.md").read_text()


def test_two_partitions_make_table2_columns(tmp_path, monkeypatch):
    a = make_sweep(tmp_path, "sweep-a", "cls_to_cls")
    b = make_sweep(tmp_path, "sweep-b", "noncls_to_cls", scale=0.5)
    out = tmp_path / "report"
    assert cli(["report", str(a), str(b), "--out", str(out), "--no-mlflow"], monkeypatch) == 0
    md = (out / "tables" / "arg_table.md").read_text()
    assert md.startswith("| method | partition | Δ vs PT, points [95 % CI] | ARG % [95 % CI] |")
    assert "| maml | cls_to_cls | +10.0 [" in md and "| maml | noncls_to_cls | +5.0 [" in md
    arg = pd.read_csv(out / "tables" / "arg_table.csv").set_index(["partition", "method"])
    assert arg.loc[("noncls_to_cls", "maml"), "arg_mean"] == pytest.approx(0.1)


def test_export_of_best_prompt_from_the_sweep(fake_sweep, tmp_path, monkeypatch):
    from promptinit.export import ModelInfo, load_export

    out = tmp_path / "maml"
    assert cli(["export", str(fake_sweep), "--method", "maml", "--out", str(out), "--no-mlflow"], monkeypatch) == 0
    ex = load_export(out, ModelInfo.from_name("tiny-llama", prompt_length=4))
    assert torch.equal(ex.prompt, checkpoint_prompt("m2", 1))  # m2's best checkpoint (val ARG 0.30)
    meta = ex.metadata
    assert meta["method"] == "maml" and meta["hyperparameters"] == TRIALS["m2"][1]
    assert meta["metrics"]["validation"]["arg"] == pytest.approx(0.30)
    assert meta["metrics"]["target"]["arg_mean"] == pytest.approx(0.2)
    target = meta["metrics"]["target"]
    assert len(target["scores"]) == 6 and target["comparison"]["diff_mean"] == pytest.approx(0.1)
    assert target["comparison"]["verdict"] == "better than PT"
    assert {(p["task"], p["seed"], p["pt"], p["n_test"]) for p in target["scores"]} == {
        (t, s, 0.5, 16) for t in ("task_a", "task_b") for s in (100, 13, 21)}
    assert meta["task_fingerprints"] == FINGERPRINTS and meta["extra"]["trial_id"] == "m2"
    assert meta["model"] == "tiny-llama" and meta["versions"]["torch"]


def test_cli_errors_are_one_line_exit_2(fake_sweep, tmp_path, monkeypatch, capsys):
    assert cli(["export", str(fake_sweep), "--method", "reptile", "--out", str(tmp_path / "x")], monkeypatch) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no trials of method 'reptile'" in err and "maml, mtl" in err
    assert cli(["report", str(tmp_path)], monkeypatch) == 2
    assert "not a promptinit sweep directory" in capsys.readouterr().err
    assert cli(["report", str(fake_sweep), "--equivalence-margin", "-1", "--no-mlflow"], monkeypatch) == 2
    assert "option '--equivalence-margin': -1.0 must be in [0, 100) points" in capsys.readouterr().err
    # A checkpoint that does not fit the sweep's model (wrong L): refused, naming file and field.
    meta_path = fake_sweep / "promptinit-sweep.json"
    meta = json.loads(meta_path.read_text())
    meta["config"]["prompt_length"] = 8
    meta_path.write_text(json.dumps(meta))
    assert cli(["export", str(fake_sweep), "--method", "maml", "--out", str(tmp_path / "y")], monkeypatch) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "prompt.safetensors: field 'prompt_embeddings': shape [4, 64]" in err
    assert not (tmp_path / "y").exists()


def test_report_and_export_are_logged_to_the_parent_run(tmp_path, mlflow_store, monkeypatch):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=mlflow_store)
    exp = c.create_experiment("fake-report", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = c.create_run(exp, run_name="fake").info.run_id
    sweep = make_sweep(tmp_path / "runs", tracking_uri=mlflow_store, parent_run_id=parent)
    assert cli(["report", str(sweep)], monkeypatch) == 0
    assert cli(["export", str(sweep), "--method", "mtl", "--out", str(tmp_path / "mtl")], monkeypatch) == 0
    report = {f.path for f in c.list_artifacts(parent, "report")}
    assert {"report/index.md", "report/plots", "report/tables"} <= report
    plots = {Path(f.path).name for f in c.list_artifacts(parent, "report/plots")}
    assert set(PNGS) <= plots
    exported = {Path(f.path).name for f in c.list_artifacts(parent, "exports/mtl")}
    assert {"adapter_model.safetensors", "adapter_config.json", "promptinit.json"} <= exported
    assert "t1" in c.get_run(parent).data.tags["promptinit.export.mtl"]


def test_drop_in_for_the_sweeps_own_export(tmp_path):
    """``analysis.export.export_best`` takes what search/sweep.py passes to its export_best."""
    from promptinit.analysis.export import export_best
    from promptinit.export import ModelInfo, load_export

    prompt = torch.randn(4, 64)
    info = {"hyperparameters": {"inner_lr": 3e-5}, "trial_id": "abc", "model": "tiny-llama", "prompt_length": 4,
            "dtype": "float32", "partition": "tiny", "partition_fingerprint": "ffff", "task_fingerprints": FINGERPRINTS,
            "validation": {"arg": 0.1},
            "target": {"scores": [{"task": "task_a", "seed": 100, "upstream_seed": None, "score": 0.6, "pt": 0.5,
                                   "n_test": 16}], "comparison": None},
            "sweep": {"name": "s", "dir": str(tmp_path), "mlflow_parent_run": None}}
    folder = export_best(tmp_path, "maml", prompt, info)
    assert folder == tmp_path / "exports" / "maml"
    ex = load_export(folder, ModelInfo.from_name("tiny-llama", 4))
    assert torch.equal(ex.prompt, prompt) and len(ex.metadata["metrics"]["target"]["scores"]) == 1
    assert ex.metadata["extra"]["trial_id"] == "abc" and ex.metadata["task_fingerprints"] == FINGERPRINTS
    # The loaders read target results from an export in this format too.
    from promptinit.analysis.results import _targets_from_exports

    (row,) = _targets_from_exports(tmp_path, "s", "tiny")
    assert row["method"] == "maml" and row["trial_id"] == "abc" and row["scores"] == {("task_a", 100): 0.6}
    assert row["baseline"] == {("task_a", 100): 0.5} and row["n_test"] == {("task_a", 100): 16}
    assert row["arg_mean"] == pytest.approx(0.2)


def test_cost_table_counts_unknown_gpu_reservations_as_unknown_not_as_zero():
    import pandas as pd

    from promptinit.analysis.tables import cost_table

    trials = pd.DataFrame({"partition": ["p", "p"], "method": ["mtl", "mtl"], "wall_s": [3600.0, 3600.0],
                           "cpu_s": [3600.0, 7200.0], "gpu_s": [1800.0, math.nan], "val": [0.1, 0.2]})
    targets = pd.DataFrame(columns=["partition", "method", "arg_mean", "scores", "baseline", "trial_id"])
    row = cost_table(trials, targets).iloc[0]
    assert row["cpu_h"] == 3.0 and math.isnan(row["gpu_h"])  # half an hour known + one unknown


def test_pt_curves_with_one_lr_show_one_column_and_the_design_line_names_the_lr():
    """With one lr there is no choice on dev: the "lr chosen on dev" column would repeat the lr's."""
    from promptinit import curves
    from promptinit.analysis.report import _lr_text, _one_lr

    records = [{"task": t, "seed": s, "lr": lr, "step": step, "best_dev": 0.1 * step + s / 1000}
               for t in ("a", "b") for s in (1, 2) for lr in (0.3,) for step in (0, 1)]
    assert curves.markdown(_one_lr(curves.summarize(records))).splitlines()[0] == "| step | lr 0.3 |"
    two = curves.summarize([{**r, "lr": lr} for r in records for lr in (0.3, 0.5)])
    assert _one_lr(two).columns == ("lr 0.3", "lr 0.5", curves.CHOSEN)
    assert _lr_text(0.3) == "lr 0.3" and _lr_text([0.3]) == "lr 0.3"
    assert _lr_text([0.5, 0.3]) == "the lr chosen on dev per problem from [0.5, 0.3]"


def test_the_index_names_sweeps_relative_to_the_working_directory(fake_sweep, tmp_path, monkeypatch):
    """A committed report (docs/results/) names no machine's absolute paths."""
    monkeypatch.chdir(tmp_path)
    assert cli(["report", str(fake_sweep), "--out", str(tmp_path / "report"), "--no-mlflow"], monkeypatch) == 0
    index = (tmp_path / "report" / "index.md").read_text()
    assert "| runs/fake |" in index and str(tmp_path) not in index
