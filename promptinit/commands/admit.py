"""``promptinit admit``: choose a partition's validation tasks and extra targets from candidates by PT's dev scores.

Runs plain prompt tuning on every ``validation_candidates`` and ``target_candidates`` task and
few-shot seed at the validation budget (one batched run; results land in the PT-baseline cache a
search reuses), prints each candidate's PT dev accuracy against its dev majority-class rate, and
rewrites the partition file with the admitted validation candidates as ``validation``, the
admitted target candidates appended to the hand-listed ``target``, and the numbers under
``admission`` and ``target_admission`` (``promptinit.admission``). The defaults are the CPU
study's validation budget and backbone (prompt length 8, inputs cut to 64 tokens, lr 0.3, 20
steps, batch 4).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import time

from promptinit.commands.tune import (
    add_backbone_args,
    add_tuning_args,
    backbone_config,
    lr_value,
    model_info,
    tune_config,
)
from promptinit.errors import PromptinitError

logger = logging.getLogger(__name__)


def register(sub) -> None:
    from promptinit.admission import SEEDS  # plain values: no torch import when the parser is built
    from promptinit.admission import VALIDATION_TUNING as BUDGET

    p = sub.add_parser(
        "admit",
        help="choose a partition's validation tasks from its validation_candidates, and add target_candidates to "
        "its targets (PT must learn on them)",
    )
    p.add_argument("--partition", required=True, help="partition name in configs/partitions, or a YAML path")
    p.add_argument("--catalog", default=None, help="catalog YAML (default configs/tasks.yaml)")
    p.add_argument(
        "--seeds", type=int, nargs="+", default=list(SEEDS), help="few-shot seeds averaged over (default 100 13 21)"
    )
    p.add_argument("--margin", type=float, default=10.0, help="points PT must gain over the majority rate (10)")
    p.add_argument("--ceiling", type=float, default=90.0, help="highest PT dev accuracy admitted, in %% (90)")
    p.add_argument(
        "--min-admitted",
        type=int,
        default=1,
        help="fail, writing nothing, if fewer validation candidates are admitted (1)",
    )
    p.add_argument("--rows-per-pass", type=int, default=BUDGET["rows_per_pass"], help="rows per pass (32)")
    p.add_argument("--dry-run", action="store_true", help="print the verdicts, leave the partition file alone")
    add_backbone_args(p)
    add_tuning_args(p)
    p.set_defaults(  # the CPU study's validation budget and backbone (configs/study/cpu.yaml)
        func=run,
        prompt_length=8,
        max_input_tokens=64,
        **{k: BUDGET[k] for k in ("lr", "batch_size", "steps", "eval_every", "test_size")},
    )


def run(args: argparse.Namespace) -> int:
    from promptinit.admission import AdmissionRule, admit, admitted_partition, check_candidate, write_admitted
    from promptinit.backbones import Backbone
    from promptinit.tasks.catalog import display_path, load_catalog, load_task
    from promptinit.tasks.partitions import CANDIDATES, TARGET_CANDIDATES, load_partition, partition_path

    # Every flag and name is checked before any data or weights load.
    if isinstance(lr_value(args.lr), list):
        raise PromptinitError(f"option '--lr': {args.lr}; the rule scores PT at one learning rate")
    if len(set(args.seeds)) != len(args.seeds):
        raise PromptinitError(f"option '--seeds': {args.seeds} repeats a seed")
    if args.min_admitted < 1:
        raise PromptinitError(f"option '--min-admitted': {args.min_admitted} must be >= 1 (validation needs a task)")
    if args.rows_per_pass < 0:
        raise PromptinitError(f"option '--rows-per-pass': {args.rows_per_pass} must be >= 0 (0: measured)")
    if not 0 <= args.margin < 100:
        raise PromptinitError(f"option '--margin': {args.margin} must be >= 0 and < 100 (points of accuracy)")
    if not 0 < args.ceiling <= 100:
        raise PromptinitError(f"option '--ceiling': {args.ceiling} must be > 0 and <= 100 (percent)")
    rule = AdmissionRule(margin=args.margin / 100, ceiling=args.ceiling / 100)
    config = dataclasses.replace(tune_config(args), rows_per_pass=args.rows_per_pass)
    bb_config = backbone_config(args)
    model_info(args)  # a bad --model fails before any data or weights load
    specs = load_catalog(args.catalog)
    path = partition_path(args.partition)
    where = display_path(path)
    partition = load_partition(path, specs, pending_ok=True, readmit=True)  # admits anew
    if not partition.validation_candidates and not partition.target_candidates:
        raise PromptinitError(
            f"{where}: fields {CANDIDATES!r} and {TARGET_CANDIDATES!r}: missing; list the tasks the rule should "
            "choose from"
        )
    tasks = []
    for field in (CANDIDATES, TARGET_CANDIDATES):
        for name in getattr(partition, field):
            tasks.append(load_task(name, specs))
            try:
                check_candidate(tasks[-1])
            except PromptinitError as err:
                raise PromptinitError(f"{where}: field {field!r}: {err}") from None

    t0 = time.perf_counter()
    backbone = Backbone(bb_config)
    verdicts = admit(backbone, tasks, args.seeds, config, rule)
    logger.info("PT on %d candidates x %d seeds in %.0f s", len(tasks), len(args.seeds), time.perf_counter() - t0)
    width = max(len(v.task) for v in verdicts)
    print(f"{'':9}{'for':<11}{'task':<{width}}  {'PT dev':>7}  {'majority':>8}")
    for v in verdicts:
        verdict = "admitted" if v.admitted else "refused"
        use = "target" if v.task in partition.target_candidates else "validation"
        line = f"{verdict:9}{use:<11}{v.task:<{width}}  {100 * v.pt_dev:7.1f}  {100 * v.majority:8.1f}"
        print(line + (f"  {v.reason}" if v.reason else ""))
    n_admitted = sum(v.admitted for v in verdicts if v.task in partition.validation_candidates)
    if partition.validation_candidates and n_admitted < args.min_admitted:
        raise PromptinitError(
            f"{where}: {n_admitted} of {len(partition.validation_candidates)} {CANDIDATES} admitted, fewer than "
            "--min-admitted "
            f"{args.min_admitted}; the file is unchanged: add candidates PT learns on"
        )
    if (
        partition.target_candidates
        and not partition.fixed_targets
        and not any(v.admitted for v in verdicts if v.task in partition.target_candidates)
    ):
        raise PromptinitError(
            f"{where}: 0 of {len(partition.target_candidates)} {TARGET_CANDIDATES} admitted and 'target' lists none "
            "by hand; the file is unchanged: add candidates PT learns on"
        )
    if args.dry_run:
        return 0
    backbone_fields = {
        "prompt_length": backbone.config.prompt_length,
        "dtype": backbone.config.dtype,
        "max_input_tokens": backbone.config.max_input_tokens,
    }
    new = admitted_partition(
        partition, verdicts, rule, model=args.model, backbone=backbone_fields, seeds=args.seeds, config=config
    )
    write_admitted(path, new, verdicts, date=datetime.date.today().isoformat())
    logger.info("%s: validation %s; target %s", where, ", ".join(new.validation), ", ".join(new.target))
    return 0
