"""Optional parts of promptinit and the extra that installs them.

The core library (tasks, backbones, methods, evaluation, the PEFT export, ``promptinit tune``)
needs none of Ray, Optuna and MLflow; the search platform (``promptinit.search``,
``promptinit.trainables``, ``promptinit report``) needs all three: ``pip install
'promptinit[platform]'``. Checked with ``find_spec``, so the core never imports them.
"""

from __future__ import annotations

from importlib.util import find_spec

PLATFORM = ("ray", "optuna", "mlflow")


def require_platform(part: str) -> None:
    """Raise ``ImportError`` naming the fix when a library of the platform extra is missing.

    Args:
        part: what needs them (``promptinit.search``), for the message.
    """
    missing = [m for m in PLATFORM if find_spec(m) is None]
    if missing:
        raise ImportError(
            f"{part} needs {', '.join(missing)} (the `platform` extra): pip install 'promptinit[platform]'"
        )
