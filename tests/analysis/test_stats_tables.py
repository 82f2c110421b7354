"""The target table, its plot and the sweep's use of analysis: every cell is
``promptinit.stats.compare`` on the per-pair scores (its Wilcoxon p on counts of correct answers
when the scores are shares of their test examples), a zero effect reads "equivalent to PT within
2 points", the p-values carry Holm's adjustment, a low PT baseline flags ARG, old sweeps without
per-pair scores read n/a, bars draw the CIs."""
from __future__ import annotations

import ast
import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import promptinit.analysis
from promptinit.analysis.results import _targets_from_table, load_sweep
from promptinit.analysis.tables import NOT_COUNTS, UNDETERMINED, arg_table, write_target_table
from promptinit.stats import compare, holm

ROOT = Path(__file__).resolve().parents[2]


def _pairs(rng, effect: float, tasks=("t1", "t2", "t3"), seeds=(100, 13, 21, 42), noise=0.03):
    baseline = {(t, s): float(rng.uniform(0.4, 0.7)) for t in tasks for s in seeds}
    scores = {k: v + effect + float(rng.normal(0, noise)) for k, v in baseline.items()}
    return scores, baseline


def _row(method, scores, baseline, **extra):
    return {"partition": "p", "method": method, "scores": scores, "baseline": baseline, "trial_id": f"{method}-1",
            "n_test": {k: 50 for k in baseline}, **extra}


def test_table_cells_are_the_comparisons_of_the_per_pair_scores(tmp_path):
    rng = np.random.default_rng(0)
    good, baseline = _pairs(rng, effect=0.05)
    table = write_target_table([_row("maml", good, baseline, val_arg=0.05, val_arg_se=0.01, val_arg_rescored=0.02,
                                     val_arg_rescored_se=0.015, trials=3, finished=2)], tmp_path)
    c = compare(good, baseline)
    assert c.distinguishable and c.diff.lo > 0
    row = (f"| maml | {c.diff.fmt()} | {c.arg.fmt()} | {c.p_improve.fmt(1, 2, signed=False)} | {c.p_value:.2g} | "
           f"{c.p_value:.2g} | better than PT | 3 tasks × 4 seeds, 50 test ex. per score | +5.0 (SE 1.0) | "
           "+2.0 (SE 1.5) | 3 (2) |")
    md = (tmp_path / "arg_table.md").read_text()
    assert row in md.splitlines() and md == table.text
    assert md.splitlines()[0] == ("| method | Δ vs PT, points [95 % CI] | ARG % [95 % CI] | "
                                  "P(>PT) per cell [95 % CI] | Wilcoxon p | Holm p | verdict | rests on | "
                                  "val ARG % (SE): search | val ARG % (SE): re-scored | trials (finished) |")
    assert "±" not in md
    # The CSV holds the same numbers as fractions, and the per-pair scores to recompute them.
    csv_row = pd.read_csv(tmp_path / "arg_table.csv").iloc[0]
    assert (csv_row.diff_mean, csv_row.diff_lo, csv_row.diff_hi) == (c.diff.mean, c.diff.lo, c.diff.hi)
    assert (csv_row.arg_lo, csv_row.arg_hi, csv_row.p_value) == (c.arg.lo, c.arg.hi, c.p_value)
    assert csv_row.p_holm == c.p_value and csv_row.p_method == c.p_method  # one row: Holm changes nothing
    assert NOT_COUNTS in md  # these made-up scores are not whole numbers of 50 test examples
    assert csv_row.n_pairs == 12 and csv_row.n_test_min == 50 and bool(csv_row.distinguishable)
    assert (csv_row.val_arg_rescored, csv_row.val_arg_rescored_se) == (0.02, 0.015)
    with (tmp_path / "target_scores.csv").open() as f:
        pairs = list(csv.DictReader(f))
    assert len(pairs) == 12
    again = compare({(p["task"], int(p["seed"])): float(p["score"]) for p in pairs},
                    {(p["task"], int(p["seed"])): float(p["pt"]) for p in pairs})
    assert again == c
    record = table.records[("p", "maml")]
    assert record["comparison"]["diff_lo"] == c.diff.lo and len(record["scores"]) == 12
    json.dumps(record)  # an export's target block


def test_rests_on_says_whether_each_seed_drew_its_own_test_sample(tmp_path):
    """``TuneConfig.test_per_seed`` reaches "rests on" and survives the CSV round trip that
    ``promptinit report`` reads; a table from before it was recorded says nothing about it."""
    rng = np.random.default_rng(2)
    scores, baseline = _pairs(rng, effect=0.05)
    rests = {True: "3 tasks × 4 seeds, 50 test ex. per score (each seed its own sample) |",
             False: "3 tasks × 4 seeds, 50 test ex. per score (one sample shared by the seeds) |",
             None: "3 tasks × 4 seeds, 50 test ex. per score |"}
    for flag, text in rests.items():
        folder = tmp_path / str(flag)
        md = write_target_table([_row("maml", scores, baseline, test_per_seed=flag)], folder).text
        assert text in md
        (row,) = _targets_from_table(folder, "s", "p")
        assert row["test_per_seed"] is flag
        assert write_target_table([row], folder / "again").text == md


def test_a_row_reads_the_same_whatever_order_its_pairs_come_in(tmp_path):
    """A study writes its table from scores in target order; the report reads them back from CSV
    in another. The bootstrap draws task by task, so the cells must not depend on that order
    (``promptinit.stats`` orders the tasks itself; ``tests/test_stats.py`` checks ``compare``)."""
    rng = np.random.default_rng(1)
    scores, baseline = _pairs(rng, effect=0.02, tasks=("bbc", "intent", "emo"), noise=0.08)
    backwards = ({k: scores[k] for k in reversed(list(scores))}, {k: baseline[k] for k in reversed(list(baseline))})
    forward = write_target_table([_row("mtl", scores, baseline)], tmp_path / "a").text
    assert write_target_table([_row("mtl", *backwards)], tmp_path / "b").text == forward


def test_a_hand_computed_row_with_one_seed_per_task_has_means_but_no_interval(tmp_path):
    # diff (0.1 + 0.05) / 2 = 7.5 points; RG 0.2 and 0.2: ARG 20 %; both pairs won.
    scores, baseline = {("a", 1): 0.6, ("b", 1): 0.3}, {("a", 1): 0.5, ("b", 1): 0.25}
    table = write_target_table([_row("mtl", scores, baseline)], tmp_path)
    line = next(ln for ln in table.text.splitlines() if ln.startswith("| mtl |"))
    assert line == ("| mtl | +7.5 [no CI] | +20.0 [no CI] | 1.00 [no CI] | 0.5 | 0.5 | "
                    "undetermined: no interval (one seed per task) | 2 tasks × 1 seed, 50 test ex. per score | "
                    "— | — | — |")
    assert table.table.iloc[0]["verdict"] == UNDETERMINED and np.isnan(table.table.iloc[0]["diff_lo"])
    assert "one few-shot seed per task" in table.text


def test_a_zero_effect_method_is_equivalent_to_pt(tmp_path):
    rng = np.random.default_rng(1)
    good, baseline = _pairs(rng, effect=0.05)
    same = dict(baseline)  # the method scores exactly what PT scores
    t = arg_table([_row("maml", good, baseline), _row("reptile", same, baseline)]).set_index("method")
    assert t.loc["reptile", "verdict"] == "equivalent to PT within 2 points"
    assert not t.loc["reptile", "distinguishable"]
    assert t.loc["reptile", "diff_lo"] <= 0 <= t.loc["reptile", "diff_hi"] and t.loc["reptile", "p_value"] == 1.0
    assert t.loc["maml", "verdict"] == "better than PT"
    md = write_target_table([_row("reptile", same, baseline)], tmp_path).text
    assert "| reptile | +0.0 [+0.0, +0.0] |" in md and "| equivalent to PT within 2 points |" in md
    assert "no difference" not in md
    wide = arg_table([_row("reptile", same, baseline)], delta=0.0).iloc[0]
    assert wide.verdict == "equivalent to PT within 0 points"  # [0, 0] lies within any margin


def _counted(rng, effect, tasks=("t1", "t2", "t3"), seeds=(100, 13, 21, 42), n=50):
    """Scores that are whole numbers of correct answers out of ``n``."""
    baseline = {(t, s): int(rng.integers(20, 35)) / n for t in tasks for s in seeds}
    scores = {k: (round(v * n) + int(rng.integers(-2, 3)) + round(effect * n)) / n for k, v in baseline.items()}
    return scores, baseline


def test_the_table_tests_counts_of_correct_answers_and_adjusts_its_p_values_by_holm(tmp_path):
    """Scores that are shares of 50 test examples: the row's Wilcoxon p is ``compare``'s on the
    counts (exact: ties), no note says otherwise, and with three rows the Holm column is
    ``promptinit.stats.holm`` of the p column; an interval above 0 whose adjusted p is not
    below 0.05 reads "better than PT (not after Holm)"."""
    rng = np.random.default_rng(4)
    rows = [_row(m, *_counted(rng, effect)) for m, effect in (("maml", 0.1), ("mtl", 0.02), ("reptile", 0.0))]
    table = write_target_table(rows, tmp_path)
    t = table.table.set_index("method")
    for r in rows:
        c = compare(r["scores"], r["baseline"], n_test=50)
        assert t.loc[r["method"], "p_value"] == c.p_value and "on counts of correct answers" in c.p_method
        assert (t.loc[r["method"], "diff_lo"], t.loc[r["method"], "diff_hi"]) == (c.diff.lo, c.diff.hi)
    assert list(table.table["p_holm"]) == pytest.approx(holm(list(table.table["p_value"])))
    assert NOT_COUNTS not in table.text and "exact (all 2^12 sign flips" in t.loc["mtl", "p_method"]
    assert t.loc["maml", "verdict"] == "better than PT"
    # the same rows with a made-up p column: an effect that does not survive the adjustment says so
    made_up = table.table.assign(p_value=[0.001, 0.03, 0.04], diff_lo=[0.01, 0.01, -0.03],
                                 verdict=["better than PT", "better than PT", "undetermined: interval too wide"])
    from promptinit.analysis.tables import with_holm

    adjusted = with_holm(made_up)
    assert list(adjusted["p_holm"]) == pytest.approx([0.003, 0.06, 0.06])
    assert list(adjusted["verdict"]) == ["better than PT", "better than PT (not after Holm)",
                                         "undetermined: interval too wide"]


def test_a_low_baseline_flags_the_arg_cell_and_keeps_the_difference_first(tmp_path):
    rng = np.random.default_rng(2)
    scores, baseline = _pairs(rng, effect=0.02)
    baseline[("t1", 100)] = 0.01  # PT nearly 0 on one pair: its RG is (s - 0.01) / 0.01
    c = compare(scores, baseline)
    assert c.low_baseline == 1
    md = write_target_table([_row("maml", scores, baseline)], tmp_path).text
    line = next(ln for ln in md.splitlines() if ln.startswith("| maml |"))
    cells = [x.strip() for x in line.strip("|").split("|")]
    assert cells[1] == c.diff.fmt()  # the headline, first
    assert cells[2] == f"{c.arg.fmt()} (unreliable: 1 pair with PT < 0.05)"
    assert "1 of 12 pairs have a PT score below 0.05: ARG is unreliable" in md


def test_an_old_sweep_without_per_pair_scores_reads_as_na_with_a_note(tmp_path):
    """An ``arg_table.csv`` as search/report.py wrote it before per-pair scores were kept."""
    sweep = tmp_path / "old"
    sweep.mkdir()
    (sweep / "promptinit-sweep.json").write_text(json.dumps({"config": {"name": "old", "partition": "tiny"}}))
    (sweep / "arg_table.csv").write_text(
        "method,partition,arg_mean,arg_std,arg_per_seed,val_arg,trials,finished,trial_id,settings,rg/task_a\n"
        'maml,tiny,0.2,0.1,"{""100"": 0.1, ""13"": 0.3}",0.3,1,1,m2,{},0.2\n'
        "mtl,tiny,,,,,1,0,,{},\n"
    )
    s = load_sweep(sweep)
    assert list(s.targets["method"]) == ["maml"] and s.targets.iloc[0]["scores"] == {}
    out = write_target_table(s.targets, tmp_path / "report")
    line = next(ln for ln in out.text.splitlines() if ln.startswith("| maml |"))
    assert line.startswith("| maml | n/a | n/a | n/a | n/a | n/a | n/a (see note) |")
    assert "no per-pair scores: this sweep predates them" in out.text and "ARG +20.0 %" in out.text
    assert out.table.iloc[0]["arg_mean"] == pytest.approx(0.2)  # the record's point value, kept in the CSV


def test_arg_bars_draw_the_interval_of_the_difference_and_the_zero_line(tmp_path, monkeypatch):
    from promptinit.analysis import plots

    figures = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: (figures.append(fig), save(fig, path))[1])
    table = pd.DataFrame({"partition": ["p", "p"], "method": ["maml", "mtl"], "diff_mean": [0.04, -0.01],
                          "diff_lo": [0.01, -0.05], "diff_hi": [0.09, 0.02]})
    path = plots.arg_bars(table, tmp_path / "bars.png")
    assert path.is_file() and path.stat().st_size > 1000
    from matplotlib.container import BarContainer

    (ax,) = figures[0].axes
    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [b.get_height() for b in bars] == pytest.approx([4.0, -1.0])
    segments = bars.errorbar.lines[2][0].get_segments()  # one vertical whisker per bar: [[x, lo], [x, hi]]
    assert [y for s in segments for y in (s[0][1], s[1][1])] == pytest.approx([1.0, 9.0, -5.0, 2.0])
    assert [s[0][0] for s in segments] == pytest.approx([b.get_x() + b.get_width() / 2 for b in bars])
    assert any(list(line.get_ydata()) == [0, 0] for line in ax.lines)  # the zero line


def _analysis_imports(path: Path) -> list[tuple[str, list[str]]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("promptinit.analysis"):
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("promptinit.analysis")]
    return out


def test_search_uses_only_the_public_names_of_analysis():
    found = {str(p.relative_to(ROOT / "search")): _analysis_imports(p) for p in sorted((ROOT / "search").rglob("*.py"))}
    assert found["phases/publish.py"], "the publish phase should write its table through analysis"
    for name, imports in found.items():
        for module, names in imports:
            assert module == "promptinit.analysis", (f"search/{name} imports {module}: use "
                                                     "`from promptinit.analysis import ...`")
            assert set(names) <= set(promptinit.analysis.__all__), f"search/{name}: {sorted(set(names) - set(promptinit.analysis.__all__))}"
    for name in promptinit.analysis.__all__:
        assert callable(getattr(promptinit.analysis, name))
    assert not (ROOT / "search" / "report.py").exists()  # the table has one writer: analysis.tables


def test_a_search_row_with_the_presets_runs_is_one_test_in_holms_family(tmp_path):
    """A search that chose the paper preset reuses the preset's runs, so its row repeats the
    preset's test: Holm's family counts it once (two distinct p-values, m = 2, not 3), the repeat
    takes its original's adjusted p, and a note names the row it repeats."""
    rng = np.random.default_rng(5)
    preset, other = _counted(rng, 0.1), _counted(rng, 0.02)
    rows = [_row("mtl (preset)", *preset), _row("maml (preset)", *other), _row("mtl (TPE + ASHA)", *preset)]
    table = write_target_table(rows, tmp_path)
    t = table.table.set_index("method")
    assert list(table.table["p_holm"]) == pytest.approx([*holm(list(table.table["p_value"])[:2]),
                                                         t.loc["mtl (preset)", "p_holm"]])
    assert t.loc["mtl (TPE + ASHA)", "p_holm"] == t.loc["mtl (preset)", "p_holm"]
    assert "mtl (TPE + ASHA): the same runs as mtl (preset): one test, counted once" in table.text


def test_a_studys_search_cost_stands_beside_each_budgets_target_arg():
    """A study labels a search's target rows by budget ("mtl (TPE + ASHA) · 60 steps"), its
    trials by the search alone: the cost table gives one row per budget, each with that budget's
    ARG and interval from the arm table, and the search's hours on both."""
    import pandas as pd

    from promptinit.analysis.tables import cost_table

    rng = np.random.default_rng(6)
    rows = [_row(f"mtl (TPE + ASHA) · {n} steps", *_counted(rng, effect)) for n, effect in ((60, 0.1), (300, 0.02))]
    trials = pd.DataFrame({"partition": ["p"] * 2, "method": ["mtl (TPE + ASHA)"] * 2, "wall_s": [1800.0] * 2,
                           "cpu_s": [3600.0] * 2, "gpu_s": [0.0] * 2, "val": [0.05, 0.08]})
    cost = cost_table(trials, pd.DataFrame(rows)).set_index("method")
    arms = arg_table(rows).set_index("method")
    assert list(cost.index) == list(arms.index) and list(cost["cpu_h"]) == [2.0, 2.0]
    for label in arms.index:
        assert cost.loc[label, ["target_arg", "target_arg_lo", "target_arg_hi"]].tolist() == pytest.approx(
            arms.loc[label, ["arg_mean", "arg_lo", "arg_hi"]].tolist())
        assert cost.loc[label, "target_arg_per_accel_h"] == pytest.approx(arms.loc[label, "arg_mean"] / 2)

