"""``promptinit tune``: tune a prompt on one task and print dev/test metrics."""

from __future__ import annotations

import argparse
import logging
import time

from promptinit.errors import PromptinitError, check_writable, flag_error

logger = logging.getLogger(__name__)

BACKBONE_FLAGS = {
    "prompt_length": "--prompt-length",
    "dtype": "--dtype",
    "device": "--device",
    "max_input_tokens": "--max-input-tokens",
}
TUNE_FLAGS = {
    "lr": "--lr",
    "optimizer": "--optimizer",
    "batch_size": "--batch-size",
    "steps": "--steps",
    "eval_every": "--eval-every",
    "test_size": "--test-size",
}


def add_backbone_args(p: argparse.ArgumentParser) -> None:
    """Flags shared by every command that loads a backbone."""
    p.add_argument(
        "--model",
        default="smollm2-135m",
        help="packaged name (smollm2-135m, gemma3-270m), tiny test model, .gguf file, folder or hub id",
    )
    p.add_argument("--prompt-length", type=int, default=20, help="soft-prompt vectors L (default %(default)s)")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float64"],
        help="auto (default): bfloat16 on a CPU with native bf16 (AVX512-BF16/AMX), else float32",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--max-input-tokens", type=int, default=256)


def add_tuning_args(p: argparse.ArgumentParser) -> None:
    """Flags of downstream prompt tuning (``TuneConfig``)."""
    p.add_argument(
        "--lr",
        type=float,
        nargs="+",
        default=0.3,
        metavar="LR",
        help="prompt learning rate (default 0.3); several, e.g. 0.5 0.4 0.3 0.2 (Qin et al.): tune "
        "with each and keep the run with the best dev score (a tie keeps the earlier)",
    )
    p.add_argument("--optimizer", default="adafactor", choices=["adafactor", "adam", "sgd"])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=3000, help="tuning steps (paper: 3000)")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--test-size", type=int, default=200, help="cap on the held-out test set")


def backbone_config(args: argparse.Namespace):
    """The backbone flags as a ``BackboneConfig``; a bad value names its option."""
    from promptinit.backbones import BackboneConfig

    check_device(args.device)
    try:
        return BackboneConfig(
            args.model,
            prompt_length=args.prompt_length,
            dtype=args.dtype,
            device=args.device,
            max_input_tokens=args.max_input_tokens,
        )
    except PromptinitError as err:
        raise flag_error(err, BACKBONE_FLAGS) from None


def check_device(device: str) -> None:
    """``--device`` names a device torch has here (``auto``, ``cpu``, ``cuda[:N]``, ``mps``)."""
    if device == "auto":
        return
    import torch

    try:
        d = torch.device(device)
    except (RuntimeError, ValueError):
        raise PromptinitError(f"option '--device': {device!r} is not a device; use auto, cpu or cuda[:N]") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise PromptinitError(f"option '--device': {device!r}, but torch sees no CUDA device here; use cpu or auto")
    if d.type == "cuda" and d.index is not None and d.index >= torch.cuda.device_count():
        raise PromptinitError(
            f"option '--device': {device!r}, but there are {torch.cuda.device_count()} CUDA "
            f"devices (cuda:0..cuda:{torch.cuda.device_count() - 1})"
        )
    if d.type == "mps" and not torch.backends.mps.is_available():
        raise PromptinitError(f"option '--device': {device!r}, but torch sees no MPS device here; use cpu or auto")
    if d.type not in ("cpu", "cuda", "mps"):
        raise PromptinitError(f"option '--device': {device!r} is not supported; use auto, cpu or cuda[:N]")


def model_info(args: argparse.Namespace):
    """The ``--model``'s shape from its config file (no weights): a bad model fails before any data is read."""
    from promptinit.export import ModelInfo

    try:
        return ModelInfo.from_name(args.model, args.prompt_length)
    except PromptinitError as err:
        raise PromptinitError(f"option '--model': {err}") from None


def lr_value(values: float | list[float]) -> float | list[float]:
    """An ``--lr`` (``nargs="+"``) as ``TuneConfig.lr``: one value as a float (so its results
    and cache keys are those of a single lr), several as the list to choose from on dev."""
    return values[0] if isinstance(values, list) and len(values) == 1 else values


def tune_config(args: argparse.Namespace):
    from promptinit.tuning import TuneConfig

    lr = lr_value(args.lr)
    try:
        return TuneConfig(
            lr=tuple(lr) if isinstance(lr, list) else lr,  # TuneConfig stores several as a tuple
            optimizer=args.optimizer,
            batch_size=args.batch_size,
            steps=args.steps,
            eval_every=args.eval_every,
            test_size=args.test_size,
        )
    except PromptinitError as err:
        raise flag_error(err, TUNE_FLAGS) from None


def register(sub) -> None:
    p = sub.add_parser("tune", help="tune a prompt on one task; print dev/test metrics")
    p.add_argument("--task", required=True, help="catalog task name (see `promptinit tasks`)")
    p.add_argument("--catalog", default=None, help="catalog YAML (default configs/tasks.yaml)")
    p.add_argument(
        "--init",
        default=None,
        help="initial prompt: an export folder (checked against the model) or a safetensors file; "
        "default: sampled vocabulary",
    )
    p.add_argument(
        "--psi",
        default=None,
        help="SUPMER's meta-gradient regulariser ψ (an export folder or psi.safetensors): applied to "
        "every prompt gradient during tuning",
    )
    p.add_argument("--init-text", default=None, help="initialise from the embeddings of this text")
    p.add_argument(
        "--init-labels",
        action="store_true",
        help="initialise from the task's class labels (Lester et al. 2021: a row per label, then vocabulary)",
    )
    p.add_argument("--seed", type=int, default=100, help="few-shot seed (paper: 100, 13, 21, 42, 87)")
    p.add_argument("--out", default=None, help="write the best prompt here (safetensors)")
    add_backbone_args(p)
    add_tuning_args(p)
    p.set_defaults(func=run)


def check_inputs(args: argparse.Namespace, info) -> None:
    """``--init``, ``--psi`` and ``--out`` against the model's config, before data or weights load."""
    from pathlib import Path

    given = [f"'--{name.replace('_', '-')}'" for name in ("init", "init_text", "init_labels") if getattr(args, name)]
    if len(given) > 1:
        raise PromptinitError(f"options {' and '.join(given)}: give one of them, not several")
    if args.out:
        check_writable(args.out, "option '--out'")
    if args.init:
        init = Path(args.init).expanduser()
        if init.is_dir():
            from promptinit.export import load_export

            load_export(init, info)  # names the file and the field that do not fit
        elif not init.is_file():
            raise PromptinitError(f"option '--init': {init}: no such export folder or prompt file")
        else:
            from promptinit.backbones import load_prompt

            load_prompt(init, expected_shape=(args.prompt_length, info.hidden_size))
    if args.psi:
        from promptinit.methods.mgr import load_regulariser

        psi = load_regulariser(args.psi, device="cpu")
        if psi.dim != info.hidden_size:
            raise PromptinitError(
                f"option '--psi': {args.psi}: ψ is for hidden size {psi.dim}, but {args.model} has "
                f"{info.hidden_size}; use the ψ exported with this model's prompt"
            )


def initial_prompt(backbone, args: argparse.Namespace, labels=None):
    """The starting prompt: an export folder (checked against the model), a file, text, the
    task's class labels or vocabulary."""
    from pathlib import Path

    if args.init and Path(args.init).expanduser().is_dir():
        from promptinit.export import load_export

        prompt = load_export(args.init, backbone).prompt
        return prompt.to(device=backbone.device, dtype=backbone.dtype)
    if args.init_labels:
        return backbone.init_prompt("labels", seed=args.seed, labels=labels)
    how = "file" if args.init else "text" if args.init_text else "vocab"
    return backbone.init_prompt(how, seed=args.seed, path=args.init, text=args.init_text)


def run(args: argparse.Namespace) -> int:
    from promptinit.backbones import Backbone, save_prompt
    from promptinit.evaluation import tune_prompt
    from promptinit.tasks.catalog import load_task

    # Every flag and input file is checked before any data or weights load.
    cfg = tune_config(args)
    bb_config = backbone_config(args)
    check_inputs(args, model_info(args))
    task = load_task(args.task, args.catalog)
    if args.init_labels and not task.labels:
        raise PromptinitError(
            f"option '--init-labels': task {task.name!r} has no class labels (only a classification "
            "task has); use --init-text or the default"
        )
    fewshot = cfg.few_shot(task, args.seed)
    t0 = time.perf_counter()
    backbone = Backbone(bb_config)
    load_s = time.perf_counter() - t0
    init = initial_prompt(backbone, args, task.labels)
    grad_transform = None
    if args.psi:
        from promptinit.methods.mgr import load_regulariser

        psi = load_regulariser(args.psi, device=backbone.device)
        if psi.dim != backbone.hidden_size:
            raise PromptinitError(
                f"{args.psi}: ψ is for hidden size {psi.dim}, but {args.model} has "
                f"{backbone.hidden_size}; use the ψ exported with this model's prompt"
            )
        grad_transform = psi.as_grad_transform()
        logger.info("ψ (rank %d) from %s transforms every prompt gradient", psi.V1.shape[0], args.psi)
    logger.info(
        "task %s (%s, %s): train %d, dev %d, test %d; model %s loaded in %.1f s",
        task.name,
        task.kind.value,
        task.metric.value,
        len(fewshot.train),
        len(fewshot.dev),
        len(fewshot.test),
        args.model,
        load_s,
    )
    from promptinit.evaluation import evaluate

    init_test = evaluate(backbone, init, fewshot.test, task.metric.value, cfg.eval_batch_size)
    res = tune_prompt(backbone, fewshot, init, cfg, grad_transform=grad_transform)
    print(f"{'':8}{'dev':>8}{'test':>8}")
    print(f"{'before':8}{100 * res.init_dev:8.1f}{100 * init_test:8.1f}")
    print(f"{'after':8}{100 * res.dev:8.1f}{100 * res.test:8.1f}   (best dev at step {res.best_step})")
    if res.lr_search:
        tried = ", ".join(f"{c['lr']:g}: {100 * c['dev']:.1f}" for c in res.lr_search)
        print(f"lr {res.lr:g} chosen on dev (best dev per lr: {tried})")
    if args.out:
        path = save_prompt(res.tuned_prompt, args.out, {"task": task.name, "model": args.model, "seed": str(args.seed)})
        logger.info("prompt written to %s", path)
    return 0
