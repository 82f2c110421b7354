"""Optuna parameter importances per method, on a study rebuilt from the sweep's trials.

The sweep's own Optuna study lives inside Tune's searcher state (pickled, and one study for all
methods), so it is rebuilt here: one in-memory study per method, one ``FrozenTrial`` per
scored trial with its settings and its best validation objective, and distributions inferred from
the values seen. Settings that never varied carry no information and are left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

MIN_TRIALS = 2  # Optuna's evaluators need at least two completed trials
LOG_RATIO = 100.0  # positive numeric ranges spanning this factor or more are log-scaled


def infer_distributions(params: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Optuna distributions covering every value seen, one per setting that varied.

    Numbers give an int or float range (log-scaled when positive and spanning >= 100x);
    anything else (strings, booleans, mixed) a categorical choice.
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    names = sorted({k for p in params for k in p})
    for name in names:
        values = [p.get(name) for p in params]
        distinct = list(dict.fromkeys(values))
        if len(distinct) < 2:
            continue
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numbers) == len(values):
            lo, hi = min(numbers), max(numbers)
            log = lo > 0 and hi / lo >= LOG_RATIO
            if all(isinstance(v, int) for v in values):
                out[name] = IntDistribution(int(lo), int(hi), log=log)
            else:
                out[name] = FloatDistribution(float(lo), float(hi), log=log)
        else:
            choices = sorted(dict.fromkeys(_plain(v) for v in values), key=lambda v: (type(v).__name__, str(v)))
            out[name] = CategoricalDistribution(choices)
    return out


def _plain(value: Any) -> Any:
    # Optuna's categorical choices must be None, bool, int, float or str.
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def rebuild_study(trials: pd.DataFrame, method: str, value: str = "val"):
    """An in-memory Optuna study (maximise) with one completed trial per scored, non-failed trial of ``method``.

    Args:
        trials: the tidy trial table (``analysis.results``).
        method: which method's trials.
        value: the column that is the objective (default: each trial's best validation objective,
            ``search.objective``).

    Returns:
        ``(study, distributions)``; the study is empty when no trial was scored.
    """
    import optuna
    from optuna.trial import create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one INFO line per rebuilt study is noise
    # Failed trials are FAIL in the sweep's own study: they carry no value.
    g = trials[
        (trials["method"] == method) & trials[value].astype(float).map(math.isfinite) & (trials["status"] != "failed")
    ]
    params = [dict(p or {}) for p in g["params"]]
    dists = infer_distributions(params)
    study = optuna.create_study(direction="maximize", study_name=f"{method}-rebuilt")
    for p, v in zip(params, g[value].astype(float), strict=True):
        values = {k: _plain(p.get(k)) for k in dists}
        study.add_trial(create_trial(params=values, distributions=dists, value=float(v)))
    return study, dists


def param_importances(trials: pd.DataFrame, method: str, seed: int = 0) -> tuple[dict[str, float], str]:
    """Importance of each searched setting of ``method`` for its validation objective (``val``).

    Uses ``optuna.importance.get_param_importances`` with Optuna's default evaluator (fANOVA),
    seeded so a report is reproducible.

    Returns:
        ``(importances, note)``: importances sum to 1 (largest first); when they cannot be
        computed they are empty and ``note`` says why.
    """
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    study, dists = rebuild_study(trials, method)
    n = len(study.trials)
    if n < MIN_TRIALS:
        return {}, f"{n} scored trial(s); importances need at least {MIN_TRIALS}"
    if not dists:
        return {}, "no setting varied between its trials"
    if len({t.value for t in study.trials}) < 2:
        return {}, "every trial scored the same validation objective"
    imp = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed))
    return {k: float(v) for k, v in imp.items()}, ""
