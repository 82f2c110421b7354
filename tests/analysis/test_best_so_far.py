"""The best validation ARG found so far against cumulative compute (``analysis.tables.best_so_far``),
on hand-made trial tables whose numbers are worked out below, and in the written report."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from promptinit.analysis.results import trials_frame
from promptinit.analysis.tables import ALL_METHODS, OUTER_STEPS, TRIAL_SECONDS, best_so_far

NAN = math.nan
# trial id: (method, status, best val ARG, its SE, wall s, outer steps, reports, Unix time of its last report)
TRIALS = {
    "a": ("maml", "finished", 0.10, 0.02, 50.0, 100, 2, 300.0),
    "b": ("maml", "failed", 0.90, 0.01, 20.0, 40, 1, 100.0),  # its compute counts, its value does not
    "c": ("mtl", "finished", 0.05, NAN, 30.0, 60, 2, 200.0),  # one validation pair: no SE
    "d": ("maml", "finished", 0.25, 0.03, 40.0, 80, 1, 400.0),  # stopped early by ASHA: a result all the same
    "e": ("maml", "pending", NAN, NAN, 0.0, NAN, 0, NAN),  # never reported: no compute, no row
    "f": ("mtl", "finished", 0.05, 0.04, 10.0, 20, 1, 500.0),  # ties the best: the earlier trial keeps it
}


def table(sweep: str = "tpe", trials: dict = TRIALS, changes: dict | None = None) -> pd.DataFrame:
    """The tidy trial table (``analysis.results.trials_frame``: sorted by method, then id) of ``trials``,
    with ``changes`` (trial id -> column -> value)."""
    rows = []
    for tid, (method, status, val, se, wall, steps, reports, ended) in trials.items():
        curve = [{"step": steps, "iteration": i + 1, "val": val, "time_s": wall,
                  "timestamp": ended - reports + i + 1} for i in range(reports)]
        rows.append({"sweep": sweep, "partition": "p", "trial_id": tid, "method": method, "status": status,
                     "params": {}, "curve": curve, "objective": "delta", "val": val, "val_se": se, "steps_done": steps,
                     "reports": reports, "wall_s": wall, **(changes or {}).get(tid, {})})
    return trials_frame(rows)


def rows(progress: pd.DataFrame, method: str) -> list[tuple]:
    g = progress[progress["method"] == method]
    return list(zip(g["trial_id"], g["compute"], g["best"], g["best_se"], g["best_trial"]))


def same(got: list[tuple], want: list[tuple]) -> bool:
    """Rows equal, NaN equal to NaN."""
    return len(got) == len(want) and all(
        len(g) == len(w) and all(x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x)
                                             and math.isnan(y)) for x, y in zip(g, w))
        for g, w in zip(got, want))


def test_running_best_against_cumulative_trial_seconds_in_the_order_trials_ended():
    progress = best_so_far(table())
    assert set(progress["unit"]) == {TRIAL_SECONDS}
    # Ended b (100), c (200), a (300), d (400), f (500); e never reported. Compute: 20, +30, +50, +40, +10.
    assert same(rows(progress, ALL_METHODS), [
        ("b", 20.0, NAN, NAN, ""),  # failed: its 0.90 is no result
        ("c", 50.0, 0.05, NAN, "c"),
        ("a", 100.0, 0.10, 0.02, "a"),
        ("d", 140.0, 0.25, 0.03, "d"),
        ("f", 150.0, 0.25, 0.03, "d"),
    ])
    assert same(rows(progress, "maml"), [("b", 20.0, NAN, NAN, ""), ("a", 70.0, 0.10, 0.02, "a"),
                                         ("d", 110.0, 0.25, 0.03, "d")])
    assert same(rows(progress, "mtl"), [("c", 30.0, 0.05, NAN, "c"), ("f", 40.0, 0.05, NAN, "c")])
    for _, g in progress.groupby(["sweep", "method"]):
        best = g["best"].dropna().to_numpy()
        assert (np.diff(best) >= 0).all() and (np.diff(g["compute"].to_numpy()) >= 0).all()
    # Each row's val is that trial's own result (NaN for the failed one), of the sweep's objective.
    by_trial = progress[progress["method"] == ALL_METHODS].set_index("trial_id")["val"]
    assert set(progress["objective"]) == {"delta"}
    assert math.isnan(by_trial["b"]) and by_trial["d"] == 0.25


def test_outer_steps_when_a_trial_recorded_no_seconds():
    progress = best_so_far(table(changes={"a": {"wall_s": 0.0}}))
    assert set(progress["unit"]) == {OUTER_STEPS}
    assert same(rows(progress, "maml"), [("b", 40.0, NAN, NAN, ""), ("a", 140.0, 0.10, 0.02, "a"),
                                         ("d", 220.0, 0.25, 0.03, "d")])


def test_without_timestamps_the_table_order_is_kept():
    progress = best_so_far(table(changes={t: {"curve": []} for t in TRIALS}))
    assert list(progress[progress["method"] == "maml"]["trial_id"]) == ["a", "b", "d"]
    assert list(progress[progress["method"] == "maml"]["compute"]) == [50.0, 70.0, 110.0]


def test_several_sweeps_give_one_line_each_and_a_one_method_sweep_no_all_methods_group():
    random = {"r1": ("maml", "finished", 0.30, 0.05, 100.0, 200, 1, 50.0),
              "r2": ("maml", "finished", 0.20, 0.01, 60.0, 120, 1, 60.0)}
    progress = best_so_far(pd.concat([table("tpe"), table("random", random)], ignore_index=True))
    assert list(dict.fromkeys(progress["sweep"])) == ["tpe", "random"]
    assert set(progress[progress["sweep"] == "random"]["method"]) == {"maml"}
    g = progress[progress["sweep"] == "random"]
    assert list(g["compute"]) == [100.0, 160.0] and list(g["best"]) == [0.30, 0.30]


def test_the_plot_draws_every_sweep_and_skips_a_table_without_results(tmp_path):
    from PIL import Image

    from promptinit.analysis.plots import best_so_far_curves

    random = {"r1": ("maml", "finished", 0.30, 0.05, 100.0, 200, 1, 50.0)}
    progress = best_so_far(pd.concat([table("tpe"), table("random", random)], ignore_index=True))
    path = best_so_far_curves(progress, tmp_path / "best.png", labels={"tpe": "tpe (TPE + ASHA)"})
    with Image.open(path) as im:
        im.verify()
    only_failed = {"b": TRIALS["b"]}
    assert best_so_far_curves(best_so_far(table(trials=only_failed)), tmp_path / "none.png") is None
    assert best_so_far(table(trials={})).empty


def test_report_writes_the_curve_with_its_caption(tmp_path, monkeypatch):
    """The fake sweep (tests/analysis/conftest.py) records no timestamps: trials in table order.
    maml: m1 (0.20, 100 s), m2 (0.30, 200 s), m3 (-0.10, 50 s), m4 (failed, 30 s); mtl: t1 (0.10,
    60 s), t2 (0.05, 40 s)."""
    from tests.analysis.conftest import make_sweep
    from tests.analysis.test_report import cli

    a = make_sweep(tmp_path, "sweep-a", "cls_to_cls")
    b = make_sweep(tmp_path, "sweep-b", "cls_to_cls")
    out = tmp_path / "report"
    assert cli(["report", str(a), str(b), "--out", str(out), "--no-mlflow"], monkeypatch) == 0
    progress = pd.read_csv(out / "tables" / "best_so_far.csv", keep_default_na=False, na_values=[""])
    maml = progress[(progress["sweep"] == "sweep-a") & (progress["method"] == "maml")]
    assert list(maml["compute"]) == [100.0, 300.0, 350.0, 380.0]
    assert list(maml["best"]) == pytest.approx([0.20, 0.30, 0.30, 0.30])
    assert list(maml["best_se"]) == pytest.approx([0.02, 0.02, 0.02, 0.02])  # each best is a trial's 2nd report
    assert list(maml["best_trial"]) == ["m1", "m2", "m2", "m2"]
    every = progress[(progress["sweep"] == "sweep-b") & (progress["method"] == ALL_METHODS)]
    assert list(every["compute"]) == [100.0, 300.0, 350.0, 380.0, 440.0, 480.0]
    index = (out / "index.md").read_text()
    assert "![Best validation objective so far against compute](plots/best_so_far.png)" in index
    assert "against cumulative trial-seconds, one line per sweep" in index
    assert (out / "plots" / "best_so_far.png").is_file()
