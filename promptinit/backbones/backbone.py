"""A frozen Hugging Face model plus a shallow soft prompt of L vectors."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from promptinit import compiled
from promptinit.assets import resolve_model
from promptinit.backbones.prompts import PromptInit, load_prompt
from promptinit.errors import PromptinitError
from promptinit.progress import quiet_hf_progress
from promptinit.tasks.task import Example

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}
AUTO = "auto"  # dtype: bfloat16 where the CPU computes it natively, else float32 (``resolve_dtype``)
IGNORE = -100
VOCAB_TOP = 5000  # Lester et al. sample initial prompt tokens from the 5,000 most common


def upcast_logits(logits: torch.Tensor) -> torch.Tensor:
    """Logits in at least float32, ready for a softmax.

    bfloat16 logits lose ranking precision; float64 ones (gradient checks) stay float64.

    Args:
        logits: logits of any dtype.

    Returns:
        ``logits`` unchanged when float64, else as float32.
    """
    return logits if logits.dtype == torch.float64 else logits.float()


class Family(str, Enum):
    CAUSAL = "causal"  # decoder-only: Llama, GPT-2, SmolLM, Gemma
    SEQ2SEQ = "seq2seq"  # encoder-decoder: T5, BART


@dataclass(frozen=True)
class BackboneConfig:
    """How to load the frozen model and shape its prompt.

    Attributes:
        model: packaged name, tiny test model, ``.gguf`` file (made absolute), local folder or hub id.
        prompt_length: number of soft-prompt vectors L.
        dtype: weights and activations: float32, bfloat16, float64 (tests) or ``auto``:
            bfloat16 on a CPU that computes it natively (AVX512-BF16 or AMX), where its accuracy
            matches float32 (``benchmarks/bf16_parity.py``) at a third of the time, else float32.
            The prompt and the optimiser state stay float32 either way.
        attn_implementation: ``eager`` supports double backward on CPU (second-order MAML);
            ``sdpa`` is faster for first-order work on a GPU.
        max_input_tokens: inputs are cut to their last this-many tokens.
        max_target_tokens: targets and options are cut to this many tokens (eos included).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda[:n]``.
    """

    model: str
    prompt_length: int = 20  # vectors
    dtype: str = "float32"
    attn_implementation: str = "eager"
    max_input_tokens: int = 256  # tokens
    max_target_tokens: int = 32  # tokens
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.model.lower().endswith(".gguf"):  # a file: the same one wherever a Ray worker runs
            object.__setattr__(self, "model", str(Path(self.model).expanduser().resolve()))
        if self.dtype not in (*DTYPES, AUTO):
            raise PromptinitError(f"field 'dtype': {self.dtype!r} is not one of {', '.join((*DTYPES, AUTO))}")
        if self.prompt_length < 1:
            raise PromptinitError(f"field 'prompt_length': {self.prompt_length} must be >= 1")
        if self.max_input_tokens < 1:
            raise PromptinitError(f"field 'max_input_tokens': {self.max_input_tokens} must be >= 1")
        if self.attn_implementation not in ("eager", "sdpa"):
            raise PromptinitError(f"field 'attn_implementation': {self.attn_implementation!r} is not eager or sdpa")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[resolve_dtype(self.dtype, self.resolved_device())]

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


@dataclass
class Batch:
    """Token ids of a batch of examples, right-padded.

    Causal: ``input_ids`` is input + target, ``labels`` holds the target ids at their
    positions and ``IGNORE`` elsewhere. Seq2seq: ``input_ids`` is the encoder input and
    ``labels`` the decoder targets.
    """

    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    labels: torch.Tensor  # causal [B, T]; seq2seq [B, S]
    # Optional vectors placed at given input positions after embedding (SUPMER's scc cluster
    # vectors): any object with ``apply(inputs_embeds, offset) -> inputs_embeds``.
    inject: Any = None

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device) -> Batch:
        ids, mask, labels = (t.to(device) for t in (self.input_ids, self.attention_mask, self.labels))
        return Batch(ids, mask, labels, self.inject)

    @staticmethod
    def cat(batches: Sequence[Batch], pad_id: int) -> Batch:
        """Stack batches of different lengths (task-batched meta-steps)."""
        if any(b.inject is not None for b in batches):
            raise ValueError("batches with injected vectors cannot be stacked; run them one by one")
        T = max(b.input_ids.shape[1] for b in batches)
        S = max(b.labels.shape[1] for b in batches)

        def pad(t: torch.Tensor, width: int, value: int) -> torch.Tensor:
            return F.pad(t, (0, width - t.shape[1]), value=value)

        return Batch(
            torch.cat([pad(b.input_ids, T, pad_id) for b in batches]),
            torch.cat([pad(b.attention_mask, T, 0) for b in batches]),
            # causal labels are as wide as the inputs, so S == T there
            torch.cat([pad(b.labels, S, IGNORE) for b in batches]),
        )


# --------------------------------------------------------------- per-row prompts in scoring


def _check_row_prompts(prompt: torch.Tensor, examples: Sequence[Example]) -> None:
    """Scoring takes one prompt [L, d] or one per example [N, L, d]; anything else is an error."""
    if prompt.dim() == 3 and prompt.shape[0] != len(examples):
        raise ValueError(
            f"per-example prompts {tuple(prompt.shape)} need one row per example ({len(examples)}); "
            "pass [L, d] to share one prompt"
        )
    if prompt.dim() not in (2, 3):
        raise ValueError(f"prompt shape {tuple(prompt.shape)} is neither [L, d] nor [N, L, d]")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` is a CPU with native bfloat16 arithmetic (AVX512-BF16 or AMX tiles)."""
    if device.type != "cpu":
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu, torch >= 2.3
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """``auto`` -> ``bfloat16`` on a CPU with native bfloat16 (``native_bf16``), else ``float32``
    (GPUs included: bf16 parity was measured on the CPU only); other names unchanged."""
    if dtype != AUTO:
        return dtype
    return "bfloat16" if native_bf16(device) else "float32"


def _exact_eager_attention(
    module, query, key, value, attention_mask, scaling=None, dropout=0.0, position_bias=None, **kwargs
):
    """Eager attention whose softmax runs in float64 for float64 models (transformers' eager
    softmax always runs in float32); identical to it for other dtypes. T5's relative
    ``position_bias`` is added as T5's own eager attention adds it."""
    groups = getattr(module, "num_key_value_groups", 1)
    key = key.repeat_interleave(groups, dim=1)
    value = value.repeat_interleave(groups, dim=1)
    weights = torch.matmul(query, key.transpose(2, 3)) * (query.size(-1) ** -0.5 if scaling is None else scaling)
    if position_bias is not None:
        weights = weights + position_bias
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = torch.softmax(weights, dim=-1, dtype=torch.promote_types(query.dtype, torch.float32)).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


EXACT_EAGER = "promptinit_exact_eager"


def _rms_norm_float64(self, x: torch.Tensor) -> torch.Tensor:
    return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))


def _exact_rms_norms(model: torch.nn.Module) -> None:
    """Keep Llama/T5 RMS norms in float64.

    Their forward casts to float32 internally, which in a float64 model turns the loss into a
    step function at the 1e-7 scale and makes finite-difference gradient checks meaningless.
    float64 exists for those checks, so the norms are computed exactly there.
    """
    for module in model.modules():
        if type(module).__name__ in ("LlamaRMSNorm", "T5LayerNorm"):
            module.forward = _rms_norm_float64.__get__(module)


@functools.lru_cache(maxsize=4)
def _load(model: str, dtype: str, attn: str, device: str):
    # One frozen copy per process: trials, evaluation and baselines share it.
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    with quiet_hf_progress("transformers"):  # a per-load bar of 272 tensors is noise in our progress output
        path = resolve_model(model)
        config = AutoConfig.from_pretrained(path)
        family = Family.SEQ2SEQ if getattr(config, "is_encoder_decoder", False) else Family.CAUSAL
        cls = AutoModelForSeq2SeqLM if family is Family.SEQ2SEQ else AutoModelForCausalLM
        lm = _from_pretrained(cls, path, dtype, attn)
        tok = AutoTokenizer.from_pretrained(path)
    lm.to(torch.device(device)).eval()
    lm.requires_grad_(False)
    if dtype == "float64":
        _exact_rms_norms(lm)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return lm, tok, family


def _from_pretrained(cls, path: str, dtype: str, attn: str):
    """The model's weights; a float64 model with eager attention gets ``EXACT_EAGER`` where it
    supports the attention interface."""
    if dtype == "float64" and attn == "eager":
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, eager_mask

        AttentionInterface.register(EXACT_EAGER, _exact_eager_attention)
        AttentionMaskInterface.register(EXACT_EAGER, eager_mask)  # additive float masks, as eager
        try:
            return cls.from_pretrained(path, dtype=DTYPES[dtype], attn_implementation=EXACT_EAGER)
        except ValueError:  # models without the attention interface are exact already
            pass
    return cls.from_pretrained(path, dtype=DTYPES[dtype], attn_implementation=attn)


@functools.cache
def _cache_keyword_for(model_cls: type[torch.nn.Module]) -> str:
    # transformers 5.x takes and returns the key/value cache as `cache` and warns on every
    # `past_key_values` (removed in 5.40); the releases before know only `past_key_values`
    return "cache" if "cache" in inspect.signature(model_cls.forward).parameters else "past_key_values"


class Backbone:
    """A frozen language model that takes a soft prompt as an input.

    Args:
        config: a ``BackboneConfig``.

    Example:
        >>> bb = Backbone(BackboneConfig("tiny-llama", prompt_length=4))
        >>> prompt = bb.init_prompt("vocab", seed=0).requires_grad_()
        >>> loss = bb.loss(prompt, bb.encode(examples))
    """

    def __init__(self, config: BackboneConfig):
        self.device = config.resolved_device()
        # `auto` becomes the dtype it stands for here, so the cache keys and exports name it.
        config = dataclasses.replace(config, dtype=resolve_dtype(config.dtype, self.device))
        self.config = config
        self.model, self.tokenizer, self.family = _load(
            config.model, config.dtype, config.attn_implementation, str(self.device)
        )
        self.dtype = config.torch_dtype
        self.hidden_size = self.model.get_input_embeddings().weight.shape[1]
        self.pad_id = self.tokenizer.pad_token_id
        self.eos_id = self.tokenizer.eos_token_id

    # ----------------------------------------------------------------- tokenisation
    def _input_ids(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        return ids[-self.config.max_input_tokens :]

    def _target_ids(self, input_text: str, target: str) -> list[int]:
        # Causal models continue the input, so the answer needs its separating space.
        if self.family is Family.CAUSAL and input_text and not input_text[-1].isspace():
            target = " " + target
        ids = self.tokenizer(target, add_special_tokens=False).input_ids
        return ids[: self.config.max_target_tokens - 1] + [self.eos_id]

    def encode(self, examples: Sequence[Example]) -> Batch:
        """Tokenise examples (input and gold target) into a right-padded ``Batch`` on the device."""
        return self.encode_inputs(examples, [self._input_ids(ex.input) for ex in examples])

    def encode_inputs(self, examples: Sequence[Example], input_ids: Sequence[list[int]]) -> Batch:
        """Like ``encode``, with each example's input already tokenised (and cut) by the caller."""
        rows_in, rows_lab = [], []
        for ex, inp in zip(examples, input_ids, strict=True):
            tgt = self._target_ids(ex.input, ex.target)
            if self.family is Family.CAUSAL:
                rows_in.append(inp + tgt)
                rows_lab.append([IGNORE] * len(inp) + tgt)
            else:
                rows_in.append(inp)
                rows_lab.append(tgt)
        ids, mask = self._pad(rows_in, self.pad_id)
        labels, _ = self._pad(rows_lab, IGNORE)
        return Batch(ids, mask, labels).to(self.device)

    @staticmethod
    def _pad(rows: list[list[int]], value: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        T = max(1, max(len(r) for r in rows))
        ids = torch.full((len(rows), T), value, dtype=torch.long)
        mask = torch.zeros((len(rows), T), dtype=torch.long)
        for i, r in enumerate(rows):
            sl = slice(T - len(r), T) if left else slice(0, len(r))
            ids[i, sl] = torch.tensor(r, dtype=torch.long)
            mask[i, sl] = 1
        return ids, mask

    # ----------------------------------------------------------------- forward pieces
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids)

    def _prepend(self, prompt: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, inject: Any = None):
        """``[P; embed(ids)]`` and its mask; ``prompt`` is [L, d] or per example [B, L, d]."""
        B = ids.shape[0]
        P = prompt.to(self.device, self.dtype)
        if P.dim() == 2:
            P = P.unsqueeze(0).expand(B, -1, -1)
        if P.shape[0] != B or P.shape[-1] != self.hidden_size:
            raise ValueError(f"prompt shape {tuple(prompt.shape)} does not fit batch {B} x d {self.hidden_size}")
        emb = torch.cat([P, self.embed(ids)], dim=1)
        if inject is not None:
            emb = inject.apply(emb, offset=P.shape[1])
        mask = torch.cat([torch.ones(B, P.shape[1], dtype=mask.dtype, device=mask.device), mask], dim=1)
        return emb, mask

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """Final hidden states -> vocabulary logits, as the model's own forward computes them."""
        cfg = self.model.config
        if self.family is Family.SEQ2SEQ and getattr(cfg, "scale_decoder_outputs", False):
            h = h * (cfg.d_model**-0.5)  # T5 with tied embeddings
        logits = self.model.get_output_embeddings()(h)
        if hasattr(self.model, "final_logits_bias"):  # BART
            logits = logits + self.model.final_logits_bias.to(logits.dtype)
        cap = getattr(cfg, "final_logit_softcapping", None)  # Gemma
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def target_hidden(self, prompt: torch.Tensor, batch: Batch):
        """Final hidden states at the positions that predict target tokens.

        Returns:
            ``(h [N, d], labels [N], rows [N])``: one row per target token, the token it
            predicts and the example it belongs to. Logits are never formed for the other
            positions (most of a sequence is input).
        """
        L = prompt.shape[-2]
        emb, mask = self._prepend(prompt, batch.input_ids, batch.attention_mask, batch.inject)
        if self.family is Family.CAUSAL:
            # compiled: only inside promptinit.compiled.passes (bf16/fp32 tuning), else eager
            if compiled.active() and compiled.supported(self):
                h = compiled.hidden_states(self.model, emb, mask)
            else:
                h = self.model.base_model(inputs_embeds=emb, attention_mask=mask).last_hidden_state
            rows, cols = (batch.labels != IGNORE).nonzero(as_tuple=True)
            return h[rows, L + cols - 1], batch.labels[rows, cols], rows
        enc = self.model.get_encoder()(inputs_embeds=emb, attention_mask=mask).last_hidden_state
        dec_in = self.model.prepare_decoder_input_ids_from_labels(labels=batch.labels)
        h = self.model.get_decoder()(
            input_ids=dec_in, encoder_hidden_states=enc, encoder_attention_mask=mask
        ).last_hidden_state
        rows, cols = (batch.labels != IGNORE).nonzero(as_tuple=True)
        return h[rows, cols], batch.labels[rows, cols], rows

    def token_logprobs(self, prompt: torch.Tensor, batch: Batch):
        """Log-probability of every target token: ``(logp [N], rows [N])``."""
        h, labels, rows = self.target_hidden(prompt, batch)
        return self.target_logprobs(h, labels), rows

    def target_logprobs(self, h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Log-probability [N] of each target token ``labels`` [N] from its final hidden state ``h`` [N, d]."""
        return torch.log_softmax(upcast_logits(self.project(h)), dim=-1).gather(1, labels[:, None]).squeeze(1)

    @staticmethod
    def mean_per_example(logp: torch.Tensor, rows: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(per-example mean NLL [n], target tokens per example [n])`` of token log-probs."""
        nll = torch.zeros(n, dtype=logp.dtype, device=logp.device).index_add(0, rows, -logp)
        count = torch.zeros(n, dtype=logp.dtype, device=logp.device).index_add(0, rows, torch.ones_like(logp))
        return nll / count.clamp(min=1), count

    def loss(self, prompt: torch.Tensor, batch: Batch, per_example: bool = False) -> torch.Tensor:
        """Mean target-token negative log-likelihood, differentiable in ``prompt``.

        Args:
            prompt: [L, d] shared by the batch, or [B, L, d], one per example.
            batch: from ``encode``.
            per_example: return [B] losses (each the mean over its own target tokens).

        Returns:
            A scalar (mean over examples) or a [B] tensor.
        """
        logp, rows = self.token_logprobs(prompt, batch)
        per, _ = self.mean_per_example(logp, rows, len(batch))
        return per if per_example else per.mean()

    def loss_with_context(self, prompt: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``loss(per_example=True)`` and, from the same pass, each example's hidden-state context.

        The context is what SUPMER's ψ gate reads downstream (``promptinit.methods.mgr``): the
        mean final hidden state at the target positions; a batch's context is
        ``h_sum.sum(0) / count.sum()``.

        Returns:
            ``(per [B], h_sum [B, d], count [B])``: the per-example losses (the same operations
            as ``loss``, differentiable in ``prompt``), the detached sum of each example's
            target-position hidden states, and its number of target tokens.
        """
        h, labels, rows = self.target_hidden(prompt, batch)
        per, count = self.mean_per_example(self.target_logprobs(h, labels), rows, len(batch))
        hd = h.detach()
        h_sum = torch.zeros(len(batch), hd.shape[-1], dtype=hd.dtype, device=hd.device).index_add(0, rows, hd)
        return per, h_sum, count

    # ----------------------------------------------------------------- seq2seq halves
    def _need_encoder(self, what: str) -> None:
        if self.family is not Family.SEQ2SEQ:
            raise PromptinitError(
                f"{what} needs an encoder-decoder backbone; {self.config.model} is {self.family.value} (no encoder)"
            )

    def encoder_states(self, prompt: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Seq2seq: the encoder's last hidden states of ``[P; input]`` (as ``target_hidden`` runs it).

        Args:
            prompt: [L, d] or [B, L, d].
            batch: from ``encode`` (scc marker vectors in ``batch.inject`` are applied).

        Returns:
            ``(enc [B, L + T, d], mask [B, L + T])``.
        """
        self._need_encoder("encoder_states")
        emb, mask = self._prepend(prompt, batch.input_ids, batch.attention_mask, batch.inject)
        return self.model.get_encoder()(inputs_embeds=emb, attention_mask=mask).last_hidden_state, mask

    def decoder_target_hidden(self, enc: torch.Tensor, enc_mask: torch.Tensor, labels: torch.Tensor):
        """Seq2seq: the decoder's final hidden states at the target positions, on given encoder states.

        ``decoder_target_hidden(*encoder_states(prompt, batch), batch.labels)`` equals
        ``target_hidden(prompt, batch)``.

        Args:
            enc: encoder states [B, S, d].
            enc_mask: [B, S] of 0/1, or an additive float mask [B, 1, 1, S] (0 keeps a position,
                ``torch.finfo(dtype).min`` drops it, log w weighs it by w).
            labels: decoder targets [B, S'] (``IGNORE`` after the end).

        Returns:
            ``(h [N, d], labels [N], rows [N])`` as ``target_hidden``.
        """
        self._need_encoder("decoder_target_hidden")
        dec_in = self.model.prepare_decoder_input_ids_from_labels(labels=labels)
        h = self.model.get_decoder()(
            input_ids=dec_in, encoder_hidden_states=enc, encoder_attention_mask=enc_mask
        ).last_hidden_state
        rows, cols = (labels != IGNORE).nonzero(as_tuple=True)
        return h[rows, cols], labels[rows, cols], rows

    # ----------------------------------------------------------------- scoring
    def _prefix(self, prompt: torch.Tensor, examples: Sequence[Example]):
        """Run ``[P; input]`` once, left-padded, and keep its key/value cache (causal)."""
        ids, mask = self._pad([self._input_ids(e.input) for e in examples], self.pad_id, left=True)
        ids, mask = ids.to(self.device), mask.to(self.device)
        emb, mask = self._prepend(prompt, ids, mask)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        # compiled: only inside promptinit.compiled.passes (bf16/fp32 scoring), else eager
        if compiled.active() and compiled.supported(self):
            h, cache = compiled.prefix_states(self.model, emb, mask, pos, self._cache_keyword())
            return h[:, -1], cache, mask, pos[:, -1]
        out = self.model.base_model(inputs_embeds=emb, attention_mask=mask, position_ids=pos, use_cache=True)
        return out.last_hidden_state[:, -1], out[self._cache_keyword()], mask, pos[:, -1]

    def _cache_keyword(self) -> str:
        """The name the causal model's forward takes, and its output holds, the key/value cache by."""
        model_cls: type = type(self.model.base_model)  # not type[...]: mypy thinks those unhashable (mypy#11470)
        return _cache_keyword_for(model_cls)

    @torch.no_grad()
    def score_options(
        self, prompt: torch.Tensor, examples: Sequence[Example], batch_size: int = 16
    ) -> list[torch.Tensor]:
        """Log-likelihood of each option of each example (rank classification).

        Args:
            prompt: [L, d] shared by every example, or [N, L, d], one per example (rows of one
                pass may belong to different tuning problems; the prefix cache is per row).
            examples: each with its ``options``.
            batch_size: examples per forward pass.

        Returns:
            One float tensor per example with the summed log-probability of each option
            (its tokens and the closing eos).
        """
        _check_row_prompts(prompt, examples)
        out: list[torch.Tensor] = []
        for i in range(0, len(examples), batch_size):
            chunk = examples[i : i + batch_size]
            p = prompt[i : i + batch_size] if prompt.dim() == 3 else prompt
            if self.family is Family.CAUSAL:
                out += self._score_causal(p, chunk)
            else:
                out += self._score_seq2seq(p, chunk)
        return out

    def _pairs(self, chunk: Sequence[Example]):
        pair_ex, opt_rows = [], []
        for j, ex in enumerate(chunk):
            if not ex.options:
                raise ValueError(f"example {ex.uid} has no options to score")
            for opt in ex.options:
                pair_ex.append(j)
                opt_rows.append(self._target_ids(ex.input, opt))
        return torch.tensor(pair_ex, device=self.device), opt_rows

    def _split_scores(self, chunk: Sequence[Example], scores: torch.Tensor) -> list[torch.Tensor]:
        return list(scores.cpu().split([len(ex.options) for ex in chunk]))

    def _score_causal(self, prompt, chunk):
        h_last, cache, mask, last_pos = self._prefix(prompt, chunk)
        pair_ex, opt_rows = self._pairs(chunk)
        opt_ids, opt_mask = (t.to(self.device) for t in self._pad(opt_rows, self.pad_id))
        first = torch.log_softmax(upcast_logits(self.project(h_last)), dim=-1)  # [B, V]
        scores = first[pair_ex, opt_ids[:, 0]]
        if opt_ids.shape[1] > 1:
            # Options share their example's prefix cache; only option tokens are computed.
            for layer in cache.layers:
                layer.batch_select_indices(pair_ex)
            feed = opt_ids[:, :-1]
            full_mask = torch.cat([mask[pair_ex], opt_mask[:, :-1]], dim=1)
            pos = last_pos[pair_ex, None] + 1 + torch.arange(feed.shape[1], device=self.device)
            h = self.model.base_model(
                input_ids=feed, attention_mask=full_mask, position_ids=pos, **{self._cache_keyword(): cache}
            ).last_hidden_state
            rows, cols = opt_mask[:, 1:].nonzero(as_tuple=True)
            logp = torch.log_softmax(upcast_logits(self.project(h[rows, cols])), dim=-1)
            tok = logp.gather(1, opt_ids[rows, cols + 1][:, None]).squeeze(1)
            scores = scores.index_add(0, rows, tok)
        return self._split_scores(chunk, scores)

    def _score_seq2seq(self, prompt, chunk):
        ids, mask = self._pad([self._input_ids(e.input) for e in chunk], self.pad_id)
        emb, mask = self._prepend(prompt, ids.to(self.device), mask.to(self.device))
        enc = self.model.get_encoder()(inputs_embeds=emb, attention_mask=mask).last_hidden_state
        pair_ex, opt_rows = self._pairs(chunk)
        labels, _ = self._pad(opt_rows, IGNORE)
        labels = labels.to(self.device)
        # The encoder ran once per example; each option only runs the (short) decoder.
        h = self.model.get_decoder()(
            input_ids=self.model.prepare_decoder_input_ids_from_labels(labels=labels),
            encoder_hidden_states=enc[pair_ex],
            encoder_attention_mask=mask[pair_ex],
        ).last_hidden_state
        rows, cols = (labels != IGNORE).nonzero(as_tuple=True)
        logp = torch.log_softmax(upcast_logits(self.project(h[rows, cols])), dim=-1)
        tok = logp.gather(1, labels[rows, cols][:, None]).squeeze(1)
        scores = torch.zeros(len(opt_rows), dtype=tok.dtype, device=self.device).index_add(0, rows, tok)
        return self._split_scores(chunk, scores)

    # ----------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(
        self,
        prompt: torch.Tensor,
        examples: Sequence[Example],
        max_new_tokens: int | None = None,
        batch_size: int = 16,
    ) -> list[str]:
        """Greedy decoding until eos or ``max_new_tokens`` (default ``max_target_tokens``);
        ``prompt`` is [L, d] or [N, L, d], one per example."""
        _check_row_prompts(prompt, examples)
        n_new = max_new_tokens or self.config.max_target_tokens
        out: list[str] = []
        for i in range(0, len(examples), batch_size):
            chunk = examples[i : i + batch_size]
            p = prompt[i : i + batch_size] if prompt.dim() == 3 else prompt
            steps = (
                self._greedy_causal(p, chunk, n_new)
                if self.family is Family.CAUSAL
                else self._greedy_seq2seq(p, chunk, n_new)
            )
            for row in steps.tolist():
                row = row[: row.index(self.eos_id)] if self.eos_id in row else row
                out.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return out

    def _greedy_causal(self, prompt, chunk, n_new: int) -> torch.Tensor:
        h_last, cache, mask, pos = self._prefix(prompt, chunk)
        tokens = []
        done = torch.zeros(len(chunk), dtype=torch.bool, device=self.device)
        for _ in range(n_new):
            nxt = self.project(h_last).argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, self.eos_id), nxt)
            tokens.append(nxt)
            done |= nxt == self.eos_id
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            pos = pos + 1
            h_last = self.model.base_model(
                input_ids=nxt[:, None],
                attention_mask=mask,
                position_ids=pos[:, None],
                use_cache=True,
                **{self._cache_keyword(): cache},
            ).last_hidden_state[:, -1]
        return torch.stack(tokens, dim=1)

    def _greedy_seq2seq(self, prompt, chunk, n_new: int) -> torch.Tensor:
        ids, mask = self._pad([self._input_ids(e.input) for e in chunk], self.pad_id)
        emb, mask = self._prepend(prompt, ids.to(self.device), mask.to(self.device))
        enc = self.model.get_encoder()(inputs_embeds=emb, attention_mask=mask).last_hidden_state
        start = self.model.config.decoder_start_token_id
        dec = torch.full((len(chunk), 1), start, dtype=torch.long, device=self.device)
        done = torch.zeros(len(chunk), dtype=torch.bool, device=self.device)
        for _ in range(n_new):
            # Decoder outputs are short, so re-running it beats managing a second cache.
            h = self.model.get_decoder()(
                input_ids=dec, encoder_hidden_states=enc, encoder_attention_mask=mask
            ).last_hidden_state[:, -1]
            nxt = self.project(h).argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, self.eos_id), nxt)
            dec = torch.cat([dec, nxt[:, None]], dim=1)
            done |= nxt == self.eos_id
            if bool(done.all()):
                break
        return dec[:, 1:]

    # ----------------------------------------------------------------- prediction
    def predict(self, prompt: torch.Tensor, examples: Sequence[Example], batch_size: int = 16) -> list[str]:
        """Predicted answer text: the best option (rank classification) or greedy generation.

        ``prompt`` is [L, d], or [N, L, d] with one prompt per example.
        """
        scored = [e for e in examples if e.options]
        if len(scored) == len(examples):
            scores = self.score_options(prompt, examples, batch_size)
            return [ex.options[int(s.argmax())] for ex, s in zip(examples, scores, strict=True)]
        if not scored:
            return self.generate(prompt, examples, batch_size=batch_size)
        raise ValueError("a batch mixes examples with and without options; predict them separately")

    def init_prompt(self, how: str = "vocab", **kwargs) -> torch.Tensor:
        """Initial prompt [L, d] (see ``init_prompt`` in this module)."""
        return init_prompt(self, how, **kwargs)

    @property
    def weights_fingerprint(self) -> str:
        """Hash of every parameter and buffer of the loaded model (computed once per model)."""
        from promptinit.fingerprints import tensors_fingerprint

        fp = getattr(self.model, "_promptinit_fingerprint", None)
        if fp is None:
            named = [*self.model.named_parameters(), *self.model.named_buffers()]
            fp = tensors_fingerprint(named)
            self.model._promptinit_fingerprint = fp
        return fp

    @property
    def fingerprint(self) -> str:
        """What a cached result of this backbone depends on: the model's name and weights, the
        vocabulary size, dtype, device type, attention implementation, prompt length, token caps
        and the versions of torch and transformers."""
        from promptinit.fingerprints import library_versions

        c = self.config
        libs = library_versions("torch", "transformers")
        return "|".join(
            [
                c.model,
                f"w{self.weights_fingerprint}",
                f"V{len(self.tokenizer)}",
                c.dtype,
                self.device.type,
                c.attn_implementation,
                f"L{c.prompt_length}",
                f"in{c.max_input_tokens}",
                f"out{c.max_target_tokens}",
                *(f"{k}={v}" for k, v in libs.items()),
            ]
        )


# --------------------------------------------------------------- initial prompts


def init_prompt(
    backbone: Backbone,
    how: str | PromptInit = PromptInit.VOCAB,
    *,
    seed: int = 0,
    text: str | None = None,
    path: str | Path | None = None,
    labels: Sequence[str] | None = None,
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

    Returns:
        The prompt, detached, on the backbone's device.
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
            prompt = _with_label_rows(backbone, table, prompt, labels)
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


def _with_label_rows(
    backbone: Backbone, table: torch.Tensor, prompt: torch.Tensor, labels: Sequence[str] | None
) -> torch.Tensor:
    """``prompt`` with its first rows replaced by the class labels' mean token embeddings."""
    if not labels:
        raise PromptinitError("prompt init 'labels' needs the task's class labels (a classification task)")
    # the label's tokens as an answer after an input, without the closing eos
    rows = [
        table[torch.tensor(backbone._target_ids("_", lab)[:-1], device=table.device)].float().mean(0)
        for lab in list(labels)[: backbone.config.prompt_length]
    ]
    prompt = prompt.clone()
    prompt[: len(rows)] = torch.stack(rows).to(prompt.dtype)
    return prompt
