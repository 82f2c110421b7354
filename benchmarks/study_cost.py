"""What a study's target phase costs now: a sample of its committed jobs rerun as one batched run.

The first CPU study (``runs/cpu-study``) tuned every (arm, upstream seed, task) as its own job:
5 few-shot seeds x 4 learning rates = 20 runs per batched call, about 650 CPU s each. The target
phase now puts every problem of a task (PT and every arm x upstream seed x few-shot seed x lr)
in one batched run (``promptinit.search.phases.jobs.run_scores``). This reruns a sample of the
committed target jobs of one task that way, from the committed upstream checkpoints and with the
committed tuning settings, and prints per (arm, upstream seed) the committed CPU seconds, the
new ones (the run's CPU seconds shared evenly by its owners) and their ratio; the target is
<= 0.4x. The scores are compared too (largest difference, points): the same problems in other
pass compositions agree to rounding, which downstream Adafactor at lr 0.3 can amplify.

PT's baseline is rerun as well (``$PROMPTINIT_CACHE`` points at a fresh folder whose assets link
to the warm cache, so no PT score comes back from a cache). The committed jobs ran in Ray
workers with one thread; ``--threads 1`` (the default) compares like with like.

Usage:
    python benchmarks/study_cost.py                          # bbc_topic; mtl, maml, fomaml, reptile x 3 seeds
    python benchmarks/study_cost.py --task bb_intent_recognition --arms mtl --upstream-seeds 0
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from promptinit.errors import PromptinitError, read_json

STUDY = Path("runs/cpu-study")
ARMS = ("mtl", "maml", "fomaml", "reptile")


def committed(study: Path, task: str, arms: list[str], seeds: list[int]) -> tuple[dict, list[tuple[str, int, dict]]]:
    """The committed PT job of ``task`` and the sampled arms' target jobs: ``(pt, [(arm, u, job)])``."""
    jobs: dict[str, dict] = {}
    for path in sorted((study / "final").glob("*.json")):
        phase = path.stem.rsplit("-", 1)[0]
        job = read_json(path) if phase in ("target", "curves") else {"label": ""}
        if phase == "curves" or (phase == "target" and not job["label"].startswith("PT ")):
            jobs[job["label"].replace("PT curves ", "PT ")] = job
    # PT's 20 runs per task were tuned in the curves phase (which filled the baseline cache its
    # target job then read, in 0.3 CPU s): that job is PT's committed cost and scores source.
    suffix = f" {task}, seeds "
    pt = next((j for label, j in jobs.items() if label.startswith(f"PT{suffix}")), None)
    if pt is None:
        raise PromptinitError(f"{study / 'final'}: no PT job of task {task!r} (--task)")
    out = []
    for arm in arms:
        for u in seeds:
            label = next((x for x in jobs if x.startswith(f"{arm} (upstream seed {u}){suffix}")), None)
            if label is None:
                raise PromptinitError(f"{study / 'final'}: no target job '{arm} (upstream seed {u}) {task}' (--arms)")
            out.append((arm, u, jobs[label]))
    return pt, out


def pt_scores(study: Path, task: str) -> dict[int, float]:
    """PT's committed test score per few-shot seed of ``task`` (``target_scores.csv``)."""
    import csv

    with open(study / "target_scores.csv") as f:
        return {int(r["seed"]): float(r["pt"]) for r in csv.DictReader(f) if r["task"] == task}


def fresh_cache() -> Path:
    """A cache folder whose assets (models, BIG-bench) link to the warm cache, nothing computed."""
    from promptinit.paths import CACHE_ENV, cache_dir

    warm = cache_dir()
    fresh = Path(tempfile.mkdtemp(prefix="study-cost-"))
    for name in ("models", "bigbench", "sha256"):
        if (warm / name).exists():
            (fresh / name).symlink_to(warm / name)
    os.environ[CACHE_ENV] = str(fresh)
    return fresh


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", type=Path, default=STUDY)
    p.add_argument("--task", default="bbc_topic")
    p.add_argument("--arms", nargs="+", default=list(ARMS), help="preset arms whose downstream start is a prompt")
    p.add_argument("--upstream-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    import torch

    from promptinit.search.phases.arms import checkpoint_prompt
    from promptinit.tasks.catalog import load_task
    from promptinit.trainables.scoring import score_problems

    torch.set_num_threads(args.threads)
    pt, sample = committed(args.study, args.task, args.arms, args.upstream_seeds)
    fresh_cache()
    task = load_task(args.task)
    if task.fingerprint != pt["key"]["task"]:
        raise PromptinitError(f"task {args.task}: its content differs from the one the study tuned on")
    first = sample[0][2]["key"]  # the arms' settings (PT's curves job keys a subset of the same tuning)
    seeds, tuning, backbone = first["seeds"], first["tuning"], first["backbone"]
    if pt["key"]["seeds"] != seeds or any(tuning.get(k) != v for k, v in pt["key"]["tuning"].items()):
        raise PromptinitError(f"PT on {args.task}: tuned with other settings than the arms; not comparable")
    problems, owners = [], [("PT", pt)]
    problems += [({}, s) for s in seeds]
    for arm, u, job in sample:
        if job["key"]["tuning"] != tuning or job["key"]["seeds"] != seeds:
            raise PromptinitError(f"{arm} (upstream seed {u}): tuned with other settings than PT; not comparable")
        prompt = checkpoint_prompt(args.study / "upstream" / Path(job["key"]["checkpoint"]).name)
        problems += [({"init": prompt}, s) for s in seeds]
        owners.append((f"{arm} (upstream seed {u})", job))
    runs = len(problems) * len(tuning["lr"] if isinstance(tuning["lr"], list) else [tuning["lr"]])
    print(
        f"# {args.task}: {len(owners)} owners x {len(seeds)} seeds = {len(problems)} problems ({runs} lr runs) "
        f"as one batched run, {args.threads} thread(s)",
        flush=True,
    )
    t0, w0 = time.process_time(), time.perf_counter()
    scores = score_problems(backbone, task, tuning, problems)
    cpu, wall = time.process_time() - t0, time.perf_counter() - w0
    share = cpu / len(owners)
    lines = [
        "| owner | committed CPU s | new CPU s (share) | new / committed | largest score difference, points |",
        "|---|---|---|---|---|",
    ]
    total_old = 0.0
    for i, (label, job) in enumerate(owners):
        old = {int(s): v for _, s, v in job["value"]} if label != "PT" else pt_scores(args.study, args.task)
        new = scores[i * len(seeds) : (i + 1) * len(seeds)]
        diff = max(100 * abs(old[s] - v) for s, v in zip(seeds, new, strict=True))
        total_old += job["cpu_s"]
        lines.append(f"| {label} | {job['cpu_s']:.0f} | {share:.0f} | {share / job['cpu_s']:.2f}x | {diff:.1f} |")
    lines.append(f"| all {len(owners)} | {total_old:.0f} | {cpu:.0f} | {cpu / total_old:.2f}x | |")
    print("\n".join(lines))
    print(
        f"\none batched run: {cpu:.0f} CPU s, {wall:.0f} s wall; committed jobs: {total_old:.0f} CPU s "
        f"-> {cpu / total_old:.2f}x (target <= 0.4x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
