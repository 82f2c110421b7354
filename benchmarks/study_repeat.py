"""Does a study repeat? Runs a study's config again from an empty folder and compares every job
the repeat finished with the same job of the first run.

The CPU study (issue 12) must show that its command reproduces its table: a second run's numbers
equal the first's, or we say which setting made them differ and by how much. A whole second run
of ``configs/study/cpu.yaml`` costs as much as the first (about 18 h on 2 CPU cores), so this
repeats it for ``--minutes`` (the study's phases run in order: PT's curves, the PT baselines,
the presets' upstream runs, their target jobs, ...) and compares what finished: every job's
result (scores per (task, seed), dev curves per (task, seed, lr, step), the upstream prompt
tensors) against the first run's job of the same phase and label. The repeat runs under the
name ``<name>-repeat`` in the same storage; ``--resume``-style, a second call continues it.
Jobs whose first run has not finished yet are listed as not comparable.

The repeat starts from a warm *asset* cache only: it runs with ``$PROMPTINIT_CACHE`` set to
``<repeat>/cache``, where the downloaded assets (``models``, ``bigbench``) are links to the
warm cache and everything promptinit computes and caches (PT's baseline scores, MetaPT's
embeddings and clusters, throughput) starts empty. Otherwise PT's test scores would come back
from the first run's baseline cache, and the repeat would not have repeated them.

A slice (``--tasks``, ``--presets``, ``--upstream-seeds``) repeats only part of the study, so a
short run reaches the later phases: the named target tasks, preset arms and upstream seeds, no
PT-labels arm and no searches, under the name ``<name>-repeat-<slice>``. Its jobs have the same
keys as the first run's (a job's key holds its task, seeds, tuning, method and upstream seed, not
the rest of the study), so they are compared the same way. The slice's PT curves cover only its
tasks; where they choose another step count than the first run did, its target jobs differ in
their tuning and are reported as not identical (an infinite difference), never silently skipped.

Usage:
    python benchmarks/study_repeat.py --config configs/study/cpu.yaml --minutes 40
    python benchmarks/study_repeat.py --config configs/study/cpu.yaml --minutes 0   # compare only
    python benchmarks/study_repeat.py --config configs/study/cpu.yaml --minutes 40 \
        --tasks bbc_topic --presets mtl --upstream-seeds 0                             # a slice
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

from promptinit.errors import PromptinitError, read_json
from promptinit.search.phases import study_config as study
from promptinit.search.phases.prepare import FINAL_DIR
from promptinit.search.phases.jobs import scores_of


def jobs(folder: Path) -> dict[tuple[str, str], dict]:
    """A study's finished jobs by (phase, label): its ``final/<phase>-<digest>.json`` files."""
    out = {}
    for path in sorted((folder / FINAL_DIR).glob("*.json")):
        job = read_json(path)
        out[(path.stem.rsplit("-", 1)[0], job["label"])] = job
    return out


def _prompt(path: str):
    from promptinit.backbones import load_prompt
    from promptinit.trainables.scoring import PROMPT_FILE

    return load_prompt(Path(path) / PROMPT_FILE).float()


def difference(first, second) -> float:
    """The largest absolute difference between two results of one job: score points (x 100) for
    scores and dev curves, the prompt's largest element difference for an upstream checkpoint."""
    if isinstance(first, str):  # an upstream checkpoint folder
        return float((_prompt(first) - _prompt(second)).abs().max())
    if first and isinstance(first[0], dict):  # curve records
        a = {(r["task"], r["seed"], r["lr"], r["step"]): r["best_dev"] for r in first}
        b = {(r["task"], r["seed"], r["lr"], r["step"]): r["best_dev"] for r in second}
    else:  # [task, seed, score] rows
        a, b = scores_of(first), scores_of(second)
    if a.keys() != b.keys():
        return math.inf
    return max((100 * abs(a[k] - b[k]) for k in a), default=0.0)


def compare(first: Path, second: Path) -> tuple[list[dict], list[str]]:
    """Per phase: jobs compared, how many are identical, the largest difference; and the labels
    the repeat finished that the first run has not."""
    a, b = jobs(first), jobs(second)
    rows: dict[str, dict] = {}
    missing = []
    for (phase, label), job in b.items():
        if (phase, label) not in a:
            missing.append(f"{phase}: {label}")
            continue
        key_a = {k: v for k, v in a[(phase, label)]["key"].items() if k != "checkpoint"}  # paths differ by folder
        key_b = {k: v for k, v in job["key"].items() if k != "checkpoint"}
        d = difference(a[(phase, label)]["value"], job["value"]) if key_a == key_b else math.inf
        row = rows.setdefault(phase, {"phase": phase, "jobs": 0, "identical": 0, "max_diff": 0.0, "cpu_s": 0.0})
        row["jobs"] += 1
        row["identical"] += d == 0
        row["max_diff"] = max(row["max_diff"], d)
        row["cpu_s"] += float(job.get("cpu_s", 0.0))
    return list(rows.values()), missing


def table(rows: list[dict]) -> str:
    lines = ["| phase | jobs repeated | identical | largest difference | CPU s (repeat) |", "|---|---|---|---|---|"]
    for r in rows:
        unit = "" if r["phase"] == "upstream" else " points"
        lines.append(f"| {r['phase']} | {r['jobs']} | {r['identical']} | {r['max_diff']:.3g}{unit} | {r['cpu_s']:.0f} |")
    return "\n".join(lines)


def repeat_config(config: Path, out: Path, tasks: list[str] | None = None, presets: list[str] | None = None,
                  upstream_seeds: list[int] | None = None) -> tuple[Path, str]:
    """The config under the name ``<name>-repeat`` (partition and catalog paths made absolute),
    or, for a slice, cut to those target tasks, preset arms and upstream seeds (no PT-labels arm,
    no searches) under ``<name>-repeat-<slice>``."""
    raw = yaml.safe_load(config.read_text())
    for key in ("partition", "catalog"):
        if raw.get(key) and not Path(raw[key]).is_absolute():
            raw[key] = str((config.parent / raw[key]).resolve())
    name = f"{raw['name']}-repeat"
    if tasks or presets or upstream_seeds:
        unknown = sorted(set(presets or ()) - set(raw["study"].get("presets", {})))
        if unknown:
            raise PromptinitError(f"{config}: field 'study.presets' has no arm {unknown[0]!r} (--presets)")
        raw["target"].update({k: v for k, v in (("tasks", tasks), ("upstream_seeds", upstream_seeds)) if v})
        if presets:
            raw["study"]["presets"] = {a: p for a, p in raw["study"]["presets"].items() if a in presets}
        raw["study"].update(labels=False, algorithms=[])
        name += "-" + "-".join([*(presets or ()), *(tasks or ()), *(f"u{u}" for u in upstream_seeds or ())])
    raw["name"] = name
    path = out / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path, raw["name"]


ASSETS = ("models", "bigbench")  # downloaded, not computed: the repeat shares them (promptinit.assets)


def repeat_cache(folder: Path) -> Path:
    """``<folder>/cache``: the warm cache's assets linked in, no computed results."""
    from promptinit.paths import cache_dir

    cache = folder / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    for name in ASSETS:
        if not (cache / name).exists():
            (cache / name).symlink_to(cache_dir(name), target_is_directory=True)
    return cache


def run_for(config: Path, minutes: float, resume: bool, cache: Path) -> None:
    """``search/study.py`` on ``config`` for at most ``minutes`` (its process group then
    stopped), with ``cache`` as its ``$PROMPTINIT_CACHE``."""
    from promptinit.paths import CACHE_ENV

    cmd = [sys.executable, str(ROOT / "search" / "study.py"), "--config", str(config), *(["--resume"] if resume else [])]
    proc = subprocess.Popen(cmd, start_new_session=True, env={**os.environ, CACHE_ENV: str(cache)})
    try:
        proc.wait(timeout=minutes * 60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        print(f"study_repeat: stopped the repeat after {minutes:g} min", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=study.STUDY_DIR / "cpu.yaml")
    p.add_argument("--minutes", type=float, default=40.0, help="how long the repeat runs (0: compare only)")
    p.add_argument("--tasks", nargs="+", help="a slice: only these target tasks")
    p.add_argument("--presets", nargs="+", help="a slice: only these preset arms")
    p.add_argument("--upstream-seeds", nargs="+", type=int, help="a slice: only these upstream seeds")
    args = p.parse_args(argv)
    try:
        cfg = study.load_study_config(args.config)
    except PromptinitError as err:
        print(f"study_repeat: error: {err}", file=sys.stderr)
        return 2
    first = cfg.sweep_dir
    if not (first / study.META_FILE).is_file():
        print(f"study_repeat: error: {first}: the study of {args.config} has not run; run it first", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        try:
            config, name = repeat_config(args.config, Path(tmp), args.tasks, args.presets, args.upstream_seeds)
        except PromptinitError as err:
            print(f"study_repeat: error: {err}", file=sys.stderr)
            return 2
        second = first.with_name(name)
        if args.minutes > 0:
            run_for(config, args.minutes, resume=(second / study.META_FILE).is_file(), cache=repeat_cache(second))
    if not (second / FINAL_DIR).is_dir():
        print(f"study_repeat: error: {second}: no repeat has run; pass --minutes", file=sys.stderr)
        return 2
    rows, missing = compare(first, second)
    print(f"\n{first} (first run) vs {second} (repeat):\n\n{table(rows)}")
    if missing:
        print(f"\nnot comparable yet (the first run has not finished them): {'; '.join(missing)}")
    (second / "repeat.json").write_text(json.dumps({"first": str(first), "rows": rows, "missing": missing}, indent=1,
                                                   default=str))
    return 0 if all(r["identical"] == r["jobs"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
