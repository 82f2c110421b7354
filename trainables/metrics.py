"""Metric names, one place: the same constant goes to Tune, Optuna, ASHA and MLflow.

Names carry a slash (``val/arg``) so MLflow groups them; the trainable reports them as
top-level keys, which Tune keeps as they are.
"""

from __future__ import annotations

VAL_ARG = "val/arg"  # ARG on the partition's validation tasks vs the PT baseline (the objective with `arg`)
VAL_ARG_SE = "val/arg_se"  # its standard error over the validation (task, seed) pairs (NaN with one pair)
VAL_DELTA = "val/delta"  # the mean validation score difference to PT (fraction; the objective with `delta`)
VAL_DELTA_SE = "val/delta_se"  # its standard error, as VAL_ARG_SE's
# On the parent run, per method (``<name>/<method>``): the chosen trial's validation ARG on fresh
# few-shot seeds (the select phase, ``promptinit.search.phases.select``), and its standard error.
VAL_ARG_RESCORED = "val/arg_rescored"
VAL_ARG_RESCORED_SE = "val/arg_rescored_se"
VAL_SCORE = "val/score"  # mean validation test score after tuning from the current prompt
META_QUERY_LOSS = "meta/query_loss"  # the methods' outer (query) loss, averaged over a report
TRAIN_LOSS = "train/loss"  # MTL's training loss, averaged over a report
STEP = "upstream/step"  # upstream (outer) steps done
TOTAL_STEPS = "upstream/total_steps"  # the trial's planned steps; less at the end = stopped early
SECONDS_PER_STEP = "time/s_per_step"
VALIDATION_SECONDS = "time/val_s"  # wall seconds of this report's validation scoring
CPU_SECONDS = "time/cpu_s"  # CPU seconds of this report (steps + validation): cost without contention
NODE_ID = "node_id"  # Ray node the report came from
# A report replayed from a sibling sweep's trial with the same identity (``trainables.replay``): that
# trial (``<sweep folder>/<trial folder>``), and, on every report from the first replayed one on,
# its trial-seconds up to the last replayed report (the analysis adds them to ``time_total_s``).
REPLAY_OF = "replay/of"
REPLAYED_SECONDS = "replay/trial_s"

# The search objective (``search.objective``): the reported metric Optuna, ASHA and the checkpoint
# ranking maximise, and its standard error. Every trial reports both objectives. (Tables name them
# with ``analysis.tables.OBJECTIVE_WORDS``.)
OBJECTIVES: dict[str, tuple[str, str]] = {
    "delta": (VAL_DELTA, VAL_DELTA_SE),
    "arg": (VAL_ARG, VAL_ARG_SE),
}
MODE = "max"

# On the parent run, per method (``<name>/<method>``), from ``promptinit.stats.compare`` of the
# method's best prompt against PT on the target tasks; ``<name>_lo`` / ``<name>_hi`` are the
# bounds of the 95 % interval (``target/diff_lo/maml``).
TARGET_DIFF = "target/diff"  # mean test-score difference method - PT (fraction; the headline)
TARGET_ARG = "target/arg"  # ARG on the target tasks
TARGET_P_IMPROVE = "target/p_improve"  # P(method > PT) over (task, seed) pairs
TARGET_P_VALUE = "target/p_value"  # two-sided Wilcoxon signed-rank p of the pair differences
