"""``promptinit report``: every table and plot of one or more sweeps in one folder.

Layout of the report folder::

    index.md                      links everything below (and shows the ARG table)
    tables/arg_table.{md,csv}     per method (x partition) vs PT on the target tasks: Δ points, ARG,
                                  P(>PT) per cell with 95 % CIs, Wilcoxon and Holm p, verdict (better,
                                  worse, equivalent within 2 points, undetermined), what it rests on
    tables/target_scores.csv      the per-pair test scores (method, PT, test size) behind it
    tables/validation.{md,csv}    the search: the best validation objective (with its SE) and its range per method
    tables/task_gains.{md,csv}    difference and relative gain per target task, with CIs
    tables/contrasts.{md,csv}     a study's arms against each other: ablations, meta-learning vs MTL,
                                  search vs preset, TPE vs random (Δ and P(a > b) per cell with CIs,
                                  Wilcoxon and Holm p; studies only)
    tables/cost.{md,csv}          trials, CPU/GPU hours, ARG per accelerator-hour
    tables/importances.csv        Optuna parameter importances per method
    tables/trials.csv             the tidy trial table (params as JSON)
    tables/curves.csv             validation curves, long form
    tables/best_so_far.csv        best validation objective so far against cumulative compute, per sweep and method
    plots/arg_bars.png            Δ vs PT per method with 95 % CI whiskers and the zero line
    plots/contrasts.png           a study's arms against each other: Δ a − b with 95 % CI whiskers
    plots/learning_curves.png     the validation objective (search.objective) against upstream steps
    plots/best_so_far.png         best validation objective so far against compute, one line per sweep (TPE vs random
                                  vs the defaults at equal compute, when the report is given those sweeps)
    plots/sensitivity_<m>.png     the validation objective against each searched setting
    plots/importance_<m>.png      Optuna importances
    plots/similarity.png          task similarity (only with task prompts)

The folder is built under a temporary name and renamed into place. When a sweep names an
MLflow parent run, the folder is logged to it as artifacts ``report/``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from promptinit.analysis import findings, noise, plots, tables
from promptinit.analysis.importance import param_importances
from promptinit.analysis.results import Sweep, arm_methods, curves_frame, is_study, preset_label, study_result
from promptinit.errors import PromptinitError
from promptinit.files import atomic_folder
from promptinit.stats import DELTA

INDEX = "index.md"
NORMAL_95 = 1.959964  # a normal 95 % interval from a standard error (the validation objective)
ARTIFACT_PATH = "report"
BEST_SO_FAR_CAPTION = (
    "Best validation objective (the sweep's `search.objective`: Δ in points or ARG in %) found so far against "
    "cumulative {unit}, one line per sweep (trials in the order they "
    "ended); band: ±1.96 SE of the best trial over its validation pairs. A running max of noisy estimates is "
    "biased upward (each sweep's selection.md re-scores its best trials on fresh seeds)."
)


Calibrated = tuple[pd.DataFrame, list[Path]]  # the calibrated trials of every search, and the searches' folders


@dataclass
class Report:
    """What a report wrote: its folder, every file, and notes on what was skipped."""

    folder: Path
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    logged_to: list[str] = field(default_factory=list)


def _combine(sweeps: Sequence[Sweep]) -> tuple[pd.DataFrame, pd.DataFrame]:
    trials = pd.concat([s.trials for s in sweeps], ignore_index=True) if sweeps else pd.DataFrame()
    targets = pd.concat([s.targets for s in sweeps], ignore_index=True) if sweeps else pd.DataFrame()
    # Columns of all-NaN frames concatenated lose their dtype; the tables expect floats.
    for col in ("val", "val_se", "val_arg", "val_arg_se", "wall_s", "cpu_s", "gpu_s"):
        if col in trials:
            trials[col] = trials[col].astype(float)
    return trials, targets


def _sensitivity_and_importances(
    report: Report, trials: pd.DataFrame, tdir: Path, pdir: Path, seed: int
) -> list[tuple[str, Path]]:
    """Per method: the sensitivity plot and Optuna's importances (``importances.csv``); what is
    missing is a note in the report."""
    links: list[tuple[str, Path]] = []
    imp_rows = []
    for method in dict.fromkeys(trials["method"]) if len(trials) else []:
        path = plots.sensitivity(trials, method, pdir / f"sensitivity_{method}.png")
        if path:
            links.append((f"Sensitivity: {method}", path))
        else:
            report.notes.append(f"{method}: no sensitivity plot (no searched setting varied between scored trials)")
        values, note = param_importances(trials, method, seed=seed)
        if values:
            links.append(
                (f"Importances: {method}", plots.importances(values, method, pdir / f"importance_{method}.png"))
            )
            imp_rows += [{"method": method, "param": k, "importance": v} for k, v in values.items()]
        else:
            report.notes.append(f"{method}: no importances ({note})")
    pd.DataFrame(imp_rows, columns=["method", "param", "importance"]).to_csv(tdir / "importances.csv", index=False)
    report.files.append(tdir / "importances.csv")
    return links


def _tables(
    report: Report, trials: pd.DataFrame, targets: pd.DataFrame, tdir: Path, delta: float = DELTA
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The report's tables: target (with CIs), validation, per-task gains, cost, trials, curves,
    best so far. Returns (target table, validation table, best-so-far table)."""
    target_table = tables.write_target_table(targets, tdir, delta)  # the sweep's own writer: the same table
    arg = target_table.table
    report.files += target_table.files
    if len(arg) and arg["diff_mean"].isna().all():
        report.notes.append("no per-pair target scores (the sweeps predate them): the target table has no intervals")
    val = tables.validation_table(trials)
    report.files += tables.write(
        val, tables.validation_markdown(val) if len(val) else "No trials.\n", tdir, "validation"
    )
    gains = tables.task_gains(targets)
    report.files += tables.write(gains, tables.task_gains_markdown(gains), tdir, "task_gains")
    cost = tables.cost_table(trials, targets)
    report.files += tables.write(cost, tables.cost_markdown(cost), tdir, "cost")
    flat = trials.drop(columns=["curve"]).assign(params=[json.dumps(p, default=str) for p in trials["params"]])
    flat.to_csv(tdir / "trials.csv", index=False)
    curves_frame(trials).to_csv(tdir / "curves.csv", index=False)
    progress = tables.best_so_far(trials)
    progress.to_csv(tdir / "best_so_far.csv", index=False)
    report.files += [tdir / "trials.csv", tdir / "curves.csv", tdir / "best_so_far.csv"]
    return arg, val, progress


def _contrasts(
    report: Report,
    sweeps: Sequence[Sweep],
    targets: pd.DataFrame,
    methods: Mapping[str, str],
    tdir: Path,
    pdir: Path,
    plot_links: list[tuple[str, Path]],
    delta: float = DELTA,
) -> tuple[str, pd.DataFrame]:
    """A study's arm-against-arm table (``contrasts.{md,csv}``) and its bars; its Markdown ("" without
    a study) and the table."""
    pairs = [c for s in sweeps for c in study_contrasts(_study_result(s), methods)]
    if not pairs:
        return "", pd.DataFrame()
    table = tables.contrasts(targets, pairs, delta)
    text = tables.contrasts_markdown(table, delta)
    report.files += tables.write(table, text, tdir, "contrasts")
    bars = plots.contrast_bars(table, pdir / "contrasts.png")
    if bars:
        plot_links.append(("The study's arms against each other (95 % CI)", bars))
    return text, table


def _findings(
    report: Report,
    sweeps: Sequence[Sweep],
    arg: pd.DataFrame,
    contrasts: pd.DataFrame,
    calibrated: Calibrated,
    tdir: Path,
) -> str:
    """A study's verdicts on the papers' findings (``findings.{md,csv}``); its Markdown ("" for plain sweeps)."""
    if not any(_study_result(s) for s in sweeps):
        return ""
    budgets = [b for s in sweeps for b in _study_result(s).get("budgets", []) if b.get("label")]
    frame, folders = calibrated
    scores, steps = findings.calibrated_scores(folders)
    suffixes = budget_suffixes(budgets)
    at = next((budget_suffixes([b])[0] for b in budgets if b.get("steps") in steps), suffixes[0])
    table = findings.findings(arg, contrasts, findings.sensitivity(frame, scores), suffixes, at)
    text = findings.to_markdown(table, suffixes)
    if text:
        report.files += tables.write(table, text, tdir, findings.FILE)
    return text


def build(
    sweeps: Sequence[Sweep],
    folder: Path,
    task_prompts: Mapping[str, torch.Tensor] | None = None,
    similarity_rank: int = 4,
    seed: int = 0,
    delta: float = DELTA,
) -> Report:
    """Write the tables, plots and ``index.md`` of ``sweeps`` into ``folder`` (created); ``delta``:
    the equivalence margin of the verdicts (fraction)."""
    report = Report(folder)
    tdir, pdir = folder / "tables", folder / "plots"
    trials, targets = _combine(sweeps)

    arg, val, progress = _tables(report, trials, targets, tdir, delta)

    plot_links: list[tuple[str, Path]] = []
    bars = _arg_bars_link(report, arg, val, pdir)
    if bars:
        plot_links.append(bars)
    curves = plots.learning_curves(trials, pdir / "learning_curves.png") if len(trials) else None
    if curves:
        plot_links.append(("Learning curves (validation objective)", curves))
    study_links, study_lines = _study_links_and_lines(report, sweeps, tdir, pdir)
    plot_links += study_links
    captions = {path.name: CURVES_CAPTION for _, path in study_links}
    methods = _study_arm_methods(sweeps)
    contrast_text, contrast_table = _contrasts(report, sweeps, targets, methods, tdir, pdir, plot_links, delta)
    calibration_text, calibrated = _calibration(report, sweeps, tdir)
    findings_text = _findings(report, sweeps, arg, contrast_table, calibrated, tdir)
    noise_text, noise_files = noise.write_noise(sweeps, tdir)
    report.files += noise_files
    progress_link = _best_so_far_link(progress, sweeps, methods, pdir)
    if progress_link:
        plot_links.append(progress_link)
        captions[progress_link[1].name] = BEST_SO_FAR_CAPTION.format(unit=progress["unit"].iloc[0])
    plot_links += _sensitivity_and_importances(report, trials, tdir, pdir, seed)
    if task_prompts:
        plot_links.append(_similarity_link(report, task_prompts, similarity_rank, tdir, pdir))
    report.files += [p for _, p in plot_links]
    sections = [
        ("The papers' findings", findings_text, findings.FILE),
        ("The study's arms against each other", contrast_text, "contrasts"),
        ("Does the search objective predict the target?", calibration_text, "calibration"),
        ("The search objective's noise", noise_text, noise.FILE),
    ]
    index = _index(sweeps, arg, plot_links, report.notes, captions, study_lines, delta, sections)
    (folder / INDEX).write_text(index)
    report.files.append(folder / INDEX)
    return report


def _calibration(report: Report, sweeps: Sequence[Sweep], tdir: Path) -> tuple[str, Calibrated]:
    """Every calibrated trial of the sweeps (and of a study's search sweeps), ``calibration.{md,csv}``
    in the tables folder; its Markdown ("" when no sweep calibrated) and the trials with the
    folders they came from."""
    from promptinit.analysis import calibration

    folders = [s.dir for s in sweeps if s.dir is not None]
    # a study's search sweeps, recorded relative to the study's folder (load_study lists them too)
    folders += [s.dir / f for s in sweeps if s.dir is not None for f in _study_result(s).get("searches", {}).values()]
    found = [(f, calibration.read(f)) for f in dict.fromkeys(Path(f).resolve() for f in folders)]
    frames = [
        df.assign(
            method=[f"{m} ({f.name})" for m in df["method"]],
            base_method=df["method"],
            search=f.name,
            config=[_trial_config(f, t) for t in df["trial_id"]],
        )
        if len(found) > 1
        else df
        for f, df in found
        if df is not None and len(df)
    ]
    if not frames:
        return "", (pd.DataFrame(), [])
    frame = pd.concat(frames, ignore_index=True)
    text = calibration.write_calibration(frame.drop(columns=["target_rank"]).to_dict("records"), tdir)
    report.files += [tdir / f"{calibration.FILE}.md", tdir / f"{calibration.FILE}.csv"]
    return text, (frame, [f for f, _ in found])


def _trial_config(sweep: Path, trial_id: str) -> str:
    """A trial's config (its folder's ``params.json``) as canonical JSON; "" when it is not there."""
    for path in sorted(sweep.glob(f"*_{trial_id}/params.json")):
        return json.dumps(json.loads(path.read_text()), sort_keys=True)
    return ""


def _arg_bars_link(report: Report, arg: pd.DataFrame, val: pd.DataFrame, pdir: Path) -> tuple[str, Path] | None:
    """The link to the bars: Δ vs PT with CIs, else (noted) the best validation objective; None without trials."""
    if len(arg) and arg["diff_mean"].notna().any():
        return ("Difference with PT on the target tasks (95 % CI)", plots.arg_bars(arg, pdir / "arg_bars.png"))
    if not len(val):
        return None
    why = "no target-task results yet" if not len(arg) else "no per-pair target scores (the sweeps predate them)"
    label = tables.objective_label(tables.objective_of(val))
    report.notes.append(f"{why}: the bars show the best validation objective, {label} (whiskers ±1.96 SE)")
    se = val["val_best_se"].astype(float)
    bars = val.assign(lo=val["val_best"] - NORMAL_95 * se, hi=val["val_best"] + NORMAL_95 * se)
    path = plots.arg_bars(
        bars,
        pdir / "arg_bars.png",
        value="val_best",
        lo="lo",
        hi="hi",
        ylabel=f"best {label}",
        title=f"best validation objective, {label}\n(whiskers: ±1.96 SE over validation pairs)",
    )
    return ("Best validation objective per method", path)


def _study_links_and_lines(
    report: Report, sweeps: Sequence[Sweep], tdir: Path, pdir: Path
) -> tuple[list[tuple[str, Path]], list[str]]:
    """The studies' PT curve plot links and their design lines for the index (none for plain sweeps)."""
    links: list[tuple[str, Path]] = []
    study_lines = []
    for s in sweeps:
        curve_plot, lines = _study_parts(s, tdir, pdir)
        study_lines += lines
        if curve_plot:
            links.append(("PT's dev learning curves on the target tasks", curve_plot))
            report.files.append(tdir / "pt_curves.md")
    return links, study_lines


def _study_arm_methods(sweeps: Sequence[Sweep]) -> dict[str, str]:
    """Arm label -> method, over the arms of every study among ``sweeps``."""
    return {
        label: m for s in sweeps if s.dir is not None and is_study(s.dir) for label, m in arm_methods(s.dir).items()
    }


def _best_so_far_link(
    progress: pd.DataFrame, sweeps: Sequence[Sweep], methods: Mapping[str, str], pdir: Path
) -> tuple[str, Path] | None:
    """The link to the best-so-far plot (None when no trial has a result yet)."""
    # a study's searches of one method and its defaults share a panel, so they compare at equal compute
    by_method = progress.assign(method=progress["method"].map(lambda label: methods.get(label, label)))
    path = plots.best_so_far_curves(by_method, pdir / "best_so_far.png", labels=_search_labels(sweeps), z=NORMAL_95)
    return ("Best validation objective so far against compute", path) if path else None


def _similarity_link(
    report: Report, task_prompts: Mapping[str, torch.Tensor], rank: int, tdir: Path, pdir: Path
) -> tuple[str, Path]:
    """The link to the task similarity heat map (its matrix goes to ``similarity.csv``)."""
    from promptinit.similarity import similarity_matrix

    names, S = similarity_matrix(task_prompts, k=rank)
    pd.DataFrame(S, index=names, columns=names).to_csv(tdir / "similarity.csv")
    report.files.append(tdir / "similarity.csv")
    path = plots.similarity_heatmap(names, S, pdir / "similarity.png", f"task similarity (top-{rank} prompt subspaces)")
    return ("Task similarity (prompt subspaces)", path)


def _search_labels(sweeps: Sequence[Sweep]) -> dict[str, str]:
    """Sweep name -> ``name (TPE + ASHA)``: its searcher and scheduler, where its config records them."""
    out = {}
    for s in sweeps:
        search, scheduler = s.config.get("search"), s.config.get("scheduler")
        if isinstance(search, dict):  # a sweep's own config (an MLflow-only load has none)
            algorithm = {"tpe": "TPE", "random": "random"}.get(search.get("algorithm", "tpe"), search.get("algorithm"))
            kind = (scheduler or {}).get("type", "asha") if isinstance(scheduler, dict) else "asha"
            out[s.name] = f"{s.name} ({algorithm} + {str(kind).upper()})"
    return out


def _study_parts(sweep: Sweep, tdir: Path, pdir: Path) -> tuple[Path | None, list[str]]:
    """A study's PT curves (plot and ``pt_curves.md``) and its design lines for the index
    (downstream steps, pairs, upstream seeds, each preset arm's settings and budget cuts)."""
    from promptinit import curves

    if sweep.dir is None or not (sweep.dir / "pt_curves.csv").is_file():
        return None, []
    result = _study_result(sweep)
    summary = curves.summarize(curves.read_csv(sweep.dir / "pt_curves.csv"))
    steps = result.get("downstream_steps")
    tdir.mkdir(parents=True, exist_ok=True)
    table = curves.markdown(_one_lr(summary))
    (tdir / "pt_curves.md").write_text(table)
    plot = plots.pt_curves(
        summary,
        pdir / "pt_curves.png",
        steps,
        f"PT on the targets ({len(summary.pairs)} (task, seed) pairs; band: 95 % CI)",
    )
    lines = [f"## Study {sweep.name}", ""]
    if result:
        tuning, times = result.get("tuning", {}), result.get("times", {})
        lines += [
            f"- Targets: {', '.join(result.get('targets', []))}; few-shot seeds {result.get('target_seeds')}; "
            f"upstream seeds {result.get('upstream_seeds')}; {tuning.get('test_size')} test examples per score "
            "at most.",
            f"- Downstream tuning of every arm: {_budget_text(result)}, batch "
            f"{tuning.get('batch_size')}, {tuning.get('optimizer')}, dev every {tuning.get('eval_every')} steps; "
            f"{_lr_text(tuning.get('lr'))}.",
            f"- Wall time of the last run (`--resume` runs count separately; jobs kept from earlier runs cost it "
            f"nothing): {_hours(times.get('wall_s', float('nan')))}"
            + "".join(f", {k.removesuffix('_s')} {_hours(v)}" for k, v in times.items() if k != "wall_s")
            + f". CPU time of every kept job of the study (not counting the searches' trials): "
            f"{result.get('cpu_s_jobs', 0) / 3600:.1f} h.",
        ]
        if not result.get("finished"):
            left = [a for a in result.get("arms", []) if a not in result.get("done", [])]
            lines.append(
                f"- **Partial**: {len(result.get('done', []))} of {len(result.get('arms', []))} arms done; "
                f"still to run: {', '.join(left)} (`search/study.py --resume` continues)."
            )
        lines += ["", "| arm | method | outer steps | settings | budget cut |", "|---|---|---|---|---|"]
        for arm, p in result.get("presets", {}).items():
            settings = ", ".join(f"{k} {v}" for k, v in p.get("settings", {}).items())
            lines.append(f"| {arm} | {p.get('method')} | {p.get('steps')} | {settings} | {p.get('cut') or '—'} |")
        for arm, folder in result.get("searches", {}).items():
            lines.append(f"| {arm} | {arm.split(' (')[0]} | searched | sweep `{folder}` | — |")
        lines.append("")
    lines += ["PT's best dev score so far (%, mean over the pairs [95 % CI]):", "", table]
    return plot, lines


def _one_lr(summary: Any) -> Any:
    """PT's curve summary without its "lr chosen on dev" column when there was one lr to choose
    from (the column would repeat that lr's)."""
    from promptinit.curves import CHOSEN

    lrs = [c for c in summary.columns if c != CHOSEN]
    return dataclasses.replace(summary, columns=tuple(lrs)) if len(lrs) == 1 else summary


def _lr_text(lr: Any) -> str:
    """``0.3`` -> "lr 0.3"; ``[0.5, 0.3]`` -> "the lr chosen on dev per problem from [0.5, 0.3]"."""
    lrs = lr if isinstance(lr, list) else [lr]
    return f"lr {lrs[0]}" if len(lrs) == 1 else f"the lr chosen on dev per problem from {lrs}"


def _budget_text(result: Mapping) -> str:
    """``120 steps (chosen from PT's curves below)``, or a study's two budgets and its cuts."""
    named = [b for b in result.get("budgets", []) if b.get("label")]
    if not named:
        return f"{result.get('downstream_steps')} steps (chosen from PT's curves below)"
    parts = [f"{b['steps']} steps ({_end_text(result) if b['end'] else 'a start'})" for b in named]
    only = result.get("start_only") or []
    cut = f"; {', '.join(only)} at the start budget only (a stated cost cut)" if only and len(named) > 1 else ""
    count = f"{len(named)} budget{'s' if len(named) > 1 else ''}"
    return f"{count}, {' and '.join(parts)}, each row labelled by its own{cut}"


def _end_text(result: Mapping) -> str:
    """How a study's end budget was found: PT's convergence, or the cap of a curve still rising."""
    found = result.get("steps_rule") or {}
    if "converged" not in found:  # recorded before 6 Dec 2026, or the `last` rule
        return "the end: PT converged by its curves below, or their cap"
    if found["converged"]:
        return f"the end: PT converged by its curves below, +{found['gain']:.1f} points over the last quarter"
    return (
        f"the end: the cap of PT's curves below; PT had not converged, still +{found['gain']:.1f} points "
        "over the last quarter"
    )


def _study_result(sweep: Sweep) -> dict:
    """A study folder's ``study.json`` (``{}`` for a plain sweep)."""
    return study_result(sweep.dir) if sweep.dir is not None else {}


def _hours(seconds: float) -> str:
    """``8714`` -> ``2 h 25 min``; under an hour in minutes, under a minute in seconds."""
    if math.isnan(seconds):
        return "n/a"
    minutes = round(seconds / 60)
    return (
        f"{minutes // 60} h {minutes % 60:02d} min"
        if minutes >= 60
        else f"{minutes} min"
        if minutes
        else f"{seconds:.0f} s"
    )


MTL_PRESET = preset_label("mtl")


def budget_suffixes(budgets: Sequence[Mapping]) -> list[str]:
    """A study's budgets (``study.json``'s ``budgets``) as its row labels' suffixes (``" · 60 steps"``);
    ``[""]`` for a study or sweep with one budget."""
    return [f" · {b['label']}" for b in budgets if b.get("label")] or [""]


def study_contrasts(result: Mapping, methods: Mapping[str, str]) -> list[tables.Contrast]:
    """The arm-against-arm questions a study's arms answer (``study.json``'s presets and searches;
    ``methods``: each arm label's method, ``results.arm_methods``):

    - each ablation arm (a preset arm of another arm's method): is its base preset better, i.e.
      does the changed setting hurt;
    - each meta-learning preset against the MTL preset (Qin et al.: MTL is a strong baseline);
    - each search arm against its method's preset (does searching pay);
    - a method's search arms against each other, in the study's order (TPE against random).

    A study with two downstream budgets (``study.json``'s ``budgets``) asks each at each budget,
    between rows of that budget (labels ``<arm> · <n> steps``); a pair with an arm the budget did
    not run is left out by ``tables.contrasts``.
    """
    suffixes = budget_suffixes(result.get("budgets", []))
    return [
        tables.Contrast(c.a + suffix, c.b + suffix, c.question)
        for suffix in suffixes
        for c in _study_questions(result, methods)
    ]


def _study_questions(result: Mapping, methods: Mapping[str, str]) -> list[tables.Contrast]:
    """``study_contrasts`` at one budget, between the arms' plain labels."""
    presets = result.get("presets", {})
    out = []
    for arm, p in presets.items():
        base = preset_label(p["method"])
        if base != arm and base in presets:
            settings = presets[base].get("settings", {})
            changed = ", ".join(f"{k} {v}" for k, v in p.get("settings", {}).items() if settings.get(k) != v)
            out.append(tables.Contrast(base, arm, f"does the ablation ({changed}) hurt?"))
        elif base == arm and arm != MTL_PRESET and MTL_PRESET in presets:
            out.append(tables.Contrast(arm, MTL_PRESET, "does meta-learning beat MTL?"))
    by_method: dict[str, list[str]] = {}
    for arm in result.get("searches", {}):
        by_method.setdefault(methods[arm], []).append(arm)
    for method, arms in by_method.items():
        if preset_label(method) in presets:
            out += [
                tables.Contrast(arm, preset_label(method), "does the search beat the paper preset?") for arm in arms
            ]
        out += [
            tables.Contrast(a, b, "does one searcher beat the other at equal compute?")
            for i, a in enumerate(arms)
            for b in arms[i + 1 :]
        ]
    return out


CURVES_CAPTION = (
    "PT (vocabulary init) on every target (task, seed): the best dev score so far against downstream steps, per lr "
    "and for the lr chosen on dev per pair (thick, with its 95 % band: tasks weigh alike, seeds resampled within a "
    "task). The dashed line is the step count every arm was tuned for."
)


def _index(
    sweeps: Sequence[Sweep],
    arg: pd.DataFrame,
    plot_links,
    notes: list[str],
    captions: Mapping[str, str] | None = None,
    study_lines: Sequence[str] = (),
    delta: float = DELTA,
    sections: Sequence[tuple[str, str, str]] = (),
) -> str:
    """The text of ``index.md``: studies, sweeps, the target table, the ``sections`` that have text
    (heading, Markdown, the stem of their tables), table links, plots and notes."""
    lines = ["# promptinit report", ""]
    lines += list(study_lines)
    lines += ["## Sweeps", ""]
    lines.append(_sweeps_table(sweeps))
    lines += ["## Target tasks: each method's best prompt against prompt tuning", ""]
    lines.append(tables.arg_markdown(arg, delta) if len(arg) else "No target-task results yet.\n")
    for heading, text, stem in sections:
        if text:
            lines += [f"## {heading}", "", text, f"[Markdown](tables/{stem}.md), [CSV](tables/{stem}.csv)", ""]
    lines += ["## Tables", ""]
    lines += _table_links(plot_links)
    lines += ["", "## Plots", ""]
    lines += _plot_sections(plot_links, captions)
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def _sweeps_table(sweeps: Sequence[Sweep]) -> str:
    """The index's Markdown table of the sweeps: partition, model, trials, where they are."""
    rows = [
        [
            s.name,
            s.partition,
            s.model or "?",
            len(s.trials),
            int((s.trials["status"] == "finished").sum()),
            _where(s.dir) if s.dir else "(MLflow)",
            s.parent_run_id or "—",
        ]
        for s in sweeps
    ]
    return tables.markdown(
        ["sweep", "partition", "model", "trials", "finished", "directory", "MLflow parent run"], rows
    )


def _where(folder: Path) -> str:
    """``folder`` relative to the working directory when it lies under it (a committed report
    names no machine's absolute paths), else as given."""
    try:
        return str(Path(folder).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(folder)


def _table_links(plot_links) -> list[str]:
    """The index's list of links to the tables (the similarity matrix when there is its plot)."""
    lines = []
    for stem, title in [
        ("arg_table", "Target tasks: Δ, ARG, P(>PT) per cell with CIs, Wilcoxon and Holm p per method"),
        ("validation", "Search: the validation objective per method"),
        ("task_gains", "Difference and relative gain per target task"),
        ("cost", "Cost and ARG per accelerator-hour"),
    ]:
        lines.append(f"- {title}: [Markdown](tables/{stem}.md), [CSV](tables/{stem}.csv)")
    lines.append("- Per-pair target scores (method, PT, test size): [CSV](tables/target_scores.csv)")
    lines.append("- Optuna parameter importances: [CSV](tables/importances.csv)")
    lines.append("- All trials (tidy): [CSV](tables/trials.csv); validation curves: [CSV](tables/curves.csv)")
    lines.append("- Best validation objective so far against compute: [CSV](tables/best_so_far.csv)")
    if any(p.name == "similarity.png" for _, p in plot_links):
        lines.append("- Task similarity matrix: [CSV](tables/similarity.csv)")
    return lines


def _plot_sections(plot_links, captions: Mapping[str, str] | None) -> list[str]:
    """The index's lines of the plots: one titled image each, with its caption where there is one."""
    lines = []
    for title, path in plot_links:
        rel = f"plots/{path.name}"
        lines += [f"### {title}", "", f"![{title}]({rel})", ""]
        caption = (captions or {}).get(path.name)
        if caption:
            lines += [caption, ""]
    return lines


def write_report(
    sweeps: Sequence[Sweep],
    out: str | Path,
    *,
    task_prompts: Mapping[str, torch.Tensor] | None = None,
    similarity_rank: int = 4,
    log_mlflow: bool = True,
    delta: float = DELTA,
) -> Report:
    """Build the report folder atomically, then log it to each sweep's MLflow parent run.

    Args:
        sweeps: loaded sweeps (``analysis.results.load_sweep`` / ``load_mlflow``).
        out: the report folder (replaced as a whole if it exists).
        task_prompts: task name -> tuned prompt, for the similarity heat map.
        similarity_rank: subspace rank of the similarity scores.
        log_mlflow: log the folder to every sweep that names a tracking URI and parent run.
        delta: the equivalence margin of the verdicts (fraction; 0.02 = 2 points).

    Returns:
        The ``Report`` (paths point into the final folder).

    Raises:
        PromptinitError: no sweeps; or logging to MLflow failed (the folder is complete by then).
    """
    if not sweeps:
        raise PromptinitError("no sweeps to report on")
    out = Path(out).expanduser().resolve()
    with atomic_folder(out) as tmp:
        report = build(sweeps, tmp, task_prompts, similarity_rank, delta=delta)
    report.folder = out
    report.files = [out / p.relative_to(tmp) for p in report.files]
    if log_mlflow:
        for s in sweeps:
            if s.tracking_uri and s.parent_run_id:
                log_report(s.tracking_uri, s.parent_run_id, out)
                report.logged_to.append(f"{s.tracking_uri} run {s.parent_run_id}")
    return report


def log_report(uri: str, parent_run_id: str, folder: Path) -> None:
    """Log the report folder (plots, tables, index) as artifacts ``report/`` of a parent run."""
    from mlflow.tracking import MlflowClient

    from promptinit.analysis.results import mlflow_patience

    try:
        with mlflow_patience():
            MlflowClient(tracking_uri=uri).log_artifacts(parent_run_id, str(folder), artifact_path=ARTIFACT_PATH)
    except Exception as err:  # noqa: BLE001 - any store / network error becomes one line
        raise PromptinitError(
            f"report written to {folder}, but logging it to MLflow run {parent_run_id} at {uri} failed "
            f"({' '.join(str(err).split())[:200]}); rerun with --no-mlflow to skip logging"
        ) from None
