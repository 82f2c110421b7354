"""Metric names, one place: the same constant goes to Tune, Optuna, ASHA and MLflow.

Names carry a slash (``val/arg``) so MLflow groups them; the trainable reports them as
top-level keys, which Tune keeps as they are.
"""
from __future__ import annotations

VAL_ARG = "val/arg"  # ARG on the partition's validation tasks vs the PT baseline: the search objective
VAL_ARG_STD = "val/arg_std"  # its std over validation seeds
VAL_SCORE = "val/score"  # mean validation test score after tuning from the current prompt
META_QUERY_LOSS = "meta/query_loss"  # the methods' outer (query) loss, averaged over a report
TRAIN_LOSS = "train/loss"  # MTL's training loss, averaged over a report
STEP = "upstream/step"  # upstream (outer) steps done
TOTAL_STEPS = "upstream/total_steps"  # the trial's planned steps; less at the end = stopped early
SECONDS_PER_STEP = "time/s_per_step"
VALIDATION_SECONDS = "time/val_s"  # wall seconds of this report's validation scoring
CPU_SECONDS = "time/cpu_s"  # CPU seconds of this report (steps + validation): cost without contention
NODE_ID = "node_id"  # Ray node the report came from

METRIC = VAL_ARG
MODE = "max"

TARGET_ARG = "target/arg"  # on the parent run: ARG on the target tasks, per method
