"""Prompt initialisation and prompt files (PEFT's key and shape)."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch

from promptinit.errors import PromptinitError

if TYPE_CHECKING:
    from promptinit.backbones.backbone import Backbone

PROMPT_KEY = "prompt_embeddings"  # the key PEFT's prompt tuning reads
VOCAB_TOP = 5000  # Lester et al. sample initial tokens from the 5,000 most common


class PromptInit(str, Enum):
    VOCAB = "vocab"  # embeddings of sampled vocabulary tokens (the PT baseline)
    TEXT = "text"  # embeddings of a text, repeated to length L
    RANDOM = "random"  # Gaussian with the embedding table's scale
    FILE = "file"  # a saved prompt (safetensors)
    LABELS = "labels"  # class labels (Lester et al. 2021): each label's mean token embedding, then vocab


def init_prompt(
    backbone: "Backbone", how: str | PromptInit = PromptInit.VOCAB, *, seed: int = 0,
    text: str | None = None, path: str | Path | None = None, labels: Sequence[str] | None = None,
) -> torch.Tensor:
    """An initial prompt [L, d] in float32 (float64 when the backbone runs in float64).

    Args:
        backbone: the model the prompt is for (its embedding table and L).
        how: vocab, text, random, file or labels.
        seed: for vocab, random and labels (its vocabulary rows).
        text: for ``text``.
        path: for ``file``.
        labels: for ``labels``: the task's class labels. Lester et al. 2021 (§3.2, "class
            label" init): row i is the mean embedding of label i's tokens, as the model reads
            the label as an answer (a causal model's with its separating space); rows past the
            last label are the ``vocab`` init's with the same seed; labels past L are dropped.
    """
    how = PromptInit(how)
    L = backbone.config.prompt_length
    table = backbone.model.get_input_embeddings().weight.detach()
    dtype = torch.float64 if backbone.dtype == torch.float64 else torch.float32
    gen = torch.Generator().manual_seed(seed)
    if how in (PromptInit.VOCAB, PromptInit.LABELS):
        # Skip special tokens at the start of the vocabulary (pad, eos, ...).
        lo = min(len(backbone.tokenizer.all_special_ids) + 1, table.shape[0] - 1)
        hi = min(table.shape[0], lo + VOCAB_TOP)
        ids = torch.randint(lo, hi, (L,), generator=gen)
        prompt = table[ids.to(table.device)]
        if how is PromptInit.LABELS:
            if not labels:
                raise PromptinitError("prompt init 'labels' needs the task's class labels (a classification task)")
            # the label's tokens as an answer after an input, without the closing eos
            rows = [table[torch.tensor(backbone._target_ids("_", lab)[:-1], device=table.device)].float().mean(0)
                    for lab in list(labels)[:L]]
            prompt = prompt.clone()
            prompt[: len(rows)] = torch.stack(rows).to(prompt.dtype)
    elif how is PromptInit.TEXT:
        if not text:
            raise PromptinitError("prompt init 'text' needs a text (--init-text)")
        ids = backbone.tokenizer(text, add_special_tokens=False).input_ids
        ids = (ids * (L // max(len(ids), 1) + 1))[:L]
        prompt = table[torch.tensor(ids, device=table.device)]
    elif how is PromptInit.RANDOM:
        std = table.float().std().item()
        prompt = torch.randn(L, table.shape[1], generator=gen) * std
    else:
        if path is None:
            raise PromptinitError("prompt init 'file' needs a path (--init FILE)")
        prompt = load_prompt(path, expected_shape=(L, table.shape[1]))
    return prompt.detach().to("cpu", dtype).clone().to(backbone.device)


def save_prompt(prompt: torch.Tensor, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write a prompt as safetensors (key ``prompt_embeddings``), atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({PROMPT_KEY: prompt.detach().float().cpu().contiguous()}, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


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
