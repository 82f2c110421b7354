"""Turn a finished (or running) sweep into paper-style tables, plots, importances and exports.

- ``analysis.results``: load a sweep's trials from its Tune directory or from MLflow into one
  tidy ``pandas`` table, plus its target-task results (per-pair scores of each method and PT);
- ``analysis.tables``: each method against PT on the target tasks (difference, ARG,
  P(improvement) with bootstrap CIs; the one writer of ``arg_table.{md,csv}``), per-task gains,
  the search's validation objective, cost, the best validation objective so far against compute;
- ``analysis.plots``: difference bars with CI whiskers, hyperparameter sensitivity, learning
  curves, best-so-far curves (one line per sweep), importances, task-similarity heat map
  (matplotlib, PNG);
- ``analysis.importance``: Optuna parameter importances on a study rebuilt from the trials;
- ``analysis.report``: ``promptinit report`` (one folder with ``index.md``);
- ``analysis.export``: ``promptinit export`` (a method's best prompt as a PEFT folder);
- ``analysis.commands``: the two subcommands, joined to the CLI by entry points.

The public entry points below are what the rest of the project (``search/sweep.py``,
``search/study.py``) uses;
everything else is this package's own. They load on first use, so importing a submodule does
not import them all.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names for type checkers; at run time they load on first use (__getattr__)
    from promptinit.analysis.calibration import write_calibration as write_calibration
    from promptinit.analysis.export import export_best as export_best
    from promptinit.analysis.results import load_sweep as load_sweep
    from promptinit.analysis.results import preset_label as preset_label
    from promptinit.analysis.results import read_results as read_results
    from promptinit.analysis.tables import TargetTable as TargetTable
    from promptinit.analysis.tables import write_selection as write_selection
    from promptinit.analysis.tables import write_target_table as write_target_table

_PUBLIC = {
    # the ARG table of a sweep's target evaluation (md, csv, per-pair scores)
    "write_target_table": "promptinit.analysis.tables",
    # what it wrote: the table (long form), its Markdown, JSON-ready records
    "TargetTable": "promptinit.analysis.tables",
    # how each method's configuration was chosen (search vs re-scored)
    "write_selection": "promptinit.analysis.tables",
    # the sweep's end-of-run PEFT export of one method's best prompt
    "export_best": "promptinit.analysis.export",
    # a finished sweep's trials and target rows (the study reads its search arms)
    "load_sweep": "promptinit.analysis.results",
    # a study's label of a method's paper-preset arm (its table row)
    "preset_label": "promptinit.analysis.results",
    # one trial's reports (a resumed search rebuilds its kept trials from them)
    "read_results": "promptinit.analysis.results",
    # does the search objective predict the target? (search.calibrate: calibration.{md,csv})
    "write_calibration": "promptinit.analysis.calibration",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
