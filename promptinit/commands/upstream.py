"""``promptinit upstream``: learn a prompt initialisation on a partition's source tasks, save
it, and report its ARG on the partition's target tasks against the cached PT baseline."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

from promptinit.commands.tune import add_backbone_args, backbone_config, lr_value, model_info
from promptinit.errors import PromptinitError, check_writable, flag_error

logger = logging.getLogger(__name__)

TUNE_FLAGS = {
    "lr": "--tune-lr",
    "optimizer": "--tune-optimizer",
    "batch_size": "--tune-batch-size",
    "steps": "--tune-steps",
    "eval_every": "--eval-every",
    "test_size": "--test-size",
}


def register(sub) -> None:
    p = sub.add_parser(
        "upstream",
        help="meta-learn a prompt init on a partition's source tasks; report ARG on its targets",
        description=__doc__.splitlines()[0] + " " + " ".join(__doc__.splitlines()[1:]),
    )
    p.add_argument("--method", required=True, help="pt, mtl, maml, fomaml, reptile, supmer or metapt")
    p.add_argument("--partition", required=True, help="partition name (configs/partitions) or YAML path")
    p.add_argument("--steps", type=int, default=None, help="outer steps (default: the method's `steps` setting)")
    p.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="method setting, repeatable (e.g. --set inner_lr=5e-5 --set meta_batch_size=2)",
    )
    p.add_argument("--seed", type=int, default=0, help="method seed: initial prompt and meta-batches (default 0)")
    p.add_argument("--out", default=None, help="output folder (default runs/upstream/METHOD-PARTITION-MODEL)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint if it exists")
    p.add_argument("--checkpoint-every", type=int, default=0, help="also checkpoint every N steps (0: only at the end)")
    p.add_argument("--no-eval", action="store_true", help="skip the downstream evaluation on the target tasks")
    p.add_argument("--no-progress", action="store_true")
    add_backbone_args(p)
    g = p.add_argument_group("downstream prompt tuning on the targets (method and PT baseline alike)")
    g.add_argument("--seeds", type=int, nargs="+", default=None, help="few-shot seeds (default 100 13 21 42 87)")
    g.add_argument("--tune-steps", type=int, default=3000, help="tuning steps per task and seed (paper: 3000)")
    g.add_argument(
        "--tune-lr",
        type=float,
        nargs="+",
        default=0.3,
        metavar="LR",
        help="prompt learning rate (default 0.3); several, e.g. 0.5 0.4 0.3 0.2 (Qin et al.): tune "
        "with each and keep the run with the best dev score (a tie keeps the earlier)",
    )
    g.add_argument("--tune-optimizer", default="adafactor", choices=["adafactor", "adam", "sgd"])
    g.add_argument("--tune-batch-size", type=int, default=8)
    g.add_argument("--eval-every", type=int, default=50)
    g.add_argument("--test-size", type=int, default=200, help="cap on each target's held-out test set")
    p.set_defaults(func=run)


# --------------------------------------------------------------------------- settings


def _coerce(config_cls: type, key: str, text: str) -> Any:
    """Parse ``text`` as the type of ``config_cls``'s field ``key`` (its default's type)."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    if key not in fields:
        raise PromptinitError(f"--set {key}=...: unknown setting; known: {', '.join(sorted(fields))}")
    default = fields[key].default
    if text.strip().lower() in ("none", "null") and "None" in str(fields[key].type):
        return None
    try:
        if isinstance(default, bool):
            low = text.strip().lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return low in ("true", "1", "yes")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, tuple):  # comma- or space-separated, elements of the default's type
            item = type(default[0]) if default else str
            return tuple(item(v) for v in text.replace(",", " ").split())
    except ValueError:
        kind = "true/false" if isinstance(default, bool) else type(default).__name__
        raise PromptinitError(f"--set {key}={text}: not a {kind} (default {default!r})") from None
    return text


def parse_settings(method: str, pairs: list[str]) -> dict[str, Any]:
    """``["inner_lr=5e-5", "task_batched=false"]`` -> typed settings of ``method``'s config."""
    from promptinit.methods import REGISTRY

    if method not in REGISTRY:
        raise PromptinitError(f"option '--method': {method!r} is unknown; known methods: {', '.join(sorted(REGISTRY))}")
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise PromptinitError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set inner_lr=5e-5")
        out[key.strip()] = _coerce(REGISTRY[method].config_cls, key.strip(), value.strip())
    return out


# --------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    from promptinit.backbones import Backbone, save_prompt
    from promptinit.evaluation import evaluate_init
    from promptinit.methods import build_method, make_config, save_checkpoint
    from promptinit.methods.common import config_dict
    from promptinit.progress import progress_bar
    from promptinit.stats import compare
    from promptinit.tasks.fewshot import SEEDS
    from promptinit.tasks.partitions import load_partition
    from promptinit.tuning import TuneConfig

    # Everything that can be wrong with the command line or the files it names fails before any
    # data or model weights load, and before anything is written.
    settings = parse_settings(args.method, args.settings)
    if args.steps is not None:
        settings["steps"] = args.steps
    try:
        config = make_config(args.method, settings)
    except PromptinitError as err:
        raise flag_error(err, {"steps": "--steps", **{k: f"--set {k}" for k in settings if k != "steps"}}) from None
    tune_lr = lr_value(args.tune_lr)
    try:
        tune_cfg = TuneConfig(
            lr=tuple(tune_lr) if isinstance(tune_lr, list) else tune_lr,  # TuneConfig stores several as a tuple
            optimizer=args.tune_optimizer,
            batch_size=args.tune_batch_size,
            steps=args.tune_steps,
            eval_every=args.eval_every,
            test_size=args.test_size,
        )
    except PromptinitError as err:
        raise flag_error(err, TUNE_FLAGS) from None
    if args.checkpoint_every < 0:
        raise PromptinitError(f"option '--checkpoint-every': {args.checkpoint_every} must be >= 0 (0: only at the end)")
    seeds = tuple(args.seeds or SEEDS)
    bb_config = backbone_config(args)
    model_info(args)
    try:
        partition = load_partition(args.partition)
    except PromptinitError as err:
        raise PromptinitError(f"option '--partition': {err}") from None
    out = check_writable(
        args.out or f"runs/upstream/{args.method}-{partition.name}-{Path(args.model).name}",
        "option '--out'",
        folder=True,
    )
    ckpt = out / "checkpoint"
    state = _resume_state(ckpt, args.method, config) if args.resume else None

    t0 = time.perf_counter()
    sources = partition.load("source")
    backbone = Backbone(bb_config)
    extra = {}
    if args.method == "metapt":  # its pre-training pool must not hold the partition's held-out tasks
        extra["heldout_tasks"] = [*partition.load("target"), *partition.load("validation")]
    method = build_method(args.method, backbone, sources, dataclasses.asdict(config), seed=args.seed, **extra)
    if state is not None:
        try:
            method.load_state_dict(state)
        except PromptinitError as err:
            raise PromptinitError(f"{ckpt / 'state.json'}: {err}") from None
        logger.info("resumed from %s at step %d", ckpt, method.state.step)
    logger.info(
        "%s on %s: %d source tasks of partition %r (%s); %d steps; setup %.1f s",
        args.method,
        args.model,
        len(sources),
        partition.name,
        ", ".join(partition.source),
        method.config.steps,
        time.perf_counter() - t0,
    )

    history: list[dict[str, float]] = []
    t_up = time.perf_counter()
    bar = progress_bar(
        range(method.state.step, method.config.steps),
        desc=f"upstream {args.method}",
        disable=args.no_progress,
        initial=method.state.step,
        total=method.config.steps,
    )
    for _ in bar:
        if getattr(method, "stopped", False):  # MetaPT's early stopping
            bar.close()
            logger.info(
                "stopped early at step %d: %d held-out evaluations without improvement; the best one's prompt is kept",
                method.state.step,
                method.config.patience,
            )
            break
        metrics = method.step()
        history.append({"step": method.state.step, **metrics})
        if metrics:
            bar.set_postfix({k.split("/")[-1]: f"{v:.3f}" for k, v in metrics.items() if "norm" not in k})
        if args.checkpoint_every and method.state.step % args.checkpoint_every == 0:
            save_checkpoint(method, ckpt)
    upstream_s = time.perf_counter() - t_up
    save_checkpoint(method, ckpt)
    meta = {
        "method": args.method,
        "model": args.model,
        "partition": partition.name,
        "seed": str(args.seed),
        "steps": str(method.state.step),
    }
    prompt_path = save_prompt(method.prompt, out / "prompt.safetensors", meta)
    logger.info("%d steps in %.1f s; prompt written to %s", method.state.step, upstream_s, prompt_path)
    psi = getattr(method, "psi", None)
    if psi is not None:  # SUPMER's ψ, for `promptinit tune --psi`
        from promptinit.methods.mgr import save_regulariser

        logger.info("ψ written to %s", save_regulariser(psi, out / "psi.safetensors", meta))
    grad_transform = getattr(method, "grad_transform", None)

    report: dict[str, Any] = {
        **meta,
        "steps": method.state.step,
        "config": config_dict(method.config),
        "upstream_s": upstream_s,
        "history": history[-100:],
        "partition_fingerprint": partition.fingerprint,
        "downstream_psi": grad_transform is not None,
    }
    if not args.no_eval:
        targets = partition.load("target")
        t_eval = time.perf_counter()
        arg, results, baseline = evaluate_init(
            backbone,
            method.prompt,
            targets,
            seeds,
            tune_cfg,
            grad_transform=grad_transform,
            progress=not args.no_progress,
        )
        comparison = compare({k: r.test for k, r in results.items()}, {k: r.test for k, r in baseline.items()})
        _print_table(args.method, targets, seeds, results, baseline, arg, comparison)
        report.update(
            {
                "tune": dataclasses.asdict(tune_cfg),
                "seeds": list(seeds),
                "eval_s": time.perf_counter() - t_eval,
                "arg": {"mean": arg.mean, "per_seed": arg.per_seed, "per_task": arg.per_task},
                "comparison": comparison.to_dict(),
                "results": [r.summary() for r in results.values()],
                "baseline": [r.summary() for r in baseline.values()],
            }
        )
    (out / "upstream.json").write_text(json.dumps(report, indent=1, default=str))
    return 0


def _resume_state(ckpt: Path, method: str, config) -> dict[str, Any] | None:
    """The checkpoint ``--resume`` continues from (None: there is none yet), read and checked
    against ``--method`` and its settings before anything loads."""
    from promptinit.methods.checkpoint import STATE, read_checkpoint
    from promptinit.methods.common import RESUMABLE, config_dict

    if not ckpt.is_dir() or not any(ckpt.iterdir()):
        return None
    if not (ckpt / STATE).is_file():
        raise PromptinitError(
            f"{ckpt}: field '{STATE}': missing (an interrupted first save?); "
            "delete the folder to start afresh, or drop --resume"
        )
    state = read_checkpoint(ckpt)
    where = ckpt / STATE
    if not isinstance(state, dict):
        raise PromptinitError(f"{where}: field 'state': not a method checkpoint; delete the folder to start afresh")
    if state.get("method") != method:
        raise PromptinitError(
            f"{where}: field 'method': this checkpoint is of {state.get('method')!r}, not {method!r}; "
            f"resume with --method {state.get('method')} or choose another --out"
        )
    mine, theirs = config_dict(config), dict(state.get("config") or {})
    differ = sorted(k for k in (set(mine) | set(theirs)) - RESUMABLE if mine.get(k) != theirs.get(k))
    if differ:
        k = differ[0]
        raise PromptinitError(
            f"{where}: field 'config.{k}': {theirs.get(k)!r} there, {mine.get(k)!r} here; "
            f"resume with the checkpoint's settings (--set {k}=...)"
        )
    return state


def _print_table(method: str, targets, seeds, results, baseline, arg, comparison) -> None:
    """Per target task: mean test score of PT and of the method over seeds, and the RG; then
    the comparison with PT and its 95 % intervals (``promptinit.stats``)."""
    import numpy as np

    from promptinit.stats import describe

    width = max(len(t.name) for t in targets)
    print(f"\n{'target task':<{width}}  {'metric':<10}{'PT':>8}{method:>10}{'RG':>9}")
    for t in targets:
        pt = np.mean([baseline[(t.name, s)].test for s in seeds])
        ours = np.mean([results[(t.name, s)].test for s in seeds])
        print(
            f"{t.name:<{width}}  {t.metric.value:<10}{100 * pt:8.1f}{100 * ours:10.1f}"
            f"{100 * arg.per_task[t.name]:+8.1f}%"
        )
    print(f"{method} vs PT, mean [95 % CI]: {describe(comparison)}")
