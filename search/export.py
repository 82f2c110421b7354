"""Export of a sweep's best prompt per method.

For now: ``<sweep>/exports/<method>/adapter_model.safetensors`` (key ``prompt_embeddings``,
shape [L, d], PEFT's name) and ``promptinit.json`` (method, hyperparameters, metrics, model,
data fingerprints, package versions). The analysis/export issue adds PEFT's
``adapter_config.json``; it replaces this one function.
"""
from __future__ import annotations

import json
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

import torch

EXPORTS = "exports"
PROMPT_FILE = "adapter_model.safetensors"
METADATA_FILE = "promptinit.json"


def versions() -> dict[str, str]:
    out = {}
    for pkg in ("promptinit", "torch", "transformers", "ray", "optuna", "mlflow"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def export_best(sweep_dir: str | Path, method: str, prompt: torch.Tensor, info: Mapping[str, Any]) -> Path:
    """Write one method's best prompt and its metadata into ``<sweep>/exports/<method>/``.

    The folder is written under a temporary name and renamed, so an interrupted export leaves
    no half-written folder.

    Args:
        sweep_dir: the sweep directory.
        method: method name.
        prompt: the prompt [L, d].
        info: metadata (hyperparameters, metrics, model, fingerprints, ...), JSON-serialisable.

    Returns:
        The export folder.
    """
    from promptinit.backbones import save_prompt

    out = Path(sweep_dir) / EXPORTS / method
    tmp = out.with_name(f".{method}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_prompt(prompt, tmp / PROMPT_FILE, {"method": method})
    meta = {"method": method, "prompt_shape": list(prompt.shape), **info, "versions": versions()}
    (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=str))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
