"""Turn a finished (or running) sweep into paper-style tables, plots, importances and exports.

- ``analysis.results``: load a sweep's trials from its Tune directory or from MLflow into one
  tidy ``pandas`` table, plus its target-task results;
- ``analysis.tables``: ARG per method x partition (Qin et al. Table 2), per-task gains, cost;
- ``analysis.plots``: ARG bars, hyperparameter sensitivity, learning curves, importances,
  task-similarity heat map (matplotlib, PNG);
- ``analysis.importance``: Optuna parameter importances on a study rebuilt from the trials;
- ``analysis.report``: ``promptinit report`` (one folder with ``index.md``);
- ``analysis.export``: ``promptinit export`` (a method's best prompt as a PEFT folder);
- ``analysis.commands``: the two subcommands, joined to the CLI by entry points.
"""
