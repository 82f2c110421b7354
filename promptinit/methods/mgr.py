"""SUPMER's meta-gradient regulariser ψ_φ: a learned, gated map of prompt-gradient rows.

For each row g (one prompt vector's gradient, [d]) of a prompt gradient [L, d]:

    x    = ReLU(U2 V2 ReLU(U1 V1 ĝ + b1) + b2),  rescaled to ‖g‖          (rank r)
    γ    = sigmoid(W2 ReLU(W1 h̄ / ‖h̄‖))                                   (one per task)
    ψ(g) = (1 - γ) x + γ g

h̄ is the detached mean final hidden state of the task's support batch (below). The inner
step of SUPMER is θ' = θ - α ψ(g); φ = (U1, V1, b1, U2, V2, b2, W1, W2) is trained by the
query loss at θ' (exactly: g does not depend on φ) plus the gate's auxiliary loss
``(0.5 domain_sim + 0.5 qry_spt_sim - γ)^2`` (see ``promptinit.methods.supmer``).

Choices made here (the paper and DESIGN.md leave them open):

- **Scale-free input.** The MLP reads the unit row ĝ = g / ‖g‖, not g. Its output is
  rescaled to ‖g‖ anyway, so ψ only learns a *direction* map; reading ĝ makes that map the same
  for gradients of any magnitude, which matters because ψ is reused on downstream
  prompt-tuning gradients whose scale differs from the meta-training ones (and because
  the biases b1, b2 would otherwise dominate tiny gradients). ψ is then positively
  homogeneous: ψ(c g) = c ψ(g) for c > 0. Zero rows stay zero.
- **Gate input.** The gate reads the direction of h̄ (h̄ / ‖h̄‖): hidden-state scales differ
  by orders of magnitude between models, and the gate should react to the domain, not to the
  activation scale. h̄ is the mean of the final hidden states at the positions that predict
  the target tokens (for a causal model the last input token's state and the answer
  positions, which have read the whole input; for seq2seq the decoder states), because those
  are the states the backbone already computes for the loss (``Backbone.target_hidden``).
- **Gate without biases**, exactly as written in DESIGN.md (γ = sigmoid(W2 ReLU(W1 h̄))); with
  the default initialisation γ starts near 0.5.
- **Downstream.** ``as_grad_transform()`` returns ψ as a ``PsiTransform`` for
  ``promptinit.evaluation.tune_prompt(grad_transform=...)``. What its gate reads is the
  ``context`` (``DownstreamContext``):

  - ``batch`` (default, as the released code, ``model/trainer.py:805-836``): the current
    downstream train batch's h̄, the mean final hidden state at its target positions (the
    same quantity as the meta-training h̄; ``Backbone.loss_with_context`` computes it with
    the loss). The transform then *takes* a context: the tuner calls
    ``transform(grad, h_bar)`` (``transform.takes_context`` is True), and calling it without
    one raises.
  - ``reference``: ``h_ref``, the running mean of the support h̄ of every meta-training task
    (stored with φ), so the transform is a fixed function of the gradient (``transform(grad)``).

  ``as_grad_transform(h_bar)`` fixes another context instead.
- **Rank.** The released code's ψ has rank ``min(1920, d)`` (``pretrain_args.py`` ``--rank
  1920``, ``grad_trans.py`` ``mid_dim = min(rank, d)``): full rank for every model up to
  d = 1920. ``code_rank(d)`` gives it; SUPMER's ``mgr_rank: 0`` means it.
- **Initialisation.** U, V, W: Xavier-uniform from a seeded generator (ReLU gain for the layers
  followed by a ReLU); biases zero; ``h_ref`` zero until the first update.

Storage: ``tensors()`` gives φ and the reference as a flat dict of named tensors (what
``promptinit.export.export_prompt(psi_state=...)`` writes to ``psi.safetensors`` and what a
SUPMER checkpoint keeps under ``"psi"``); ``MetaGradRegulariser.from_tensors`` and
``load_regulariser`` rebuild it.

Reference:
    Pan et al. 2023, "Self-Supervised Meta-Prompt Learning with Meta-Gradient Regularization
    for Few-shot Generalization" (SUPMER), sec. 3.3, and its released code
    (``model/grad_trans.py``: row-wise Euclidean rescaling, the gate, the auxiliary loss).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import Enum
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from promptinit.errors import PromptinitError
from promptinit.files import atomic_write

EPS = 1e-12  # rows with a smaller norm count as zero
MLP_KEYS = ("V1", "U1", "b1", "V2", "U2", "b2")
GATE_KEYS = ("W1", "W2")
KEYS = MLP_KEYS + GATE_KEYS + ("h_ref", "h_count")
CODE_RANK = 1920  # the released code's --rank (pretrain_args.py:259-263); capped at d


class DownstreamContext(str, Enum):
    """What ψ's gate reads during downstream prompt tuning."""

    BATCH = "batch"  # the current train batch's mean target hidden state (the released code)
    REFERENCE = "reference"  # h_ref, the running mean of the meta-training support contexts


def code_rank(dim: int) -> int:
    """The released code's ψ rank for prompt width ``dim``: min(1920, d)."""
    return min(CODE_RANK, dim)


def _xavier(shape: tuple[int, int], gen: torch.Generator, gain: float = 1.0) -> torch.Tensor:
    fan_out, fan_in = shape
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound


class MetaGradRegulariser(nn.Module):
    """ψ_φ: maps prompt-gradient rows, gated by the task's mean hidden state.

    Args:
        dim: the prompt width d (the backbone's hidden size).
        rank: rank r of the two d x d maps U V, capped at d (default: the released code's
            1920, i.e. full rank up to d = 1920).
        gate_hidden: width of the gate's hidden layer.
        seed: initialisation.
        dtype: parameter dtype (the prompt's).
        device: parameter device.

    Example:
        >>> psi = MetaGradRegulariser(576)       # rank min(1920, 576) = 576
        >>> out, gamma = psi(grad, h_bar)        # grad [T, L, d], h_bar [T, d]
        >>> tune_prompt(bb, fewshot, init, grad_transform=psi.as_grad_transform())
    """

    # buffers (register_buffer below), declared for the type checker
    h_ref: torch.Tensor  # [d] running mean of the meta-training support contexts
    h_count: torch.Tensor  # [] contexts folded into h_ref

    def __init__(
        self,
        dim: int,
        rank: int = CODE_RANK,
        gate_hidden: int = 24,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        super().__init__()
        if dim < 1 or rank < 1 or gate_hidden < 1:
            raise PromptinitError(f"MetaGradRegulariser: dim/rank/gate_hidden {dim}/{rank}/{gate_hidden} must be >= 1")
        gen = torch.Generator().manual_seed(seed)
        relu_gain = math.sqrt(2.0)

        def param(t: torch.Tensor) -> nn.Parameter:
            return nn.Parameter(t.to(device=device, dtype=dtype))

        r = min(rank, dim)
        self.V1 = param(_xavier((r, dim), gen))
        self.U1 = param(_xavier((dim, r), gen, relu_gain))
        self.b1 = param(torch.zeros(dim))
        self.V2 = param(_xavier((r, dim), gen))
        self.U2 = param(_xavier((dim, r), gen, relu_gain))
        self.b2 = param(torch.zeros(dim))
        self.W1 = param(_xavier((gate_hidden, dim), gen, relu_gain))
        self.W2 = param(_xavier((1, gate_hidden), gen))
        # Running mean of the support h̄ over meta-training: the downstream gate's context.
        self.register_buffer("h_ref", torch.zeros(dim, device=device, dtype=dtype))
        self.register_buffer("h_count", torch.zeros((), device=device, dtype=torch.int64))

    # ------------------------------------------------------------------ the maths
    @property
    def dim(self) -> int:
        return self.V1.shape[1]

    def direction(self, g: torch.Tensor) -> torch.Tensor:
        """x: the MLP of each unit row, rescaled to the row's norm. ``g`` [..., d]."""
        norm = g.norm(dim=-1, keepdim=True)
        unit = g / norm.clamp(min=EPS)
        h = F.relu(unit @ self.V1.T @ self.U1.T + self.b1)
        x = F.relu(h @ self.V2.T @ self.U2.T + self.b2)
        return x / x.norm(dim=-1, keepdim=True).clamp(min=EPS) * norm

    def gate(self, h_bar: torch.Tensor) -> torch.Tensor:
        """γ in (0, 1) for each context row: ``h_bar`` [..., d] -> [...]."""
        h = h_bar.to(self.W1.dtype)
        h = h / h.norm(dim=-1, keepdim=True).clamp(min=EPS)
        return torch.sigmoid(F.relu(h @ self.W1.T) @ self.W2.T).squeeze(-1)

    def forward(self, g: torch.Tensor, h_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ψ(g) and γ.

        Args:
            g: prompt gradient(s) [..., L, d] (one [L, d] block per task).
            h_bar: the blocks' contexts [..., d] (detached mean support hidden states).

        Returns:
            ``(ψ(g) [..., L, d] in g's dtype, γ [...])``.
        """
        if g.shape[-1] != self.dim or h_bar.shape[-1] != self.dim or g.shape[:-2] != h_bar.shape[:-1]:
            raise PromptinitError(
                f"ψ: gradient {list(g.shape)} / context {list(h_bar.shape)} do not fit "
                f"[..., L, {self.dim}] / [..., {self.dim}]"
            )
        g_ = g.to(self.V1.dtype)
        gamma = self.gate(h_bar.detach())
        gam = gamma[..., None, None]
        out = (1 - gam) * self.direction(g_) + gam * g_
        return out.to(g.dtype), gamma

    # ------------------------------------------------------------------ reference context
    @torch.no_grad()
    def update_reference(self, h_bars: torch.Tensor) -> None:
        """Fold the support contexts ``h_bars`` [T, d] into the running mean ``h_ref``."""
        h = h_bars.detach().reshape(-1, self.dim).to(self.h_ref.dtype)
        n, t = int(self.h_count), h.shape[0]
        self.h_ref.copy_((self.h_ref * n + h.sum(0)) / (n + t))
        self.h_count.fill_(n + t)

    def as_grad_transform(
        self, h_bar: torch.Tensor | None = None, context: str = DownstreamContext.BATCH.value
    ) -> PsiTransform:
        """ψ as a gradient map for downstream prompt tuning (no autograd).

        Args:
            h_bar: a fixed gate context [d] (overrides ``context``).
            context: ``batch`` (default): the tuner passes each batch's mean target hidden
                state, ``transform(grad, h_bar)``; ``reference``: the gate reads ``h_ref``, the
                running mean of the meta-training support contexts, ``transform(grad)``.

        Returns:
            A ``PsiTransform`` of a prompt gradient [L, d] (or [..., L, d]).

        Raises:
            PromptinitError: an unknown ``context``, or ``reference`` before any update of
                ``h_ref``.
        """
        if h_bar is not None:
            return PsiTransform(self, h_bar.detach().clone())
        choices = [c.value for c in DownstreamContext]
        if context not in choices:
            raise PromptinitError(f"ψ: field 'downstream_context': {context!r} is not one of {', '.join(choices)}")
        if context == DownstreamContext.BATCH.value:
            return PsiTransform(self, None)
        if int(self.h_count) == 0:
            raise PromptinitError(
                "ψ has no reference context yet (h_count = 0); run SUPMER steps, pass h_bar, or use context='batch'"
            )
        return PsiTransform(self, self.h_ref.detach().clone())

    # ------------------------------------------------------------------ storage
    def tensors(self) -> dict[str, torch.Tensor]:
        """φ and the reference context as named tensors (copies, on the CPU)."""
        return {k: getattr(self, k).detach().cpu().clone() for k in KEYS}

    @torch.no_grad()
    def load_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Copy ``tensors()`` output back in (shapes must match)."""
        missing = [k for k in KEYS if k not in tensors]
        if missing:
            raise PromptinitError(f"ψ tensors: missing {missing} (found {sorted(tensors)}); save them with tensors()")
        for k in KEYS:
            mine = getattr(self, k)
            if tuple(tensors[k].shape) != tuple(mine.shape):
                raise PromptinitError(
                    f"ψ tensors: field {k!r}: shape {list(tensors[k].shape)} does not match {list(mine.shape)}; "
                    "use the rank / gate_hidden / model the regulariser was trained with"
                )
            mine.copy_(tensors[k].to(mine.device, mine.dtype))

    @classmethod
    def from_tensors(
        cls, tensors: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ) -> MetaGradRegulariser:
        """Rebuild ψ from ``tensors()`` (dimensions are read from the shapes)."""
        if "V1" not in tensors or "W1" not in tensors:
            raise PromptinitError(f"ψ tensors: need at least 'V1' and 'W1' (found {sorted(tensors)})")
        rank, dim = tensors["V1"].shape
        psi = cls(int(dim), rank=int(rank), gate_hidden=int(tensors["W1"].shape[0]), dtype=dtype, device=device)
        psi.load_tensors(tensors)
        return psi


class PsiTransform:
    """ψ applied to downstream prompt gradients (``MetaGradRegulariser.as_grad_transform``).

    A tuner calls ``transform(grad)`` when ``takes_context`` is False (the gate reads the
    fixed context), and ``transform(grad, h_bar)`` with the current batch's mean target hidden
    state [d] when it is True (``Backbone.loss_with_context``).

    Args:
        psi: the regulariser (its current parameters are used at every call).
        context: the fixed gate context [d], or None: each call passes its own.
    """

    def __init__(self, psi: MetaGradRegulariser, context: torch.Tensor | None):
        self.psi = psi
        self.context = context
        self.takes_context = context is None

    def __call__(self, grad: torch.Tensor, h_bar: torch.Tensor | None = None) -> torch.Tensor:
        """ψ(grad) with the gate reading ``h_bar`` [d] (or the fixed context)."""
        if h_bar is None:
            if self.context is None:
                raise PromptinitError(
                    "ψ's gate reads the current batch's hidden states (downstream_context 'batch'): call "
                    "transform(grad, h_bar) with the batch's mean target hidden state (Backbone.loss_with_context), "
                    "or build the transform with context='reference'"
                )
            h_bar = self.context
        with torch.no_grad():
            h = h_bar.detach().to(grad.device).expand(*grad.shape[:-2], self.psi.dim)
            return self.psi(grad, h)[0]


def save_regulariser(psi: MetaGradRegulariser, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write ψ's named tensors as one safetensors file (atomically)."""
    from safetensors.torch import save

    return atomic_write(path, save({k: v.contiguous() for k, v in psi.tensors().items()}, metadata=metadata))


def load_regulariser(path: str | Path, device: torch.device | str = "cpu") -> MetaGradRegulariser:
    """ψ from a safetensors file or an export folder (its ``psi.safetensors``).

    Raises:
        PromptinitError: no such file, or the folder has no ψ (not a SUPMER export).
    """
    from safetensors.torch import load_file

    from promptinit.export import PSI, load_psi

    path = Path(path).expanduser()
    if path.is_dir():
        tensors = load_psi(path)
        if tensors is None:
            raise PromptinitError(f"{path}: no {PSI} (only SUPMER exports with use_mgr carry ψ)")
    elif path.is_file():
        tensors = load_file(str(path))
    else:
        raise PromptinitError(f"{path}: no such ψ file or export folder")
    return MetaGradRegulariser.from_tensors(tensors, device=device)
