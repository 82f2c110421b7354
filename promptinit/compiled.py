"""Compiled forward passes of the frozen model for downstream prompt tuning (torch.compile).

Setting: the environment variable ``PROMPTINIT_COMPILE``: ``off`` (the default) or ``on``.
With ``on``, the passes of ``promptinit.batched`` (every downstream tuning run: the PT baseline,
``tune_prompt``, ``tune_prompts``, their dev and test scoring) run the frozen model's decoder
stack through ``torch.compile`` (inductor): a training pass's forward (and so its backward), and
a scoring pass's prompt-and-input prefix (``Backbone.score_options``, greedy generation); the
answer options' few tokens on the prefix's key/value cache stay eager. Results equal the eager
ones to rounding, as a different pass size does (``rows_per_pass``), so no cache key names the
setting.

Measured (``benchmarks/utilisation.py``, 4-5 Dec 2026: SmolLM2-135M, passes of 32 rows x (8 + 64)
tokens as the demo's, 2-core AMD EPYC with AVX512-BF16; each ratio between passes interleaved
over 3-4 rounds):

- idle machine (load 1-2), bfloat16: a tuning pass ran 1.15x faster compiled (2.98 s vs 3.34 s
  per pass, 83 % vs 72 % of the 412 GFLOP/s bf16 matmul peak), a scoring pass 1.03x (77-79 %);
  float32 1.06x and 1.01x (83-88 % of 197 GFLOP/s);
- machine shared with other jobs (load 6-10), bfloat16: tuning 1.93x (17.5 s vs 34.0 s), scoring
  1.24x: eager's many small kernels each wait for both threads, which other jobs delay.

The first call in a new process compiled the bf16 tuning graph in 148 s and the scoring prefix
in 77 s with an empty cache on the idle machine (271 s and 178 s at load 6-10), and read them
back from the on-disk cache in 15 s and 12 s (each including one pass). On the idle machine the
demo's target job (~100 problems x 20 steps, ~250 tuning and ~500 scoring passes) saves about
0.36 s x 250 + 0.06 s x 500 = 120 s of ~1,700 s: more than a warm start costs (~22 s), less than
a cold one (~220 s). Hence off by default: worth turning on for long runs, runs on a shared CPU
and repeated runs with a warm cache, once the bf16 parity of the compiled path is checked
(``benchmarks/bf16_parity.py --compile on --against``; it changes bf16 rounding).

Attention stays as the backbone loads it (``attn_implementation``, eager by default, which MAML's
double backward needs): on the idle CPU above, sdpa ran 0.82x eager's speed in a bf16 tuning pass
and 0.91x in a scoring pass (compiled: 0.86x, 0.94x). On a GPU it is unmeasured
(``benchmarks/gpu_check.sh`` times both).

Which passes: only those run inside ``passes(backbone)``, only for causal models in bfloat16 or
float32 (``supported``). Float64 runs (the exact gradient and equality tests), seq2seq models and
the upstream methods (MAML's second-order step needs a double backward, which compiled autograd
graphs do not have) always run eagerly.

Shapes: one graph per kind of pass (training, scoring prefix) serves every pass size:
``dynamic=True`` makes rows and tokens symbolic. Static graphs, one per shape with passes padded
to a few shapes, ran no faster per real token (SmolLM2 bf16, a training pass of 32 x 72 tokens
padded to 32 x 96: 20.1-20.9 s static, 16.3-17.2 s dynamic, 25-31 s eager, interleaved) and
compiled once per shape. Only a one-row pass is padded, with a copy of its row that is dropped
afterwards (``MIN_ROWS``): a dimension of size 1 would get a graph of its own.

Cache: inductor's FX graph cache and AOTAutograd cache on disk, in
``cache_dir("inductor", "torch-<version>")`` (unless ``TORCHINDUCTOR_CACHE_DIR`` is set), so a
second process (a Ray trial, a resumed run) reads the compiled kernels instead of building them.
Inductor keys each entry by the graph and its guards, its own configuration, the torch version (and
on a GPU the device), and builds its C++ kernels under a hash of their source and compiler flags;
the folder is keyed by the torch version besides. Delete it to compile afresh.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, cast

import torch

from promptinit.errors import PromptinitError
from promptinit.paths import cache_dir

ENV = "PROMPTINIT_COMPILE"
MODES = ("off", "on")
MIN_ROWS = 2  # a one-row pass is padded to two: a dimension of size 1 would get a graph of its own
CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"  # inductor's on-disk cache folder
DTYPES = (torch.bfloat16, torch.float32)  # float64 is for exact checks and always runs eagerly

_ACTIVE: ContextVar[bool] = ContextVar("promptinit_compiled_passes", default=False)
_COMPILED: weakref.WeakKeyDictionary[torch.nn.Module, dict[str, Callable]] = weakref.WeakKeyDictionary()


def setting() -> str:
    """``PROMPTINIT_COMPILE``: ``off`` (default; unset or empty) or ``on``.

    Raises:
        PromptinitError: any other value.
    """
    value = os.environ.get(ENV, "").strip().lower() or "off"
    if value not in MODES:
        raise PromptinitError(f"{ENV}={value!r} is not one of {', '.join(MODES)}; unset it or set it to on")
    return value


def supported(backbone: Any) -> bool:
    """Whether ``backbone`` (a ``promptinit.backbones.Backbone``) has passes this module compiles:
    a causal model in bfloat16 or float32."""
    return backbone.family.value == "causal" and backbone.dtype in DTYPES


@contextmanager
def passes(backbone: Any, enabled: bool | None = None) -> Iterator[bool]:
    """Within this context, ``backbone``'s causal forward passes (``Backbone.target_hidden``) run compiled.

    Args:
        backbone: the frozen model.
        enabled: compile or not; None: as ``PROMPTINIT_COMPILE`` says.

    Yields:
        Whether the passes run compiled (the setting, and ``supported(backbone)``).
    """
    on = (setting() == "on" if enabled is None else enabled) and supported(backbone)
    token = _ACTIVE.set(on)
    try:
        yield on
    finally:
        _ACTIVE.reset(token)


def active() -> bool:
    """Whether the calling code runs inside ``passes`` with compilation on."""
    return _ACTIVE.get()


def inductor_cache() -> str:
    """The on-disk cache folder of compiled graphs: ``TORCHINDUCTOR_CACHE_DIR`` if the user set
    it, else ``cache_dir("inductor", "torch-<version>")`` (which this sets it to for the process).

    Inductor writes its own default (``/tmp/torchinductor_<user>``) into the variable the first
    time anything asks it for its cache folder, so that value counts as unset: seen when a FLOP
    count ran before the first compilation (``benchmarks/utilisation.py``)."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    current = os.environ.get(CACHE_ENV)
    if not current or os.path.abspath(current) == os.path.abspath(default_cache_dir()):
        os.environ[CACHE_ENV] = str(cache_dir("inductor", f"torch-{torch.__version__}"))
    return os.environ[CACHE_ENV]


def _compiled(model: torch.nn.Module, kind: str) -> Callable:
    """The compiled pass ``kind`` of ``model.base_model``, built once per model and kind:
    ``hidden(emb, mask) -> last hidden state``, or ``prefix(emb, mask, pos) -> model output``
    (with its key/value cache)."""
    per_model = _COMPILED.setdefault(model, {})
    if kind not in per_model:
        inductor_cache()
        base = cast(torch.nn.Module, model.base_model)  # transformers: the decoder stack

        def hidden(emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return base(inputs_embeds=emb, attention_mask=mask).last_hidden_state

        def prefix(emb: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> Any:
            return base(inputs_embeds=emb, attention_mask=mask, position_ids=pos, use_cache=True)

        # dynamic: one graph serves every pass size (static graphs per padded shape ran no faster
        # per real token, and padding to a few shapes costs up to a third more work)
        per_model[kind] = torch.compile(hidden if kind == "hidden" else prefix, dynamic=True)
    return per_model[kind]


def _pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """``t`` with copies of its last row appended up to ``rows`` rows (well-formed rows: none is
    fully masked; their outputs are dropped)."""
    extra = rows - t.shape[0]
    return torch.cat([t, t[-1:].expand(extra, *t.shape[1:])]) if extra > 0 else t


def hidden_states(model: torch.nn.Module, emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``model.base_model(inputs_embeds=emb, attention_mask=mask).last_hidden_state``, compiled.

    Args:
        model: a causal language model (transformers), frozen.
        emb: input embeddings [B, T, d] (the prompt included), right-padded.
        mask: attention mask [B, T] of 0/1.

    Returns:
        The last hidden states [B, T, d], equal to the eager ones to rounding.
    """
    rows = emb.shape[0]
    padded = max(rows, MIN_ROWS)
    return _compiled(model, "hidden")(_pad_rows(emb, padded), _pad_rows(mask, padded))[:rows]


def prefix_states(
    model: torch.nn.Module, emb: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache_key: str
) -> tuple[torch.Tensor, Any]:
    """``model.base_model(inputs_embeds=emb, attention_mask=mask, position_ids=pos, use_cache=True)``,
    compiled: the scoring prefix of ``Backbone.score_options`` (and of greedy generation).

    Args:
        model: a causal language model (transformers), frozen.
        emb: input embeddings [B, T, d], the prompt first, then the left-padded input.
        mask: attention mask [B, T] of 0/1.
        pos: position ids [B, T].
        cache_key: the name the model's output holds its key/value cache by.

    Returns:
        ``(last hidden states [B, T, d], key/value cache)``, equal to the eager ones to rounding.
    """
    rows = emb.shape[0]
    padded = max(rows, MIN_ROWS)
    out = _compiled(model, "prefix")(*(_pad_rows(t, padded) for t in (emb, mask, pos)))
    cache = out[cache_key]
    if padded > rows:  # drop the padded row from the cache the options pass reads
        keep = torch.arange(rows, device=emb.device)
        for layer in cache.layers:
            layer.batch_select_indices(keep)
    return out.last_hidden_state[:rows], cache
