"""The phases of a sweep, one module each, run top to bottom once (``search/sweep.py``):

``check`` (``Request`` -> ``Checked``) -> ``prepare`` (-> ``Prepared``) -> ``searching``
(-> ``Searched``) -> ``select`` (-> ``Selected``) -> ``upstream`` (-> ``Checkpoints``) ->
``target`` (-> ``TargetScores``) -> ``publish`` (-> ``Published``).

Shared by them: ``config`` (the sweep YAML), ``jobs`` (Ray jobs kept on disk), ``arms`` (where
downstream tuning starts), ``searcher`` (Tune's ``Searcher`` over our own Optuna study),
``tracking`` (MLflow runs). A study (``search/study.py``) composes the same phases for many
arms, with ``study_config`` and its own first phase, ``curves``.
"""
