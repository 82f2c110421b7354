"""The sweep: YAML config, MLflow tracking, ARG table, export; ``search/sweep.py`` runs it."""
