"""selection.md states the search objective's noise: the median per-trial SE on the search and the
fresh seeds and how far the fresh scores fell from the search's, computed by hand here."""

from __future__ import annotations

import math

from promptinit.analysis.tables import write_selection


def _row(rank: int, val: float, val_se: float, fresh: float, fresh_se: float, objective: str = "arg") -> dict:
    return {
        "method": "mtl",
        "rank_in_search": rank,
        "trial_id": f"t{rank}",
        "step": 6,
        "objective": objective,
        "val": val,
        "val_se": val_se,
        "rescored": fresh,
        "rescored_se": fresh_se,
        "chosen": rank == 1,
        "settings": "{}",
    }


def test_selection_states_the_median_se_and_the_shift(tmp_path):
    rows = [
        _row(1, 0.10, 0.02, 0.04, 0.010),
        _row(2, 0.08, 0.04, 0.09, 0.030),
        _row(3, 0.05, math.nan, 0.01, 0.025),
    ]
    text, files = write_selection(rows, tmp_path, [100, 13, 21], [42, 87, 7])
    # fresh SEs 1.0, 3.0, 2.5 -> median 2.5; search SEs 2.0, 4.0 (one NaN dropped) -> median 3.0;
    # fresh - search: -6, +1, -4 points -> median -4.0, largest |6.0|
    assert "fresh seeds 2.5 points (3 trials, 1.0-3.0); search seeds 3.0 points (2 trials, 2.0-4.0)" in text
    assert "median per-trial SE of the validation ARG (the objective)" in text
    assert "ARG: median -4.0 points, largest |6.0| (the search scores of its best trials are biased upwards)" in text
    assert (tmp_path / "selection.md").read_text() == text
    # fresh above search (the demo of 5 Dec 2026: +11.0): not called a bias
    text, _ = write_selection([_row(1, 0.0, 0.04, 0.14, 0.11)], tmp_path, [100], [13])
    assert "median +14.0 points, largest |14.0| (higher on the fresh seeds" in text
    assert (tmp_path / "selection.md").read_text() == text


def test_selection_without_any_se_says_nothing_of_noise(tmp_path):
    text, _ = write_selection([_row(1, 0.1, math.nan, 0.1, math.nan)], tmp_path, [100], [13])
    assert "Objective noise" not in text


def test_selection_names_the_objective_it_chose_by(tmp_path):
    """With ``search.objective: delta`` the columns, the noise line and the shift speak of Δ."""
    text, _ = write_selection([_row(1, 0.02, 0.015, 0.05, 0.03, "delta")], tmp_path, [100], [13])
    assert "val Δ points (SE), search seeds 100" in text and "val Δ points (SE), fresh seeds 13" in text
    assert "| +2.0 (SE 1.5) | +5.0 (SE 3.0) |" in text
    assert "SE of the validation Δ (the objective), fresh seeds 3.0 points (1 trials, 3.0-3.0)" in text
    assert "Fresh minus search Δ: median +3.0 points" in text
