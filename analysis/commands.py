"""``promptinit report`` and ``promptinit export``: joined to the CLI through the entry-point
group ``promptinit.commands`` (they need Optuna, MLflow and pandas, which the core never imports).

    promptinit report runs/my-sweep [runs/other-partition ...] [--out DIR] [--task-prompts DIR]
                      [--equivalence-margin POINTS]
    promptinit export runs/my-sweep --method maml --out exports/maml
"""

from __future__ import annotations

import argparse
from pathlib import Path

from promptinit.errors import PromptinitError, check_writable
from promptinit.stats import DELTA


def register_report(subparsers) -> None:
    """Add ``report``."""
    p = subparsers.add_parser(
        "report",
        help="tables, plots and Optuna importances of sweeps, in one folder with index.md",
        description="Write ARG tables (method x partition), per-task gains, cost, sensitivity and learning-curve "
        "plots and Optuna importances of one or more sweeps into one folder with an index.md.",
    )
    p.add_argument(
        "sweeps",
        nargs="+",
        metavar="SWEEP_DIR",
        help="sweep directories (one per partition/setting), or a study's run folder (search/study.py)",
    )
    p.add_argument("--out", default=None, help="report folder (default: <first sweep>/report)")
    p.add_argument(
        "--from-mlflow",
        action="store_true",
        help="read the trials from the sweeps' MLflow runs instead of the Tune files",
    )
    p.add_argument(
        "--task-prompts",
        default=None,
        metavar="DIR",
        help="folder of tuned per-task prompts (<task>.safetensors, from `promptinit tune --out`) "
        "for the task-similarity heat map",
    )
    p.add_argument(
        "--similarity-rank", type=int, default=4, help="subspace rank k of the similarity scores (default 4)"
    )
    p.add_argument(
        "--equivalence-margin",
        type=float,
        default=100 * DELTA,
        metavar="POINTS",
        help="a difference whose 95 %% interval holds 0 and lies within this many points of it reads "
        "'equivalent to PT' (default %(default)g)",
    )
    p.add_argument("--no-mlflow", action="store_true", help="do not log the report to the sweeps' MLflow parent runs")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from promptinit.analysis.report import write_report
    from promptinit.analysis.results import is_study, load_study, load_sweep

    if args.similarity_rank < 1:
        raise PromptinitError(f"option '--similarity-rank': {args.similarity_rank} must be >= 1")
    if not 0 <= args.equivalence_margin < 100:
        raise PromptinitError(f"option '--equivalence-margin': {args.equivalence_margin} must be in [0, 100) points")
    # The flags and the output folder are checked before any sweep is read.
    out = Path(args.out) if args.out else Path(args.sweeps[0]) / "report"
    check_writable(out, "option '--out'", folder=True)
    prompts = None
    if args.task_prompts:
        from promptinit.similarity import load_task_prompts

        try:
            prompts = load_task_prompts(args.task_prompts)
        except PromptinitError as err:
            raise PromptinitError(f"option '--task-prompts': {err}") from None
    source = "mlflow" if args.from_mlflow else "tune"
    # a study's run folder (search/study.py) stands for the study and its search sweeps
    sweeps = [s for d in args.sweeps for s in (load_study(d, source) if is_study(d) else [load_sweep(d, source)])]
    report = write_report(
        sweeps,
        out,
        task_prompts=prompts,
        similarity_rank=args.similarity_rank,
        log_mlflow=not args.no_mlflow,
        delta=args.equivalence_margin / 100,
    )
    print(f"report: {report.folder / 'index.md'} ({len(report.files)} files)")
    for note in report.notes:
        print(f"  note: {note}")
    for where in report.logged_to:
        print(f"  logged to MLflow: {where} (artifacts report/)")
    return 0


def register_export(subparsers) -> None:
    """Add ``export``."""
    p = subparsers.add_parser(
        "export",
        help="export a method's best prompt of a sweep as a PEFT prompt-tuning folder",
        description="Write the best checkpoint (by the sweep's search objective on validation) of one method as "
        "adapter_model.safetensors + "
        "adapter_config.json (PEFT PROMPT_TUNING) + promptinit.json, and log it to the sweep's MLflow run.",
    )
    p.add_argument("sweep", metavar="SWEEP_DIR", help="the sweep directory")
    p.add_argument("--method", required=True, help="upstream method (maml, fomaml, reptile, mtl, supmer, metapt)")
    p.add_argument("--out", required=True, help="export folder (replaced if it exists)")
    p.add_argument("--trial", default=None, help="export this trial's best checkpoint instead of the method's best")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the export to the sweep's MLflow parent run")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from promptinit.analysis.export import export_method

    check_writable(args.out, "option '--out'", folder=True)  # before the sweep is read
    folder = export_method(args.sweep, args.method, args.out, trial_id=args.trial, log_mlflow=not args.no_mlflow)
    print(f"exported {args.method}: {folder}")
    print(f"  load with: PeftModel.from_pretrained(base_model, {str(folder)!r})")
    return 0
