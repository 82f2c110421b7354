"""A study's arms against each other (``analysis.tables.contrasts``): Δ a − b and P(a > b) are
the hand-computed means over the same pairs, a constant difference has an interval of that
constant alone, a noisy zero effect is not called better, and the report derives the questions
(ablations, meta-learning against MTL, searches) from the study's arms."""
from __future__ import annotations

import numpy as np
import pytest

from promptinit.analysis.report import study_contrasts
from promptinit.analysis.tables import Contrast, contrasts, contrasts_markdown

TASKS, SEEDS, UPSTREAM = ("t1", "t2", "t3"), (100, 13, 21, 42, 87), (0, 1, 2)


def _arm(method, scores, baseline):
    return {"partition": "p", "method": method, "scores": scores, "baseline": baseline, "trial_id": "preset",
            "n_test": {k: 100 for k in baseline}, "n_seeds": len(SEEDS)}


def _arms(rng, effect, noise=0.03):
    """Arms a and b meta-trained with 3 upstream seeds, scored on 3 tasks x 5 seeds."""
    baseline = {(t, s): float(rng.uniform(0.4, 0.7)) for t in TASKS for s in SEEDS}
    b = {(t, s, u): baseline[(t, s)] + float(rng.normal(0, noise)) for t in TASKS for s in SEEDS for u in UPSTREAM}
    a = {k: v + effect + float(rng.normal(0, noise)) for k, v in b.items()}
    return _arm("a", a, baseline), _arm("b", b, baseline)


def test_the_difference_and_the_win_rate_are_the_hand_computed_means():
    a, b = _arms(np.random.default_rng(0), effect=0.05)
    row = contrasts([a, b], [Contrast("a", "b", "does a beat b?")]).iloc[0]
    d = np.array([a["scores"][k] - b["scores"][k] for k in a["scores"]])  # every task has 5 seeds x 3 upstream
    assert row.diff_mean == pytest.approx(d.mean())
    assert row.p_a_mean == pytest.approx(((d > 0) + 0.5 * (d == 0)).mean())
    assert 0 < row.diff_lo < row.diff_mean < row.diff_hi and row.verdict == "better than b"
    assert (row.n_tasks, row.n_seeds, row.n_upstream, row.n_pairs) == (3, 5, 3, 15)
    back = contrasts([a, b], [Contrast("b", "a", "does b beat a?")]).iloc[0]  # the other way round
    assert back.diff_mean == pytest.approx(-row.diff_mean) and back.verdict == "worse than a"
    assert back.diff_lo == pytest.approx(-row.diff_hi, abs=0.005)


def test_a_constant_difference_has_no_spread_and_a_noisy_zero_effect_is_not_called_better():
    a, b = _arms(np.random.default_rng(1), effect=0.0)
    shifted = _arm("c", {k: v + 0.04 for k, v in b["scores"].items()}, b["baseline"])
    row = contrasts([b, shifted], [Contrast("c", "b", "?")]).iloc[0]
    assert row.diff_lo == pytest.approx(0.04) and row.diff_hi == pytest.approx(0.04) and row.p_a_mean == 1.0
    same = contrasts([a, b], [Contrast("a", "b", "?")]).iloc[0]
    assert same.diff_lo < 0 < same.diff_hi and same.verdict == "undetermined: interval too wide"
    assert row.verdict == "better than b"


def test_a_search_that_chose_the_preset_is_called_the_same_runs_not_equivalent():
    """A search whose choice is the paper preset reuses the preset's runs: every score is equal, the
    interval is [0, 0], and the verdict must not claim an equivalence that was measured."""
    _, b = _arms(np.random.default_rng(3), effect=0.0)
    chosen = _arm("search", dict(b["scores"]), b["baseline"])
    table = contrasts([chosen, b], [Contrast("search", "b", "does the search beat the paper preset?")])
    row = table.iloc[0]
    assert row.diff_lo == row.diff_hi == 0.0 and row.verdict == "the same runs as b"
    assert "every score of a equals b's" in contrasts_markdown(table)
    a, _ = _arms(np.random.default_rng(3), effect=0.05)  # beside a real contrast, it is no test in Holm's family
    both = contrasts([a, chosen, b], [Contrast("a", "b", "?"), Contrast("search", "b", "?")])
    assert both.iloc[0].p_holm == both.iloc[0].p_value and np.isnan(both.iloc[1].p_holm)
    assert "| 1 | — | the same runs as b |" in contrasts_markdown(both)
    nudged = _arm("search", {k: v + (1e-3 if k == min(b["scores"]) else 0) for k, v in b["scores"].items()},
                  b["baseline"])  # one cell apart: a measured difference again
    assert contrasts([nudged, b], [Contrast("search", "b", "?")]).iloc[0].verdict == "equivalent to b within 2 points"


def test_a_missing_arm_is_left_out_and_arms_on_different_pairs_say_so():
    a, b = _arms(np.random.default_rng(2), effect=0.02)
    short = _arm("short", {k: v for k, v in a["scores"].items() if k[0] != "t3"},
                 {k: v for k, v in a["baseline"].items() if k[0] != "t3"})
    table = contrasts([a, b, short], [Contrast("a", "not run yet", "?"), Contrast("a", "short", "?")])
    assert list(table["b"]) == ["short"] and table.iloc[0].verdict == "n/a"
    text = contrasts_markdown(table)
    assert "| ? | a | short | n/a |" in text and "not scored on the same pairs" in text
    assert contrasts_markdown(table.iloc[:0]).startswith("No contrasts yet")


def test_the_study_questions_come_from_its_arms():
    result = {
        "presets": {
            "mtl (preset)": {"method": "mtl", "settings": {"lr": 0.5}},
            "maml (preset)": {"method": "maml", "settings": {"inner_lr": 3e-5}},
            "supmer (preset)": {"method": "supmer", "settings": {"use_mgr": True, "curriculum": "mixup"}},
            "supmer-no-mgr (preset)": {"method": "supmer", "settings": {"use_mgr": False, "curriculum": "mixup"}},
        },
        "searches": {"maml (TPE + ASHA)": "sweeps/x-maml-tpe", "maml (random + ASHA)": "sweeps/x-maml-random"},
    }
    methods = {"maml (TPE + ASHA)": "maml", "maml (random + ASHA)": "maml"}  # results.arm_methods
    assert [(c.a, c.b) for c in study_contrasts(result, methods)] == [
        ("maml (preset)", "mtl (preset)"),
        ("supmer (preset)", "mtl (preset)"),
        ("supmer (preset)", "supmer-no-mgr (preset)"),
        ("maml (TPE + ASHA)", "maml (preset)"),
        ("maml (random + ASHA)", "maml (preset)"),
        ("maml (TPE + ASHA)", "maml (random + ASHA)"),
    ]
    assert study_contrasts(result, methods)[2].question == "does the ablation (use_mgr False) hurt?"
    assert study_contrasts({}, {}) == []


def test_arm_methods_come_from_typed_records_or_the_search_sweeps_own_config(tmp_path):
    """A label is never parsed back: a study's arm records name each arm's method, and an older
    study's search arms are read from their sweeps' own configs."""
    import json

    from promptinit.analysis.results import META_FILE, STUDY_RESULT, arm_methods

    records = [{"label": "odd (name) label", "kind": "search", "method": "maml", "name": "", "algorithm": "tpe"}]
    (tmp_path / STUDY_RESULT).write_text(json.dumps({"arm_records": records}))
    assert arm_methods(tmp_path) == {"odd (name) label": "maml", "maml defaults": "maml"}
    sub = tmp_path / "sweeps" / "x"
    sub.mkdir(parents=True)
    (sub / META_FILE).write_text(json.dumps({"config": {"methods": ["mtl"]}}))
    (tmp_path / STUDY_RESULT).write_text(json.dumps({"presets": {"a (preset)": {"method": "reptile"}},
                                                     "searches": {"b (TPE + ASHA)": "sweeps/x"}}))
    assert arm_methods(tmp_path) == {"a (preset)": "reptile", "b (TPE + ASHA)": "mtl", "reptile defaults": "reptile",
                                     "mtl defaults": "mtl"}


def test_the_plot_draws_each_contrast_with_its_interval_and_skips_an_empty_table(tmp_path, monkeypatch):
    from matplotlib.container import BarContainer

    from promptinit.analysis import plots

    figures = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: (figures.append(fig), save(fig, path))[1])
    a, b = _arms(np.random.default_rng(3), effect=0.05)
    table = contrasts([a, b], [Contrast("a", "b", "does a beat b?"), Contrast("b", "a", "does b beat a?")])
    path = plots.contrast_bars(table, tmp_path / "contrasts.png")
    assert path.is_file() and path.stat().st_size > 1000
    (ax,) = figures[0].axes
    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [bar.get_width() for bar in bars] == pytest.approx(list(100 * table["diff_mean"]))
    segments = bars.errorbar.lines[2][0].get_segments()  # one horizontal whisker per bar: [[lo, y], [hi, y]]
    assert [x for s in segments for x in (s[0][0], s[1][0])] == pytest.approx(
        [v for r in table.itertuples() for v in (100 * r.diff_lo, 100 * r.diff_hi)])
    top_down = sorted(ax.get_yticklabels(), key=lambda t: -t.get_position()[1])
    assert [t.get_text() for t in top_down] == ["a − b\ndoes a beat b?", "b − a\ndoes b beat a?"]  # from the top
    assert any(list(line.get_xdata()) == [0, 0] for line in ax.lines)  # the zero line
    assert plots.contrast_bars(table.iloc[:0], tmp_path / "none.png") is None


def test_contrasts_test_counts_and_carry_holm_adjusted_p_values():
    """Arms whose scores are whole numbers of their 100 test examples: each contrast's Wilcoxon p
    is ``compare``'s on the counts of a − b, and the Holm column adjusts the table's p column."""
    from promptinit.stats import compare, holm

    rng = np.random.default_rng(4)
    baseline = {(t, s): int(rng.integers(40, 70)) / 100 for t in TASKS for s in SEEDS}
    arms = [_arm(m, {(t, s, u): (round(100 * baseline[(t, s)]) + int(rng.integers(-3, 4)) + shift) / 100
                     for t in TASKS for s in SEEDS for u in UPSTREAM}, baseline)
            for m, shift in (("a", 5), ("b", 0), ("c", 1))]
    table = contrasts(arms, [Contrast("a", "b", "?"), Contrast("c", "b", "?"), Contrast("a", "c", "?")])
    for r in table.itertuples():
        a, b = (next(x for x in arms if x["method"] == m) for m in (r.a, r.b))
        c = compare({k: a["scores"][k] - b["scores"][k] for k in a["scores"]}, {k: 0.0 for k in baseline}, n_test=100)
        assert r.p_value == c.p_value and "on counts of correct answers" in r.p_method and not r.note
    assert list(table["p_holm"]) == pytest.approx(holm(list(table["p_value"])))
    assert table.iloc[0].verdict == "better than b" and "| Holm p |" in contrasts_markdown(table)
