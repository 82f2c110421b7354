"""The search platform: ``search/sweep.py`` and ``search/study.py`` over the phases of
``promptinit.search.phases``. Needs the ``platform`` extra (Ray, Optuna, MLflow)."""

from promptinit.extras import require_platform

require_platform("promptinit.search")
