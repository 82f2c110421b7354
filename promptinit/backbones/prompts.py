"""Prompt files (PEFT's key and shape) and the ways a prompt can be initialised.

``Backbone.init_prompt`` (``promptinit.backbones.backbone``) builds an initial prompt from a
``PromptInit`` choice; this module knows nothing of models, so the backbone imports it and
not the other way round.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import torch

from promptinit.errors import PromptinitError
from promptinit.files import atomic_write

PROMPT_KEY = "prompt_embeddings"  # the key PEFT's prompt tuning reads


class PromptInit(str, Enum):
    VOCAB = "vocab"  # embeddings of sampled vocabulary tokens (the PT baseline)
    TEXT = "text"  # embeddings of a text, repeated to length L
    RANDOM = "random"  # Gaussian with the embedding table's scale
    FILE = "file"  # a saved prompt (safetensors)
    LABELS = "labels"  # class labels (Lester et al. 2021): each label's mean token embedding, then vocab


def save_prompt(prompt: torch.Tensor, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write a prompt as safetensors (key ``prompt_embeddings``), atomically."""
    from safetensors.torch import save

    return atomic_write(path, save({PROMPT_KEY: prompt.detach().float().cpu().contiguous()}, metadata=metadata))


def load_prompt(path: str | Path, expected_shape: tuple[int, int] | None = None) -> torch.Tensor:
    """Read a prompt file; a missing key, wrong shape or truncated file is refused."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / "adapter_model.safetensors"
    if not path.exists():
        raise PromptinitError(f"{path}: prompt file not found")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise PromptinitError(f"{path}: not a readable safetensors file ({err}); re-export it") from None
    if PROMPT_KEY not in tensors:
        raise PromptinitError(f"{path}: no tensor {PROMPT_KEY!r} (found {sorted(tensors)})")
    prompt = tensors[PROMPT_KEY]
    if expected_shape is not None and tuple(prompt.shape) != tuple(expected_shape):
        raise PromptinitError(
            f"{path}: field {PROMPT_KEY!r}: shape {list(prompt.shape)} does not match the model's "
            f"prompt [L={expected_shape[0]}, d={expected_shape[1]}]; set --prompt-length or use the matching model"
        )
    return prompt
