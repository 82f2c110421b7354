"""The papers' findings, each judged by a study's own numbers: confirmed, refuted, equivalent or
undetermined, with the numbers that say so (``promptinit report``'s "The papers' findings").

- Qin et al. 2023 (Learning to Initialize): MAML beats PT; MTL is a strong baseline (it beats PT,
  and meta-learning does not beat it); the results are very sensitive to hyperparameters.
- Pan et al. 2023 (SUPMER): SUPMER beats PT.
- Huang et al. 2023 (MetaPT): meta-training on K-means-clustered tasks beats PT.

A claim that an arm beats PT takes that arm's verdict in the target table at each budget: its Δ
interval against PT and Holm's adjustment over the table ("better than PT": confirmed; "worse":
refuted; "equivalent within 2 points": equivalent; "undetermined", or an effect that does not
survive Holm: undetermined). MTL's claim also takes the study's "does meta-learning beat MTL?"
contrasts. Sensitivity rests on the calibrated trials of a method's searches (configurations
spread over the validation ranking, each tuned on the same target (task, few-shot seed) pairs from
its search checkpoint): Friedman's test of whether the configurations' target scores differ
beyond what the pairs' noise explains (pairs as blocks, so a pair's difficulty cancels), Holm-
adjusted over the methods, with Kendall's W (0: the pairs rank the configurations at random, 1: every
pair ranks them alike) and the range of their mean Δ to PT. A significant test confirms that the
configurations differ; how much is the range. It cannot refute the claim (few configurations and
pairs leave small differences unseen), so a test that is not significant is undetermined.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from promptinit.analysis import calibration
from promptinit.analysis.tables import ci_cell, markdown, pct
from promptinit.errors import read_json
from promptinit.stats import LEVEL, NOT_AFTER_HOLM, holm

FILE = "findings"  # findings.{md,csv} in the report's tables folder
CONFIRMED, REFUTED, EQUIVALENT, UNDETERMINED = "confirmed", "refuted", "equivalent", "undetermined"
VERDICTS = (CONFIRMED, REFUTED, EQUIVALENT, UNDETERMINED)
STRONG_BASELINE = "does meta-learning beat MTL?"  # the study's contrast (report.study_contrasts)
LABEL = re.compile(r"^calibrate (?P<trial>\S+) (?P<task>.+), seed (?P<seed>-?\d+)$")  # a calibrated target job


@dataclass(frozen=True)
class Claim:
    """A paper's finding that an arm (its label in the target table, without the budget) beats PT."""

    source: str
    finding: str
    arm: str


BEATS_PT = (
    Claim("Qin et al. 2023", "MAML beats PT", "maml (preset)"),
    Claim("Pan et al. 2023 (SUPMER)", "SUPMER beats PT", "supmer (preset)"),
    Claim("Huang et al. 2023 (MetaPT)", "meta-training on K-means-clustered tasks beats PT", "metapt (preset)"),
)
MTL = Claim(
    "Qin et al. 2023", "MTL is a strong baseline: it beats PT, and meta-learning does not beat it", "mtl (preset)"
)
SENSITIVE = ("Qin et al. 2023", "the results are very sensitive to hyperparameters")


def judged(verdict: str) -> str:
    """A target-table or contrast verdict (``a`` against ``b``) as the claim "a beats b" reads it."""
    if NOT_AFTER_HOLM in verdict:
        return UNDETERMINED
    if verdict.startswith("better than"):
        return CONFIRMED
    if verdict.startswith("worse than"):
        return REFUTED
    if verdict.startswith("equivalent"):
        return EQUIVALENT
    return UNDETERMINED


def _evidence(label: str, than: str, r: Mapping) -> str:
    """``maml (preset) − PT +6.9 [+2.9, +10.4] points, Holm p 0.004 (better than PT)``."""
    p = r.get("p_holm")
    holm_p = f", Holm p {p:.2g}" if isinstance(p, float) and math.isfinite(p) else ""
    cell = ci_cell(r["diff_mean"], r["diff_lo"], r["diff_hi"])
    return f"{label} − {than} {cell} points{holm_p} ({r['verdict']})"


def _row(table: pd.DataFrame, column: str, label: str) -> Mapping | None:
    rows = table[table[column] == label] if len(table) and column in table else table.iloc[:0]
    return rows.iloc[0].to_dict() if len(rows) else None


def beats_pt(claim: Claim, arg: pd.DataFrame, suffix: str) -> tuple[str, str] | None:
    """(verdict, why) of "``claim.arm`` beats PT" at the budget ``suffix``; None without the arm."""
    r = _row(arg, "method", claim.arm + suffix)
    return None if r is None else (judged(str(r["verdict"])), _evidence(claim.arm, "PT", r))


def strong_baseline(arg: pd.DataFrame, contrasts: pd.DataFrame, suffix: str) -> tuple[str, str] | None:
    """(verdict, why) of "MTL is a strong baseline" at the budget ``suffix``: confirmed when MTL beats
    PT and every meta-learning arm compared with it is equivalent or worse; refuted when MTL does
    not beat PT (worse or equivalent) or a meta-learning arm beats it; else undetermined."""
    vs_pt = beats_pt(MTL, arg, suffix)
    if vs_pt is None:
        return None
    mtl = MTL.arm + suffix
    rivals = contrasts[(contrasts["question"] == STRONG_BASELINE) & (contrasts["b"] == mtl)] if len(contrasts) else []
    against = [
        (judged(str(r["verdict"])), _evidence(str(r["a"]).removesuffix(suffix), MTL.arm, r))
        for _, r in pd.DataFrame(rivals).iterrows()
    ]
    whys = [vs_pt[1], *(why for _, why in against)]
    if vs_pt[0] in (REFUTED, EQUIVALENT) or any(v == CONFIRMED for v, _ in against):
        verdict = REFUTED
    elif vs_pt[0] == CONFIRMED and against and all(v in (REFUTED, EQUIVALENT) for v, _ in against):
        verdict = CONFIRMED
    else:
        verdict = UNDETERMINED
    if not against:
        whys.append("no meta-learning arm to compare with")
    return verdict, "; ".join(whys)


def calibrated_scores(folders: Iterable[Path]) -> tuple[dict[str, dict[tuple[str, int], float]], set[int]]:
    """Trial id -> {(target task, few-shot seed): test score} of the calibrated trials' kept target
    jobs (``<sweep>/final/target-*.json``, labelled ``calibrate <trial> <task>, seed <seed>``), and
    the downstream step counts they were tuned for."""
    out: dict[str, dict[tuple[str, int], float]] = {}
    steps: set[int] = set()
    for folder in folders:
        for path in sorted((Path(folder) / "final").glob("target-*.json")):
            record = read_json(path)
            match = LABEL.match(str(record.get("label", ""))) if isinstance(record, dict) else None
            if match and isinstance(record.get("value"), (int, float)):
                out.setdefault(match["trial"], {})[(match["task"], int(match["seed"]))] = float(record["value"])
                steps.add(int(record["key"]["tuning"]["steps"]))
    return out, steps


def sensitivity(calibrated: pd.DataFrame, scores: Mapping[str, Mapping[tuple[str, int], float]]) -> pd.DataFrame:
    """Per method: Friedman's test over its distinct calibrated checkpoints (all its searches, a
    checkpoint two searches scored counted once: ``calibration.checkpoint_keys``) on the target
    pairs every one of them was tuned on; Kendall's W; the range of their mean target Δ to PT
    (``target_diff``, points); Holm's p over the methods. ``calibrated``: the report's calibrated
    trials (``base_method`` or ``method``, ``trial_id``, ``target_diff``)."""
    from scipy.stats import friedmanchisquare

    if calibrated.empty:
        return pd.DataFrame()
    rows = []
    df = calibrated.assign(key=calibration.checkpoint_keys(calibrated))
    method_col = "base_method" if "base_method" in df else "method"
    for method, g in df.groupby(method_col, sort=True):
        found = []
        for _, c in g.groupby("key", sort=False):
            mine = next((scores[t] for t in c["trial_id"] if t in scores), None)
            if mine:
                found.append((mine, float(c["target_diff"].iloc[0])))
        pairs = sorted(set.intersection(*(set(m) for m, _ in found))) if found else []
        if len(found) < 3 or len(pairs) < 2:
            continue
        matrix = np.array([[m[p] for m, _ in found] for p in pairs])  # pairs x checkpoints
        n, k = matrix.shape
        if np.ptp(matrix, axis=1).max() == 0:  # every pair scored every checkpoint alike
            stat, p = 0.0, 1.0
        else:
            stat, p = (float(x) for x in friedmanchisquare(*matrix.T))
        diffs = [d for _, d in found]
        rows.append(
            {
                "method": method,
                "checkpoints": k,
                "pairs": n,
                "friedman_chi2": stat,
                "p_value": p,
                "kendall_w": stat / (n * (k - 1)),
                "diff_min": min(diffs),
                "diff_max": max(diffs),
            }
        )
    out = pd.DataFrame(rows)
    if len(out):
        out["p_holm"] = holm(out["p_value"].tolist())
    return out


def sensitive(sens: pd.DataFrame) -> tuple[str, str] | None:
    """(verdict, why) of "the results are very sensitive to hyperparameters": confirmed when some
    method's configurations differ on the target (Holm p below 0.05), else undetermined."""
    if sens.empty:
        return None
    whys = [
        f"{r.method}: {r.checkpoints} configurations × {r.pairs} target pairs, mean Δ to PT from "
        f"{pct(r.diff_min)} to {pct(r.diff_max)} points, Friedman p {r.p_value:.2g} "
        f"(Holm {r.p_holm:.2g}), Kendall's W {r.kendall_w:.2f}"
        for r in sens.itertuples()
    ]
    confirmed = bool((sens["p_holm"] < 1 - LEVEL).any())
    return (CONFIRMED if confirmed else UNDETERMINED), "; ".join(whys)


def findings(
    arg: pd.DataFrame, contrasts: pd.DataFrame, sens: pd.DataFrame, budgets: Sequence[str], sensitivity_budget: str
) -> pd.DataFrame:
    """One row per finding the study has arms for, one verdict and why per budget. ``budgets``:
    the target table's label suffixes (``" · 60 steps"``; ``""`` without budgets);
    ``sensitivity_budget``: the one the calibration tuned at (the start budget)."""
    out = []
    for claim in (*BEATS_PT[:1], MTL, *BEATS_PT[1:]):
        cells = {b: (strong_baseline(arg, contrasts, b) if claim is MTL else beats_pt(claim, arg, b)) for b in budgets}
        if any(cells.values()):
            out.append({"source": claim.source, "finding": claim.finding, **_cells(cells)})
    judged_sens = sensitive(sens)
    if judged_sens:
        cells = {b: judged_sens if b == sensitivity_budget else None for b in budgets}
        out.append({"source": SENSITIVE[0], "finding": SENSITIVE[1], **_cells(cells)})
    return pd.DataFrame(out)


def _cells(cells: Mapping[str, tuple[str, str] | None]) -> dict[str, str]:
    return {f"verdict{b}": cell[0] if cell else "not measured" for b, cell in cells.items()} | {
        f"why{b}": cell[1] if cell else "" for b, cell in cells.items()
    }


def to_markdown(table: pd.DataFrame, budgets: Sequence[str]) -> str:
    """The findings table ("" when the study judges none) and what its verdicts mean."""
    if table.empty:
        return ""
    names = [b.removeprefix(" · ") or "the target" for b in budgets]
    head = ["finding", "source", *(f"at {n}" for n in names)]
    rows = [
        [r["finding"], r["source"], *(_verdict_cell(r[f"verdict{b}"], r[f"why{b}"]) for b in budgets)]
        for _, r in table.iterrows()
    ]
    return (
        markdown(head, rows)
        + "\nEach cell: the verdict, then the numbers it rests on (95 % CIs and Holm-adjusted p from the tables "
        "above). An arm's claim to beat PT follows its verdict in the target table: confirmed (better than PT), "
        "refuted (worse), equivalent (within the equivalence margin) or undetermined (too wide, or not after "
        "Holm). MTL is a strong baseline when it beats PT and no meta-learning arm beats it. Sensitivity: "
        "Friedman's test over a method's calibrated configurations (its searches' trials spread over the "
        "validation ranking, tuned from their search checkpoints at the calibration's budget; ASHA trained "
        "some for fewer outer steps, which is part of what differs), Holm-adjusted over the methods; it "
        "confirms that configurations differ and cannot refute it, so a test that is not significant is "
        "undetermined; the range of their mean Δ to PT says how much.\n"
    )


def _verdict_cell(verdict: str, why: str) -> str:
    return f"**{verdict}**: {why}" if why else verdict
