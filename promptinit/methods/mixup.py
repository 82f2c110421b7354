"""SUPMER's curriculum task augmentation: mixup of hidden states with soft targets.

Each SUPMER meta-task has a query set and an "aug" query set of the same format drawn from
another cluster. The outer loss is taken on their mixture:

    h = λ h_q + (1 - λ) h_aug,        target = λ y_q + (1 - λ) y_aug
    λ ~ Beta(α, α b),  α = 1,  b = (m^s - 1) / (m - 1),  m = 2

where s is an exponential moving average (decay 0.5) of the batch mean of
(1 + cos(g_query, ψ(g_support))) / 2 (``qry_spt_similarity``). s starts at 0, so early tasks
are barely mixed; as the query gradient comes to agree with the (regularised) support
gradient, s and b grow and the mean λ = 1 / (1 + b) falls towards 1/2: harder, more mixed
query sets (a curriculum). All schedules here are pure functions of their arguments.

Where h is taken (``MixupSite``; ``auto`` picks by the backbone's family):

- **encoder_output** (seq2seq; ``auto`` for T5): as the released code (``model/meta.py``
  ``get_mixup_loss``): the encoder outputs of the query and the aug example are mixed
  position by position and the decoder runs on the mixture. The code pads both inputs to a
  fixed 412 tokens and attends to the union of their masks; here a position present in both
  inputs is mixed, a position present in one only keeps that input's state and is weighted by
  that input's share in the cross-attention (an additive log λ or log(1 - λ) in the
  encoder-attention mask), so λ = 1 is exactly the query example's own pass and λ = 0 exactly
  the aug example's. The code teacher-forces one decoder pass with the query's decoder inputs
  and scores only the first two label positions (``<extra_id_0>`` and the answer,
  ``model/model.py:304-311``), whose decoder inputs (``<pad> <extra_id_0>``) are the same for
  both examples, so that pass is also the aug target's. Our targets are the answer words
  themselves (``yes``, ``B`` + end of sequence), whose decoder inputs differ between the two
  examples after the first token, so the decoder runs on the mixture once per target, each
  teacher-forced on its own tokens: the loss of an example is
  ``λ L(mix, y_q) + (1 - λ) L(mix, y_aug)``, each L the mean over that target's tokens. For the
  first target token (the answer, in every SUPMER format) this is the code's soft-target
  loss; the code sums a KL divergence over its two positions, we average the cross-entropy
  over the target's tokens as every promptinit loss does (the KL and the cross-entropy
  differ by the soft target's entropy, a constant).
- **final_hidden** (causal; ``auto`` for decoder-only models, which have no encoder): the
  *final hidden states at the positions that predict the target tokens*
  (``Backbone.target_hidden``: the last input position, which predicts the first answer
  token, and the answer positions after it), projected through the LM head after mixing.
  These are the states the loss reads and they have attended to the whole input, so mixing
  them is the causal analogue of mixing a representation of the whole example; mixing whole
  sequences is not defined for inputs of different lengths. Also selectable for seq2seq
  models (then the decoder states at the target positions are mixed).

A choice for ``final_hidden`` (DESIGN.md and the paper leave it open):

- **Targets of different token lengths.** Query example i is paired with aug example i of
  the same task. Their target positions are aligned from the first answer token: position j
  of the query target is mixed with position j of the aug target while both exist. Where the
  query target is longer, its extra positions keep their own hidden state and hard target
  (weight 1); the aug target's extra positions are dropped. Each example's loss is the mean
  over its query-target positions, each task's loss the mean over its examples, exactly as
  ``promptinit.methods.inner.task_losses`` (so λ = 1 reproduces the plain query loss). With a
  word-piece tokenizer (SmolLM2: " yes", " maybe", " no", " A" ... " F" are one token each)
  every SUPMER answer is one token plus end-of-sequence, so both targets have the same length
  and every position is mixed; the rule matters for character-level tokenizers and for
  other task formats.

Both sites:

- **Soft targets** are applied to the log-likelihood: the token loss is
  ``-(λ log p(y_q) + (1 - λ) log p(y_aug))``, the cross-entropy with the mixed one-hot target.
- **One λ per task**, drawn from the method's seeded generator (``random.Random.betavariate``),
  so a checkpoint replays it. (The released code draws one per query mini-batch of 4 or 8
  examples, i.e. 2 to 4 per task.)
- **s = 0.** Beta(α, 0) is degenerate; b = 0 returns λ = 1 exactly (no mixing, and the aug
  forward pass is skipped). For s > 0, b > 0 and λ is sampled. (The released code adds 1e-7
  to b instead, which gives λ ≈ 1 - 1e-7 at s = 0.)
- **Ablations**: ``curriculum="fixed"`` uses the same λ for every task; ``"none"`` never mixes
  (the aug sets are still drawn, so the sampler's stream is the same in every mode).

Reference:
    Pan et al. 2023, "Self-Supervised Meta-Prompt Learning with Meta-Gradient Regularization
    for Few-shot Generalization" (SUPMER), sec. 3.2, and its released code (``model/meta.py``:
    ``get_alpha``, ``get_mixup_loss``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from enum import Enum

import torch
import torch.nn.functional as F

from promptinit.backbones import Backbone
from promptinit.backbones.backbone import Family, upcast_logits
from promptinit.errors import PromptinitError
from promptinit.methods.inner import TaskBatch


class Curriculum(str, Enum):
    BETA = "beta"  # λ ~ Beta(α, α b(s)): the SUPMER curriculum
    FIXED = "fixed"  # λ = fixed_lambda for every task (ablation)
    NONE = "none"  # no mixup (ablation)


class MixupSite(str, Enum):
    AUTO = "auto"  # encoder_output for seq2seq backbones, final_hidden for causal ones
    ENCODER_OUTPUT = "encoder_output"  # mix encoder outputs, decode the mixture (the released code; seq2seq)
    FINAL_HIDDEN = "final_hidden"  # mix the final hidden states at the target positions (any backbone)


def resolve_site(site: str, backbone: Backbone) -> str:
    """The mixup site ``site`` stands for on ``backbone`` (``auto`` resolved).

    Raises:
        PromptinitError: ``encoder_output`` on a causal backbone, or an unknown site.
    """
    choices = [m.value for m in MixupSite]
    if site not in choices:
        raise PromptinitError(f"field 'mixup_site': {site!r} is not one of {', '.join(choices)}")
    seq2seq = backbone.family is Family.SEQ2SEQ
    if site == MixupSite.AUTO.value:
        return (MixupSite.ENCODER_OUTPUT if seq2seq else MixupSite.FINAL_HIDDEN).value
    if site == MixupSite.ENCODER_OUTPUT.value and not seq2seq:
        raise PromptinitError(
            f"field 'mixup_site': 'encoder_output' needs an encoder-decoder backbone; "
            f"{backbone.config.model} is causal (no encoder); use 'auto' or 'final_hidden'"
        )
    return site


def curriculum_b(s: float, m: float = 2.0) -> float:
    """b = (m^s - 1) / (m - 1): 0 at s = 0, 1 at s = 1 (m > 1)."""
    if m <= 1:
        raise PromptinitError(f"field 'mixup_m': {m} must be > 1 (b = (m^s - 1) / (m - 1))")
    return (m**s - 1) / (m - 1)


def sample_lambda(rng: random.Random, s: float, alpha: float = 1.0, m: float = 2.0) -> float:
    """One mixup coefficient λ ~ Beta(α, α b(s)); exactly 1 when b = 0 (s = 0).

    Args:
        rng: the method's generator (advanced only when b > 0).
        s: the curriculum state in [0, 1].
        alpha: α of the Beta distribution.
        m: the base of b.

    Returns:
        λ in (0, 1].
    """
    b = curriculum_b(s, m)
    if b <= 0:
        return 1.0
    return rng.betavariate(alpha, alpha * b)


def draw_lambdas(
    rng: random.Random, n: int, mode: str, s: float, alpha: float = 1.0, m: float = 2.0, fixed: float = 0.5
) -> list[float]:
    """λ for each of ``n`` tasks under curriculum ``mode`` (beta | fixed | none)."""
    mode = Curriculum(mode)
    if mode is Curriculum.NONE:
        return [1.0] * n
    if mode is Curriculum.FIXED:
        return [float(fixed)] * n
    return [sample_lambda(rng, s, alpha, m) for _ in range(n)]


def ema(s: float, value: float, decay: float = 0.5) -> float:
    """s <- decay s + (1 - decay) value."""
    return decay * s + (1 - decay) * value


def qry_spt_similarity(g_query: torch.Tensor, g_support: torch.Tensor) -> torch.Tensor:
    """(1 + mean over prompt rows of cos(g_query, g_support)) / 2 per task.

    Args:
        g_query: [T, L, d] query gradients at the adapted prompts.
        g_support: [T, L, d] the (regularised) support gradients.

    Returns:
        [T] in [0, 1] (detached).
    """
    cos = F.cosine_similarity(g_query.detach(), g_support.detach().to(g_query.dtype), dim=-1)
    return (1 + cos.mean(-1)) / 2


def mixed_task_losses(
    backbone: Backbone,
    prompt: torch.Tensor,
    query: TaskBatch,
    aug: TaskBatch | None = None,
    lambdas: torch.Tensor | Sequence[float] | None = None,
    site: str = MixupSite.FINAL_HIDDEN.value,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-task loss on the mixed query (see the module docstring) and the mean hidden state.

    Args:
        backbone: the frozen model.
        prompt: [L, d], or [T, L, d] one per task (row t serves both sets of task t).
        query: the query examples of T tasks.
        aug: the aug query examples, example i paired with query example i (same owners);
            None: no mixing.
        lambdas: [T] mixing weights (weight of the query); ignored without ``aug``.
        site: ``final_hidden`` or ``encoder_output`` (seq2seq only; ``resolve_site`` resolves
            ``auto``).

    Returns:
        ``(losses [T], h_mean [T, d])``: each task's mean loss (differentiable in ``prompt``)
        and the detached mean of the (mixed) hidden states over its target positions (with
        ``encoder_output``: the decoder states at the query targets, on the mixture).
        Without ``aug`` the losses equal ``task_losses(backbone, prompt, query)``.
    """
    if aug is not None:
        if aug.owner.shape != query.owner.shape or not torch.equal(aug.owner, query.owner):
            raise PromptinitError(
                "mixup: the aug query set must pair one example with each query example, task by task"
            )
        if torch.as_tensor(lambdas).shape != (query.n_tasks,):
            raise PromptinitError(f"mixup: {tuple(torch.as_tensor(lambdas).shape)} lambdas for {query.n_tasks} tasks")
        if site == MixupSite.ENCODER_OUTPUT.value:
            return _encoder_mixed_losses(backbone, prompt, query, aug, lambdas)
        if site != MixupSite.FINAL_HIDDEN.value:
            raise PromptinitError(
                f"field 'mixup_site': {site!r}: mixed_task_losses takes final_hidden or "
                "encoder_output (resolve auto with resolve_site)"
            )
    per_prompt = prompt[query.owner] if prompt.dim() == 3 else prompt
    h, labels, rows = backbone.target_hidden(per_prompt, query.batch)
    B = len(query.batch)
    tok_owner = query.owner[rows]
    if aug is not None:
        lam = torch.as_tensor(lambdas, dtype=h.dtype, device=h.device)
        aug_prompt = prompt[aug.owner] if prompt.dim() == 3 else prompt
        h_a, labels_a, rows_a = backbone.target_hidden(aug_prompt, aug.batch)
        # position of each target token within its example, aligned from the first answer token
        count_q = torch.bincount(rows, minlength=B)
        count_a = torch.bincount(rows_a, minlength=B)
        start_q = torch.cumsum(count_q, 0) - count_q
        start_a = torch.cumsum(count_a, 0) - count_a
        j = torch.arange(len(rows), device=rows.device) - start_q[rows]
        paired = j < count_a[rows]
        idx = torch.where(paired, start_a[rows] + j, torch.zeros_like(j)).clamp(max=max(len(rows_a) - 1, 0))
        w = torch.where(paired, lam[tok_owner], torch.ones_like(lam[tok_owner]))
        h = w[:, None] * h + (1 - w[:, None]) * h_a[idx]
        logp = torch.log_softmax(upcast_logits(backbone.project(h)), dim=-1)
        lp_q = logp.gather(1, labels[:, None]).squeeze(1)
        lp_a = logp.gather(1, labels_a[idx][:, None]).squeeze(1)
        w = w.to(lp_q.dtype)
        tok = -(w * lp_q + (1 - w) * lp_a)
    else:
        # the same operations, in the same order, as Backbone.loss + task_losses
        tok = -backbone.target_logprobs(h, labels)
    return _task_means(_example_means(tok, rows, B), h, tok_owner, query)


def _example_means(tok: torch.Tensor, rows: torch.Tensor, B: int) -> torch.Tensor:
    """[B] mean of the token losses ``tok`` of each example (``rows``: the token's example)."""
    return Backbone.mean_per_example(-tok, rows, B)[0]


def _task_means(
    per: torch.Tensor, h: torch.Tensor, tok_owner: torch.Tensor, query: TaskBatch
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each task's mean example loss, and the detached mean of ``h`` over its target tokens."""
    T = query.n_tasks
    sums = torch.zeros(T, dtype=per.dtype, device=per.device).index_add(0, query.owner, per)
    counts = torch.bincount(query.owner, minlength=T).to(per.dtype)
    hd = h.detach()
    h_sum = torch.zeros(T, hd.shape[-1], dtype=hd.dtype, device=hd.device).index_add(0, tok_owner, hd)
    h_cnt = torch.bincount(tok_owner, minlength=T).clamp(min=1).to(hd.dtype)
    return sums / counts, h_sum / h_cnt[:, None]


def mix_encoder_outputs(
    enc_q: torch.Tensor, mask_q: torch.Tensor, enc_a: torch.Tensor, mask_a: torch.Tensor, lam: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix two batches of encoder outputs position by position (see the module docstring).

    Args:
        enc_q: query encoder states [B, S_q, d]; ``mask_q`` [B, S_q] marks its real positions.
        enc_a: aug encoder states [B, S_a, d]; ``mask_a`` [B, S_a].
        lam: [B] weight of the query example of each row.

    Returns:
        ``(enc [B, S, d], bias [B, 1, 1, S])``, S = max(S_q, S_a): a position real in both
        inputs holds λ h_q + (1 - λ) h_a and bias 0; one real in one input only holds that
        input's state and bias log λ (query) or log(1 - λ) (aug); the others ``finfo.min``
        (dropped), as the additive mask of ``Backbone.decoder_target_hidden``.
    """
    S = max(enc_q.shape[1], enc_a.shape[1])
    enc_q, enc_a = (F.pad(e, (0, 0, 0, S - e.shape[1])) for e in (enc_q, enc_a))
    in_q, in_a = (F.pad(m, (0, S - m.shape[1])).bool() for m in (mask_q, mask_a))
    lam = lam.to(enc_q.dtype)
    l3 = lam[:, None, None]
    both = (in_q & in_a)[..., None]
    enc = torch.where(both, l3 * enc_q + (1 - l3) * enc_a, torch.where(in_q[..., None], enc_q, enc_a))
    l2 = lam[:, None].expand(-1, S)
    share = torch.where(
        in_q & in_a, torch.ones_like(l2), torch.where(in_q, l2, torch.where(in_a, 1 - l2, torch.zeros_like(l2)))
    )
    low = torch.finfo(enc.dtype).min
    bias = torch.where(share > 0, share.log(), torch.full_like(share, low)).clamp(min=low)
    return enc, bias[:, None, None, :]


def _encoder_mixed_losses(
    backbone: Backbone, prompt: torch.Tensor, query: TaskBatch, aug: TaskBatch, lambdas
) -> tuple[torch.Tensor, torch.Tensor]:
    """``mixed_task_losses`` at the ``encoder_output`` site (seq2seq)."""
    enc_q, mask_q = backbone.encoder_states(prompt[query.owner] if prompt.dim() == 3 else prompt, query.batch)
    enc_a, mask_a = backbone.encoder_states(prompt[aug.owner] if prompt.dim() == 3 else prompt, aug.batch)
    lam_task = torch.as_tensor(lambdas, dtype=torch.float64, device=enc_q.device)
    enc, bias = mix_encoder_outputs(enc_q, mask_q, enc_a, mask_a, lam_task[query.owner])
    B = len(query.batch)
    # The decoder reads the mixture once per target, each teacher-forced on its own tokens.
    h_q, y_q, rows_q = backbone.decoder_target_hidden(enc, bias, query.batch.labels)
    h_a, y_a, rows_a = backbone.decoder_target_hidden(enc, bias, aug.batch.labels)
    lp_q, lp_a = backbone.target_logprobs(h_q, y_q), backbone.target_logprobs(h_a, y_a)
    per_q, per_a = _example_means(-lp_q, rows_q, B), _example_means(-lp_a, rows_a, B)
    w = lam_task[query.owner].to(per_q.dtype)
    return _task_means(w * per_q + (1 - w) * per_a, h_q, query.owner[rows_q], query)
