"""Does the search's cheap objective rank upstream checkpoints as the target's recipe does?

A search scores each trial by ARG (average relative gain over PT) on the validation tasks after
a cheap downstream tuning, the *proxy*: lr 0.3 alone, 20 steps, one evaluation
(``configs/study/cpu.yaml`` ``validation.tuning``). The targets are tuned with the *full*
recipe: the lr chosen on dev per problem from {0.5, 0.4, 0.3, 0.2} (Qin et al.) for the step
count of the step rule (PT's dev curves; in the CPU study it chose 60, the cap, which is the
default here), dev every 10 steps (``target.tuning``). The issue's rule: validation uses the
target's recipe, or a cheaper proxy whose Spearman rho with the full recipe is measured
>= 0.8 over >= 12 checkpoints, written in the docs with its CI.

This scores a study's upstream checkpoints (``<study>/upstream/<arm>-seed<u>-<hash>/``, the
prompt in ``prompt.safetensors``) under both recipes on the same validation tasks and few-shot
seeds: per checkpoint the ARG over PT (each recipe's own PT baseline, from the sampled-vocabulary
init, read from or written to the on-disk baseline cache) and its standard error
(``promptinit.trainables.scoring.arg_against``, ``arg_standard_error``), as the search computes
them. Every problem of a task under one recipe (PT and every checkpoint x few-shot seed x lr)
is one batched run (``score_problems``). Then Spearman's rho between the two ARG columns over
the checkpoints, with a 95 % percentile bootstrap interval over checkpoints
(``promptinit.analysis.calibration.spearman``), and the CPU seconds of each recipe.

``--calibrated SWEEP ...`` scores a search's calibrated trials instead (those ``calibration.csv``
lists, each at the checkpoint it was calibrated from: the one whose report holds its validation
scores): the proxy is then the search's own objective, the scores in that report (the search
computed them; nothing is recomputed), and only the full recipe runs. A trial of another listed
sweep with the same method, settings and validation scores is the same checkpoint (a study's two
searches share their start) and counts once, as ``promptinit report`` pools them. The objective
whose rho is the verdict is the sweeps' ``search.objective`` (Δ, the score difference to PT, or
ARG); the other is printed beside it.

Only arms whose downstream start is the prompt alone are scored (default: MTL, MAML, FoMAML,
Reptile, MetaPT: 15 checkpoints of the CPU study); SUPMER's ψ acts downstream too and is refused.
PT's baseline comes from the cache where present, as it does in a search (its cost is then not
counted); either way it is one start of the (checkpoints + 1) of each batched run.

Each (recipe, task) result is written to ``<out>/parts/<recipe>-<task>.json`` as it finishes;
``--resume`` keeps those whose settings match and computes the rest. Writes to ``--out``
``objective_proxy.csv`` (per checkpoint: arm, upstream seed, each recipe's ARG, its SE and the
checkpoint's share of the recipe's CPU seconds) and ``objective_proxy.md`` (rho [95 % CI], both
recipes, the costs, the verdict, the table), and prints the markdown.

Usage:
    python benchmarks/objective_proxy.py --tasks bb_misconceptions bb_anachronisms   # CPU study (hours)
    python benchmarks/objective_proxy.py --tasks bb_misconceptions bb_anachronisms --resume
    python benchmarks/objective_proxy.py --tasks bb_navigate --arms mtl maml --seeds 100 13 \\
        --proxy steps=10 --full lr=0.5,0.3 steps=30
    python benchmarks/objective_proxy.py --calibrated runs/cpu-study-v2/sweeps/cpu-study-v2-mtl-{tpe,random} \\
        --tasks bb_multiemo_reviews_en bb_multiemo_medicine_en bb_movie_recommendation bb_bbq_age_ambig \\
        bb_bbq_religion_disambig --seeds 100 13 21 --full lr=0.3 steps=60 eval_every=20 batch_size=4 \\
        eval_batch_size=32 test_size=100 rows_per_pass=32 test_per_seed=true \\
        --out runs/objective-proxy-cpu-study-v2      # study v2: its target recipe at 60 steps (18,474 CPU s)
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptinit import admission
from promptinit.errors import PromptinitError, read_json
from promptinit.files import atomic_write, atomic_write_json
from promptinit.tuning import TuneConfig

if TYPE_CHECKING:
    from promptinit.analysis.calibration import Rho

STUDY = Path("runs/cpu-study")
ARMS = ("mtl", "maml", "fomaml", "reptile", "metapt")  # preset arms whose downstream start is the prompt
SEEDS = admission.SEEDS  # the few-shot seeds the validation tasks were admitted with
# configs/study/cpu.yaml: validation.tuning (the search's objective, promptinit.admission's
# validation budget) and target.tuning (the step rule chose 60 steps, its cap, in
# runs/cpu-study/study.json: the same but lrs chosen on dev, 60 steps, dev every 10)
PROXY = dict(admission.VALIDATION_TUNING)
FULL = {**PROXY, "lr": [0.5, 0.4, 0.3, 0.2], "steps": 60, "eval_every": 10}
RECIPES = ("proxy", "full")
ADMISSIBLE_RHO = 0.8  # the bar, on rho's point estimate
MIN_CHECKPOINTS = 12  # ... measured over at least this many checkpoints
CHECKPOINT = re.compile(r"^(?P<arm>.+)-seed(?P<seed>\d+)-(?P<hash>[0-9a-f]+)$")  # search.phases.upstream's names
OBJECTIVES = {"arg": "ARG", "delta": "Δ"}  # search.objective: its name in the report
COLUMNS = ("arg", "arg_se", "delta", "delta_se")  # per recipe, <recipe>_<column> in the CSV (fractions)
PARTS = "parts"  # <out>/parts/<recipe>-<task>.json
FILE = "objective_proxy"  # <out>/objective_proxy.{csv,md}


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One upstream checkpoint folder of a study."""

    name: str  # the folder's name, <arm>-seed<u>-<hash>; a calibrated trial's id
    arm: str
    upstream_seed: int
    path: Path
    proxy: Mapping[str, float] | None = None  # a calibrated trial's search report (val/arg, val/delta, SEs)
    target: float | None = None  # a calibrated trial's target Δ (its calibration.csv's target_diff)


def find_checkpoints(study: Path, arms: Sequence[str]) -> list[Checkpoint]:
    """The checkpoints of ``arms`` in ``<study>/upstream``, by arm (in ``arms``' order) then seed.

    Raises:
        PromptinitError: no ``upstream/`` folder, or fewer than 3 checkpoints (no ranking).
    """
    upstream = study / "upstream"
    if not upstream.is_dir():
        raise PromptinitError(
            f"{study}: no upstream/ folder of checkpoints; pass --study a study run folder (e.g. {STUDY})"
        )
    found, seen = [], set()
    for folder in upstream.iterdir():
        m = CHECKPOINT.match(folder.name)
        if not (folder.is_dir() and m):
            continue
        seen.add(m["arm"])
        if m["arm"] in arms:
            found.append(Checkpoint(folder.name, m["arm"], int(m["seed"]), folder))
    if len(found) < 3:
        raise PromptinitError(
            f"{upstream}: {len(found)} checkpoint(s) of arms {list(arms)}, need >= 3 to rank; "
            f"pick --arms among {sorted(seen) or 'none: no <arm>-seed<u>-<hash> folder there'}"
        )
    return sorted(found, key=lambda c: (list(arms).index(c.arm), c.upstream_seed, c.name))


def find_calibrated(sweeps: Sequence[Path]) -> tuple[list[Checkpoint], str, list[str]]:
    """The calibrated trials of ``sweeps`` (a sweep folder's ``calibration.csv``), each at the
    checkpoint whose report holds its validation scores, a configuration with the same scores in
    another sweep counted once; with the sweeps' objective and the twins' names (``a = b``).

    Raises:
        PromptinitError: a sweep without ``calibration.csv``, a trial without such a checkpoint,
            sweeps of different objectives, or fewer than 3 distinct checkpoints.
    """
    from promptinit.analysis import calibration
    from promptinit.trainables import metrics as M

    found: dict[tuple, Checkpoint] = {}
    objectives, twins = set(), []
    for sweep in sweeps:
        df = calibration.read(sweep)
        if df is None:
            raise PromptinitError(
                f"{sweep}: no calibration.csv; pass sweep folders whose search calibrated trials (search.calibrate: k)"
            )
        for row in df.itertuples():
            objectives.add(str(getattr(row, "objective", "arg")))
            report, settings, folder = _calibrated_report(sweep, str(row.method), str(row.trial_id), row.val_arg)
            key = (str(row.method), json.dumps(settings, sort_keys=True), report[M.VAL_ARG], report[M.VAL_DELTA])
            name = f"{sweep.name}/{row.trial_id}"
            if key in found:
                twins.append(f"{name} = {found[key].name}")
                continue
            found[key] = Checkpoint(name, str(row.method), 0, folder, _columns(report), float(row.target_diff))
    if len(objectives) > 1:
        raise PromptinitError(f"{', '.join(map(str, sweeps))}: searches of different objectives {sorted(objectives)}")
    if len(found) < 3:
        raise PromptinitError(
            f"{', '.join(map(str, sweeps))}: {len(found)} distinct calibrated checkpoint(s), need >= 3"
        )
    return list(found.values()), objectives.pop(), twins


def _calibrated_report(sweep: Path, method: str, trial_id: str, val_arg: float) -> tuple[dict, dict, Path]:
    """The report, settings and folder of a calibrated trial's checkpoint: the one whose report's
    validation ARG is the one ``calibration.csv`` gives (the checkpoint the calibration tuned from)."""
    from promptinit.trainables import metrics as M

    trial = sweep / f"{method}_{trial_id}"
    for folder in sorted(trial.glob("checkpoint_*")):
        record = read_json(folder / "trial.json")
        if math.isclose(record["report"][M.VAL_ARG], val_arg, rel_tol=1e-12, abs_tol=1e-15):
            return record["report"], record["settings"], folder
    raise PromptinitError(
        f"{trial}: no checkpoint_*/trial.json reports val/arg {val_arg!r} (calibration.csv's trial {trial_id}); "
        "its calibrated checkpoint is gone (checkpoint.num_to_keep) or this is another sweep's folder"
    )


def load_start(checkpoint: Checkpoint, shape: tuple[int, int]):
    """A checkpoint's prompt, refused where its method needs its ψ downstream (SUPMER)."""
    from safetensors import safe_open

    from promptinit.backbones import load_prompt
    from promptinit.methods import REGISTRY
    from promptinit.trainables.scoring import PROMPT_FILE, needs_restore

    path = checkpoint.path / PROMPT_FILE
    prompt = load_prompt(path, shape)
    with safe_open(str(path), "pt") as f:  # train_job records the method in the file's metadata
        method = (f.metadata() or {}).get("method", checkpoint.arm)
    if method in REGISTRY and needs_restore(method):
        raise PromptinitError(
            f"{path}: arm {checkpoint.arm!r} ({method}) tunes downstream with its ψ, not from the prompt alone; "
            "drop it from --arms"
        )
    return prompt


def parse_value(text: str) -> Any:
    """A tuning value from the command line: int, float, ``a,b,...`` (a list), none, true, false or a word."""
    if "," in text:
        return [parse_value(v) for v in text.split(",") if v]
    words = {"none": None, "true": True, "false": False}
    if text.lower() in words:
        return words[text.lower()]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def recipe(flag: str, pairs: Sequence[str], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` with the ``key=value`` overrides of ``flag``, checked by ``TuneConfig``."""
    fields = [f.name for f in dataclasses.fields(TuneConfig)]
    out = dict(defaults)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not value:
            raise PromptinitError(f"{flag} {pair!r}: not key=value; e.g. {flag} steps=20 lr=0.5,0.3")
        if key not in fields:
            raise PromptinitError(f"{flag} {key}=...: not a tuning setting; use one of {', '.join(fields)}")
        out[key] = parse_value(value)
    try:
        config = TuneConfig(**out)
    except (PromptinitError, TypeError) as err:
        raise PromptinitError(f"{flag}: {err}") from None
    return {**out, "lr": list(config.lrs) if config.selects_lr else config.lr}


def spelled(tuning: Mapping[str, Any]) -> str:
    """A recipe in words."""
    c = TuneConfig(**tuning)
    lr = f"lr chosen on dev per problem from {list(c.lrs)}" if c.selects_lr else f"lr {c.lr}"
    return (
        f"{lr}, {c.optimizer}, batch {c.batch_size}, {c.steps} steps, dev every {c.eval_every}, "
        f"test <= {c.test_size} examples"
    )


def part_key(recipe_name: str, task, seeds, tuning, backbone: str, checkpoints) -> dict:
    """What a (recipe, task) result depends on (a resumed run keeps a part only when it matches)."""
    key = {
        "recipe": recipe_name,
        "task": task.name,
        "task_fingerprint": task.fingerprint,
        "seeds": list(seeds),
        "tuning": dict(tuning),
        "backbone": backbone,
        "checkpoints": [c.name for c in checkpoints],
    }
    return json.loads(json.dumps(key))  # as it reads back


def score_part(backbone: dict, task, tuning: dict, seeds, prompts: Mapping[str, Any]) -> dict:
    """One (recipe, task): PT and every checkpoint on every seed as one batched run, and its cost."""
    from promptinit.trainables import scoring

    problems: list[tuple[dict, int]] = [({}, s) for s in seeds]
    problems += [({"init": p}, s) for p in prompts.values() for s in seeds]
    t0, w0 = time.process_time(), time.perf_counter()
    scores = scoring.score_problems(backbone, task, tuning, problems)
    cpu, wall = time.process_time() - t0, time.perf_counter() - w0
    n = len(seeds)
    return {
        "pt": scores[:n],
        "scores": {name: scores[(i + 1) * n : (i + 2) * n] for i, name in enumerate(prompts)},
        "cpu_s": cpu,
        "wall_s": wall,
    }


def objective(parts: Sequence[Mapping], name: str) -> dict[str, float]:
    """A checkpoint's ARG over PT and its score difference Δ to PT (tasks weighed alike), each with
    its standard error, on the parts' (task, seed) pairs, as a search's report computes them."""
    from promptinit.trainables.scoring import validation_metrics

    scores = {
        (p["key"]["task"], s): v for p in parts for s, v in zip(p["key"]["seeds"], p["scores"][name], strict=True)
    }
    base = {(p["key"]["task"], s): v for p in parts for s, v in zip(p["key"]["seeds"], p["pt"], strict=True)}
    return _columns(validation_metrics(scores, base))


def _columns(report: Mapping[str, float]) -> dict[str, float]:
    """``COLUMNS`` from a validation report (``trainables.metrics``' names)."""
    from promptinit.trainables import metrics as M

    names = (M.VAL_ARG, M.VAL_ARG_SE, M.VAL_DELTA, M.VAL_DELTA_SE)
    return {c: float(report[m]) for c, m in zip(COLUMNS, names, strict=True)}


def rows_of(checkpoints: Sequence[Checkpoint], parts: Mapping[str, list[dict]]) -> list[dict]:
    """The CSV rows: per checkpoint each recipe's ARG and Δ with their SEs and its share of the
    recipe's batched runs' CPU seconds (a recipe not run here, the search's proxy: its report, no CPU);
    a calibrated trial's target Δ too."""
    rows = []
    for c in checkpoints:
        row: dict[str, Any] = {"checkpoint": c.name, "arm": c.arm, "upstream_seed": c.upstream_seed}
        for r in RECIPES:
            values = objective(parts[r], c.name) if parts.get(r) else c.proxy
            if values is None:
                raise PromptinitError(f"{c.name}: no {r} scores")
            row.update({f"{r}_{k}": v for k, v in values.items()})
        for r in RECIPES:  # each batched run's CPU seconds shared evenly by its starts (PT + checkpoints)
            row[f"{r}_cpu_s"] = sum(p["cpu_s"] for p in parts.get(r, [])) / (len(checkpoints) + 1)
        if c.target is not None:
            row["target_delta"] = c.target
        rows.append(row)
    return rows


def verdict(rho: Rho) -> str:
    """The one-line verdict on the issue's rule (rho >= 0.8 over >= 12 checkpoints)."""
    bar = f"{ADMISSIBLE_RHO:g}"
    if not math.isfinite(rho.rho):
        return "undetermined: an ARG column is constant over the checkpoints, so there is no rank correlation"
    if rho.rho < ADMISSIBLE_RHO:
        return (
            f"proxy not admissible (rho {rho.rho:+.2f} < {bar} over {rho.n} checkpoints): validate with the full recipe"
        )
    if rho.n < MIN_CHECKPOINTS:
        return (
            f"proxy not admissible yet: rho {rho.rho:+.2f} >= {bar}, but over {rho.n} < {MIN_CHECKPOINTS} checkpoints "
            f"(the rule needs >= {MIN_CHECKPOINTS})"
        )
    lower = (
        f"the 95 % CI's lower bound {rho.lo:+.2f} is >= {bar} too"
        if rho.lo >= ADMISSIBLE_RHO
        else f"the 95 % CI's lower bound {rho.lo:+.2f} is below {bar}: rho >= {bar} is not established at 95 %"
    )
    return f"proxy admissible (rho {rho.rho:+.2f} >= {bar} over {rho.n} >= {MIN_CHECKPOINTS} checkpoints); {lower}"


def report(
    rows: Sequence[dict], parts: Mapping[str, list[dict]], tunings: Mapping[str, Any], header: str, objective: str
) -> str:
    """The markdown: what was run, rho of the objective (and of the other measure) with its CI,
    the costs, the verdict on the objective's rho and the table."""
    import numpy as np
    from scipy.stats import rankdata

    from promptinit.analysis.calibration import RESAMPLES, spearman
    from promptinit.analysis.tables import markdown

    rhos = {k: spearman([r[f"proxy_{k}"] for r in rows], [r[f"full_{k}"] for r in rows]) for k in OBJECTIVES}
    rho = rhos[objective]
    ranks = {
        r: rankdata(-np.array([row[f"{r}_{objective}"] for row in rows]), method="min").astype(int) for r in RECIPES
    }
    name = OBJECTIVES[objective]
    table = markdown(
        [
            "checkpoint",
            "arm",
            "upstream seed",
            "proxy ARG, % (± SE)",
            "proxy Δ, points (± SE)",
            f"proxy rank ({name})",
            "full ARG, % (± SE)",
            "full Δ, points (± SE)",
            f"full rank ({name})",
        ],
        [
            [
                row["checkpoint"],
                row["arm"],
                row["upstream_seed"],
                *(
                    cell
                    for r in RECIPES
                    for cell in (
                        f"{100 * row[f'{r}_arg']:+.1f} (± {100 * row[f'{r}_arg_se']:.1f})",
                        f"{100 * row[f'{r}_delta']:+.1f} (± {100 * row[f'{r}_delta_se']:.1f})",
                        ranks[r][i],
                    )
                ),
            ]
            for i, row in enumerate(rows)
        ],
    )
    dropped = f"; {100 * rho.dropped:.0f} % of resamples had a constant column and were dropped" if rho.dropped else ""
    other = next(k for k in OBJECTIVES if k != objective)
    cpu = {r: sum(p["cpu_s"] for p in parts.get(r, [])) for r in RECIPES}
    cost = (
        f"CPU seconds: proxy {cpu['proxy']:.0f}, full {cpu['full']:.0f}: the full recipe costs "
        f"{cpu['full'] / cpu['proxy']:.1f}x the proxy (each counts PT's baseline where it was not in the cache)"
        if cpu["proxy"]
        else f"CPU seconds: full {cpu['full']:.0f} (the proxy's scores are the search's own, not recomputed here)"
    )
    return "\n".join(
        [
            "# Search objective: proxy recipe vs full recipe",
            "",
            header,
            "",
            f"- proxy: {tunings['proxy'] if isinstance(tunings['proxy'], str) else spelled(tunings['proxy'])}",
            f"- full: {spelled(tunings['full'])}",
            f"- objective: {name} over each recipe's own PT baseline (vocabulary init), mean over tasks and seeds"
            f" ({'the score difference in points, tasks weighed alike' if objective == 'delta' else 'relative gain'})",
            "",
            f"**Spearman rho (proxy {name} vs full {name}) = {rho.fmt()}** (95 % percentile bootstrap over the "
            f"{rho.n} checkpoints, {RESAMPLES} resamples{dropped}); of {OBJECTIVES[other]}: {rhos[other].fmt()}",
            "",
            cost,
            "",
            f"Verdict: {verdict(rho)}",
            *_against_targets(rows, objective),
            "",
            table,
        ]
    )


def _against_targets(rows: Sequence[dict], objective: str) -> list[str]:
    """Calibrated checkpoints: which recipe's validation ranks them as the targets do (Spearman
    rho of each recipe's objective with the calibration's target Δ); nothing for others."""
    from promptinit.analysis.calibration import spearman

    if not rows or "target_delta" not in rows[0]:
        return []
    target = [r["target_delta"] for r in rows]
    rho = {r: spearman([row[f"{r}_{objective}"] for row in rows], target).fmt() for r in RECIPES}
    return [
        "",
        f"Against the targets (each checkpoint's target Δ, its sweep's calibration.csv): Spearman rho of the "
        f"validation {OBJECTIVES[objective]} with it, proxy {rho['proxy']}, full {rho['full']} (95 % percentile "
        f"bootstrap over the {len(rows)} checkpoints; the higher, the more that recipe's validation ranks them as "
        "the targets do)",
    ]


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    """``rows`` as CSV (floats as repr, so they read back exactly), written atomically."""
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write(path, text.getvalue())


def run(args: argparse.Namespace) -> str:
    """Score every checkpoint under both recipes (resuming finished parts); returns the markdown."""
    import torch

    from promptinit.backbones import Backbone, BackboneConfig
    from promptinit.tasks.catalog import load_task

    tunings: dict[str, Any] = {"proxy": recipe("--proxy", args.proxy, PROXY), "full": recipe("--full", args.full, FULL)}
    if args.calibrated:
        checkpoints, objective, twins = find_calibrated(args.calibrated)
        tunings["proxy"] = "the search's own validation scores (each checkpoint's report; not recomputed)"
        source = f"the calibrated trials of {', '.join(str(s) for s in args.calibrated)}" + (
            f" (the same checkpoint twice, counted once: {'; '.join(twins)})" if twins else ""
        )
    else:
        checkpoints, objective = find_checkpoints(args.study, args.arms), args.objective
        source = f"{args.study / 'upstream'} (arms {', '.join(args.arms)})"
    computed = [r for r in RECIPES if isinstance(tunings[r], dict)]
    tasks = [load_task(t) for t in args.tasks]
    folder = args.out / PARTS
    if not args.resume and folder.is_dir() and any(folder.glob("*.json")):
        raise PromptinitError(
            f"{folder}: holds results of an earlier run; pass --resume to keep them, or another --out"
        )
    torch.set_num_threads(args.threads)
    config = BackboneConfig(
        args.model, prompt_length=args.prompt_length, dtype=args.dtype, max_input_tokens=args.max_input_tokens
    )
    backbone = dataclasses.asdict(config)
    bb = Backbone(config)  # loads the model once (cached in-process), before any run's clock starts
    prompts = {c.name: load_start(c, (args.prompt_length, bb.hidden_size)) for c in checkpoints}
    header = (
        f"{len(checkpoints)} checkpoints of {source}; tasks "
        f"{', '.join(args.tasks)}; few-shot seeds {', '.join(map(str, args.seeds))}; {args.model} {bb.config.dtype}, "
        f"L = {args.prompt_length}, inputs <= {args.max_input_tokens} tokens, {args.threads} thread(s)"
    )
    print(f"# {header}", flush=True)
    parts: dict[str, list[dict]] = {r: [] for r in RECIPES}
    start, todo = time.perf_counter(), len(computed) * len(tasks)
    for r in computed:
        for task in tasks:
            key = part_key(r, task, args.seeds, tunings[r], bb.fingerprint, checkpoints)
            path = folder / f"{r}-{task.name}.json"
            part = read_json(path) if args.resume and path.is_file() else None
            if part is not None and part.get("key") == key:
                print(f"{r} {task.name}: kept from {path}", flush=True)
            else:
                part = {"key": key, **score_part(backbone, task, tunings[r], args.seeds, prompts)}
                atomic_write_json(path, part, indent=1)
                print(
                    f"{r} {task.name}: {len(prompts) + 1} starts x {len(args.seeds)} seeds, {part['cpu_s']:.0f} CPU s "
                    f"({sum(len(v) for v in parts.values()) + 1}/{todo}, {time.perf_counter() - start:.0f} s elapsed)",
                    flush=True,
                )
            parts[r].append(part)
    rows = rows_of(checkpoints, parts)
    text = report(rows, parts, tunings, header, objective)
    write_csv(args.out / f"{FILE}.csv", rows)
    atomic_write(args.out / f"{FILE}.md", text)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", type=Path, default=STUDY, help="a study run folder with upstream/<arm>-seed<u>-<hash>/")
    p.add_argument("--arms", nargs="+", default=list(ARMS), help="arms whose downstream start is the prompt alone")
    p.add_argument(
        "--calibrated",
        type=Path,
        nargs="+",
        metavar="SWEEP",
        help="score these sweeps' calibrated trials instead of --study's upstream/ (the proxy: their search scores)",
    )
    p.add_argument(
        "--objective",
        choices=sorted(OBJECTIVES),
        default="arg",
        help="the measure the verdict is on, with --study (--calibrated takes the sweeps' search.objective)",
    )
    p.add_argument("--tasks", nargs="+", required=True, help="validation tasks (configs/tasks.yaml names)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="few-shot seeds")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--prompt-length", type=int, default=8)
    p.add_argument("--max-input-tokens", type=int, default=64)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--proxy", nargs="*", default=[], metavar="KEY=VALUE", help=f"overrides of the proxy {PROXY}")
    p.add_argument("--full", nargs="*", default=[], metavar="KEY=VALUE", help=f"overrides of the full recipe {FULL}")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("runs/objective_proxy"))
    p.add_argument("--resume", action="store_true", help="keep the finished (recipe, task) results in --out")
    args = p.parse_args(argv)
    try:
        text = run(args)
    except PromptinitError as err:
        print(f"objective_proxy: error: {err}", file=sys.stderr)
        return 2
    print(f"\n{text}")
    print(f"wrote {args.out / FILE}.md and {args.out / FILE}.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
