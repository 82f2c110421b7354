"""`promptinit report`'s objective-noise table: the median per-trial SE of each search's objective
on the search and the fresh seeds, with the median's distribution-free interval, against the
3-point goal; numbers checked by hand and the interval's coverage by simulation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from promptinit.analysis.noise import median_interval, noise_table, write_noise
from promptinit.analysis.results import Sweep


def test_the_medians_interval_is_the_textbook_order_statistics():
    """Below 6 values no interval reaches 95 %; 6 give [min, max] (coverage 1 - 2/64); 20 give the
    6th and 15th smallest (the binomial table's (6, 15))."""
    assert median_interval([3.0, 1.0, 2.0])[0] == 2.0 and math.isnan(median_interval([1, 2, 3, 4, 5])[1])
    assert median_interval([6, 1, 5, 2, 4, 3]) == (3.5, 1.0, 6.0)
    assert median_interval(np.arange(1, 21)) == (10.5, 6.0, 15.0)
    assert median_interval([math.nan, 1.0, 2.0, math.nan])[0] == 1.5 and math.isnan(median_interval([])[0])


def test_the_interval_covers_the_true_median_at_least_95_percent():
    """2,000 samples of 10 from an exponential (true median ln 2): the order-statistics interval
    (x_(2), x_(9), nominal 97.9 %) covers it in >= 95 % of them (seeded: 98.0 %, a binomial SE of 0.3)."""
    rng = np.random.default_rng(0)
    hits = [lo <= math.log(2) <= hi for _, lo, hi in (median_interval(rng.exponential(size=10)) for _ in range(2000))]
    assert np.mean(hits) >= 0.95


def _sweep(folder, name, trials, selection=None):
    folder.mkdir(parents=True)
    if selection is not None:
        pd.DataFrame(selection).to_csv(folder / "selection.csv", index=False)
    frame = pd.DataFrame(trials).assign(sweep=name)
    return Sweep(folder, name, "p", {}, {}, frame)


def test_the_table_takes_each_methods_trials_and_its_rescored_trials(tmp_path):
    ses = [0.02, 0.025, 0.01, 0.04, 0.03, 0.015, 0.05]  # mtl: sorted 1.0 1.5 2.0 2.5 3.0 4.0 5.0 -> median 2.5, [1.0, 5.0]
    trials = [{"method": "mtl", "trial_id": f"m{i}", "objective": "delta", "val_se": se} for i, se in enumerate(ses)]
    trials += [{"method": "maml", "trial_id": "a", "objective": "delta", "val_se": 0.06}]
    trials += [{"method": "maml", "trial_id": "b", "objective": "delta", "val_se": math.nan}]
    selection = {"method": ["mtl", "mtl", "maml"], "rescored_se": [0.02, 0.03, 0.07]}
    demo = _sweep(tmp_path / "demo", "demo", trials, selection)
    # a study's search sweep, one method under its arm's label, and its "defaults" line (the same folder)
    tpe = _sweep(tmp_path / "tpe", "study-mtl-tpe", [{"method": "mtl (TPE + ASHA)", "objective": "delta", "val_se": 0.02}])
    defaults = Sweep(tpe.dir, "mtl defaults", "p", {}, {}, tpe.trials.assign(method="mtl defaults"))
    df = noise_table([demo, tpe, defaults]).set_index("search")
    assert list(df.index) == ["mtl", "maml", "mtl (TPE + ASHA)"]
    mtl = df.loc["mtl"]
    assert (mtl["trials"], mtl["search_median"], mtl["search_lo"], mtl["search_hi"]) == (7, 0.025, 0.01, 0.05)
    assert (mtl["rescored"], mtl["fresh_median"], mtl["fresh_min"], mtl["fresh_max"]) == (2, 0.025, 0.02, 0.03)
    assert math.isnan(mtl["fresh_lo"])  # 2 re-scored trials: no interval
    maml = df.loc["maml"]
    assert (maml["trials"], maml["search_median"], maml["rescored"], maml["fresh_median"]) == (1, 0.06, 1, 0.07)
    assert df.loc["mtl (TPE + ASHA)", "rescored"] == 0  # no selection.csv yet

    text, files = write_noise([demo, tpe, defaults], tmp_path / "tables")
    assert [f.name for f in files] == ["objective_noise.md", "objective_noise.csv"]
    lines = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "| mtl | Δ (points) | 2.5 [1.0, 5.0] (7 trials, 1.0-5.0) | 2.5 [n/a: < 6 trials] (2 trials, 2.0-3.0) |" in text
    assert lines["mtl"].endswith("| median within, undetermined |")  # 2 fresh SEs: the median's interval is unknown
    assert lines["maml"].endswith("| median over, undetermined |")
    assert lines["mtl (TPE + ASHA)"].endswith("| median within, undetermined (search seeds: none re-scored) |")


def test_the_goal_is_met_or_missed_only_by_the_medians_interval(tmp_path):
    low = [{"method": "mtl", "objective": "arg", "val_se": 0.01 + 0.001 * i} for i in range(6)]
    high = [{"method": "maml", "objective": "arg", "val_se": 0.04 + 0.001 * i} for i in range(6)]
    fresh = {"method": ["mtl"] * 6 + ["maml"] * 6, "rescored_se": [0.02] * 6 + [0.05] * 6}
    text, _ = write_noise([_sweep(tmp_path / "s", "s", low + high, fresh)], tmp_path / "tables")
    lines = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert lines["mtl"].endswith("| met |") and lines["maml"].endswith("| missed |")
    assert "| ARG (%) |" in lines["mtl"]


def test_a_sweep_without_any_se_writes_no_table(tmp_path):
    sweep = _sweep(tmp_path / "s", "s", [{"method": "mtl", "objective": "delta", "val_se": math.nan}])
    assert write_noise([sweep], tmp_path / "tables") == ("", [])
    assert not (tmp_path / "tables").exists()
