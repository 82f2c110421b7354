"""SUPMER: self-supervised meta-tasks, curriculum mixup and meta-gradient regularisation.

One outer step (``SUPMER.step``):

1. Draw ``meta_batch_size`` meta-tasks from the clustered unlabelled corpus
   (``promptinit.selfsup``: nsp, nss, scsp, scss, scc), each with a support, a query and an
   "aug" query set from other clusters; draw one mixup λ per task (``mixup``).
2. Inner step per task t: g_t = ∇ L_support(θ); θ'_t = θ - α ψ_φ(g_t, h̄_t) (``mgr``), or
   θ - α g_t without the regulariser.
3. Outer loss: the mixed query loss at θ'_t (``mixup``: encoder outputs mixed for seq2seq
   backbones, final hidden states for causal ones). θ gets its first-order gradient (the query
   gradient at θ'_t, as FoMAML), φ its exact gradient (g_t does not depend on φ), plus the
   gate's auxiliary loss (γ_t - (0.5 domain_sim_t + 0.5 qry_spt_sim_t))^2 where
   ``domain_sim_t = (1 + cos(c_t, c_aug))/2`` compares the mean K-means centroid
   (sentence-encoder space) of the task's cluster(s) with that of its aug cluster(s) (scc
   tasks have four), and ``qry_spt_sim_t = (1 + mean_rows cos(g_query_t, ψ(g_t)))/2`` measures
   how well the regularised support step pointed along the query gradient (both detached; as
   the released code).
4. Adam on θ (lr 0.1) and on φ (lr 1e-4), each gradient clipped to norm 1.0, both learning
   rates decaying linearly to 0 over ``steps`` without warm-up (``lr_factor``; the released
   code's ``get_scheduler("linear")``); the curriculum state s <- 0.5 s + 0.5 mean_t
   qry_spt_sim_t; ψ's reference context ``h_ref`` absorbs the step's support contexts.

The inner lr α stays ``inner_lr`` (0.1): the released code sets the meta-learner's
``inner_lr_1`` to θ's decayed lr every epoch (``pretrain.py:270``), but its inner step reads
``self.args.inner_lr_1``, the constant command-line value (``model/meta.py:143``).
``inner_lr_decay=True`` scales α by the same factor as θ's lr (what ``pretrain.py:270``
appears to intend).

With ``use_mgr=False`` and ``curriculum="none"`` a step is exactly first-order MAML on the
self-supervised tasks (``meta_gradient`` equals FoMAML's), apart from the gradient clipping.

The state (prompt, both optimizers, ψ's tensors, the sampler's and the λ generator's state,
s) round-trips through ``state_dict`` / ``save_checkpoint``: a reloaded run continues bit for
bit. The learning rates are a pure function of the step counter and the config, so they
resume with it; with the linear schedule a run resumes only with its own ``steps``.
``grad_transform`` is ψ for downstream prompt tuning (``tune_prompt(grad_transform=...)``);
by default its gate reads each downstream batch's hidden states, as the released code.

Reference:
    Pan et al. 2023, "Self-Supervised Meta-Prompt Learning with Meta-Gradient Regularization
    for Few-shot Generalization" (SUPMER, EMNLP Findings), and its released code.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from promptinit.backbones import Backbone
from promptinit.errors import PromptinitError
from promptinit.methods.base import Method, register
from promptinit.methods.common import (
    GRAD_NORM,
    OPTIMIZERS,
    QUERY_LOSS,
    SUPPORT_LOSS,
    PromptMethod,
    check_choice,
    check_int,
    check_positive,
    check_rows_per_pass,
    outer_optimizer,
)
from promptinit.methods.inner import TaskBatch
from promptinit.methods.mgr import DownstreamContext, MetaGradRegulariser, PsiTransform, code_rank
from promptinit.methods.mixup import (
    Curriculum,
    MixupSite,
    draw_lambdas,
    ema,
    mixed_task_losses,
    qry_spt_similarity,
    resolve_site,
)
from promptinit.selfsup.clustering import DEFAULT_ENCODER, ClusterConfig, Clusters, cluster_corpus
from promptinit.selfsup.corpus import DEFAULT_SOURCES, Corpus, CorpusConfig, build_corpus
from promptinit.selfsup.formats import FORMATS, SelfSupTaskSampler
from promptinit.selfsup.metatask import MetaTask
from promptinit.tasks.task import Task

# Metric names.
CURRICULUM_S = "supmer/curriculum_s"  # the EMA s after the step
LAMBDA = "supmer/lambda"  # mean mixup λ of the step's tasks
GATE = "supmer/gate"  # mean γ
GATE_LOSS = "supmer/gate_loss"  # mean auxiliary loss of the gate
QRY_SPT_SIM = "supmer/qry_spt_sim"  # mean (1 + cos(g_query, ψ(g_support))) / 2
PHI_GRAD_NORM = "supmer/phi_grad_norm"
LR_FACTOR = "supmer/lr_factor"  # the step's learning-rate factor (1 at the first step; linear: 1/steps at the last)

LR_SCHEDULES = ("linear", "constant")


def lr_factor(schedule: str, step: int, steps: int) -> float:
    """Learning-rate multiplier of outer step ``step`` (0-based) of a ``steps``-step run.

    ``linear``: (steps - step) / steps, floored at 0: the released code's
    ``transformers.get_scheduler("linear", num_warmup_steps=0)``, stepped after every outer
    step, so the first step uses the full lr and the last one lr / steps. ``constant``: 1.
    """
    if schedule == "constant":
        return 1.0
    return max(0.0, (steps - step) / max(1, steps))


def _tuple(cfg: Any, name: str) -> None:
    value = getattr(cfg, name)
    if isinstance(value, str):
        value = tuple(v.strip() for v in value.replace(",", " ").split())
    if isinstance(value, list):
        value = tuple(value)
    object.__setattr__(cfg, name, value)


@dataclass(frozen=True)
class SUPMERConfig:
    """SUPMER settings (defaults: Pan et al. 2023 and the released code, beepkh/SUPMER).

    Attributes:
        steps: outer steps of a full run (the released run: 100,000); the linear schedule
            decays over them.
        inner_lr: step size α of the inner update θ' = θ - α ψ(g).
        outer_lr: learning rate of the prompt θ (Adam), at step 0.
        outer_optimizer: adam (the paper's) | adafactor | sgd.
        phi_lr: learning rate of ψ's parameters φ (Adam), at step 0.
        lr_schedule: linear (the released code: θ's and φ's lrs fall linearly to 0 over
            ``steps``, no warm-up) | constant.
        inner_lr_decay: scale α by the schedule's factor too (False: constant α, which is
            what the released code runs).
        meta_batch_size: tasks per outer step.
        inner_batch_size: support examples per task (the released code: 16 in every format).
        query_batch_size: query examples per task (and aug query examples; the code: 16).
        max_grad_norm: clip θ's and φ's gradients to this norm each (0: no clipping).
        use_mgr: apply the meta-gradient regulariser ψ (False: plain inner SGD).
        mgr_rank: rank r of ψ's two d x d maps; 0: the released code's min(1920, d), i.e.
            full rank for models up to d = 1920.
        gate_hidden: width of the gate's hidden layer (the released code: 24).
        gate_loss_weight: weight of the gate's auxiliary loss in φ's objective.
        downstream_mgr: expose ψ as ``grad_transform`` for downstream tuning.
        downstream_context: what ψ's gate reads downstream: batch (each train batch's mean
            target hidden state, as the released code) | reference (the fixed running mean
            ``h_ref`` of the meta-training support contexts).
        mixup_site: auto | encoder_output | final_hidden (``promptinit.methods.mixup``; auto:
            encoder outputs for seq2seq backbones, as the released code, final hidden states
            for causal ones, which have no encoder).
        curriculum: beta (SUPMER) | fixed | none (ablations).
        fixed_lambda: λ of every task when ``curriculum="fixed"``.
        mixup_alpha: α of λ ~ Beta(α, α b).
        mixup_m: m of b = (m^s - 1)/(m - 1); > 1.
        curriculum_decay: decay of the EMA s.
        corpus_sources: the unlabelled corpus (``promptinit.selfsup.corpus`` source strings).
        max_sentences: corpus cap in sentences (None: all).
        num_clusters: K of K-means (the paper: 250 on a large corpus; 50 suits 6,000 sentences).
        encoder: sentence encoder of the clustering.
        cluster_seed: K-means seed (not the method seed, so trials share the cached clusters).
        formats: the task formats drawn (uniformly).
        scc_vectors: token_mean | projection (``promptinit.selfsup.scc``).
        max_option_words: nss/scss option sentences are cut to this many words.
        task_batched: batched forward/backward passes over the meta-batch.
        rows_per_pass: rows per batched pass; 0: measured per backbone and device
            (``promptinit.throughput``).
    """

    steps: int = 100_000  # outer steps
    inner_lr: float = 0.1  # inner SGD step size α
    outer_lr: float = 0.1  # lr of θ at step 0
    outer_optimizer: str = "adam"
    phi_lr: float = 1e-4  # lr of φ (Adam) at step 0
    lr_schedule: str = "linear"  # linear | constant
    inner_lr_decay: bool = False  # α follows the schedule too
    meta_batch_size: int = 4  # tasks per outer step
    inner_batch_size: int = 16  # support examples per task
    query_batch_size: int = 16  # query (and aug query) examples per task
    max_grad_norm: float = 1.0  # per parameter group; 0 = off
    use_mgr: bool = True
    mgr_rank: int = 0  # 0: min(1920, d)
    gate_hidden: int = 24
    gate_loss_weight: float = 1.0
    downstream_mgr: bool = True
    downstream_context: str = DownstreamContext.BATCH.value  # batch | reference
    mixup_site: str = MixupSite.AUTO.value  # auto | encoder_output | final_hidden
    curriculum: str = Curriculum.BETA.value  # beta | fixed | none
    fixed_lambda: float = 0.5
    mixup_alpha: float = 1.0
    mixup_m: float = 2.0
    curriculum_decay: float = 0.5
    corpus_sources: tuple[str, ...] = DEFAULT_SOURCES
    max_sentences: int | None = 6000  # sentences
    num_clusters: int = 50  # K
    encoder: str = DEFAULT_ENCODER
    cluster_seed: int = 0
    formats: tuple[str, ...] = FORMATS
    scc_vectors: str = "token_mean"
    max_option_words: int = 24  # words
    task_batched: bool = True
    rows_per_pass: int = 0  # rows per pass; 0: measured per backbone and device

    def __post_init__(self) -> None:
        _tuple(self, "corpus_sources")
        _tuple(self, "formats")
        check_int(self, "steps", minimum=0)
        check_positive(self, "inner_lr", "outer_lr", "phi_lr", "mixup_alpha")
        check_int(self, "meta_batch_size", "inner_batch_size", "query_batch_size", "gate_hidden", "max_option_words")
        check_int(self, "mgr_rank", minimum=0)
        check_int(self, "num_clusters", minimum=5)
        check_int(self, "cluster_seed", minimum=0)
        check_choice(self, "outer_optimizer", OPTIMIZERS)
        check_choice(self, "curriculum", [c.value for c in Curriculum])
        check_choice(self, "lr_schedule", LR_SCHEDULES)
        check_choice(self, "downstream_context", [c.value for c in DownstreamContext])
        check_choice(self, "mixup_site", [m.value for m in MixupSite])
        check_choice(self, "scc_vectors", ["token_mean", "projection"])
        for name in ("use_mgr", "downstream_mgr", "task_batched", "inner_lr_decay"):
            if not isinstance(getattr(self, name), bool):
                raise PromptinitError(f"SUPMERConfig: field {name!r}: {getattr(self, name)!r} must be true or false")
        check_rows_per_pass(self)
        if not isinstance(self.max_grad_norm, (int, float)) or self.max_grad_norm < 0:
            raise PromptinitError(
                f"SUPMERConfig: field 'max_grad_norm': {self.max_grad_norm!r} must be >= 0 (0: no clipping)"
            )
        if not isinstance(self.gate_loss_weight, (int, float)) or self.gate_loss_weight < 0:
            raise PromptinitError(f"SUPMERConfig: field 'gate_loss_weight': {self.gate_loss_weight!r} must be >= 0")
        if not 0 <= self.fixed_lambda <= 1:
            raise PromptinitError(f"SUPMERConfig: field 'fixed_lambda': {self.fixed_lambda!r} must be in [0, 1]")
        if not self.mixup_m > 1:
            raise PromptinitError(f"SUPMERConfig: field 'mixup_m': {self.mixup_m!r} must be > 1, e.g. 2.0")
        if not 0 <= self.curriculum_decay < 1:
            raise PromptinitError(
                f"SUPMERConfig: field 'curriculum_decay': {self.curriculum_decay!r} must be in [0, 1), e.g. 0.5"
            )
        if not self.formats or any(f not in FORMATS for f in self.formats):
            raise PromptinitError(
                f"SUPMERConfig: field 'formats': {list(self.formats)!r} must be a non-empty subset of {list(FORMATS)}"
            )
        if not self.corpus_sources:
            raise PromptinitError("SUPMERConfig: field 'corpus_sources': empty; name at least one source, e.g. ['bbc']")
        if self.max_sentences is not None:
            check_int(self, "max_sentences", minimum=100)


@dataclass
class Outcome:
    """Everything one meta-batch yields (``SUPMER.outer_gradients``).

    Attributes:
        theta_grad: θ's meta-gradient [L, d] (mean over tasks).
        phi_grads: φ's gradients by parameter name (mean over tasks), empty without ψ.
        metrics: query/support loss, λ, γ, gate loss, qry_spt_sim (means over tasks).
        qry_spt_sim: batch mean of (1 + cos(g_query, ψ(g_support)))/2 (the curriculum's input).
        support_h: [T, d] the tasks' detached mean support hidden states.
    """

    theta_grad: torch.Tensor
    phi_grads: dict[str, torch.Tensor]
    metrics: dict[str, float]
    qry_spt_sim: float
    support_h: torch.Tensor = field(repr=False)


@register(Method.SUPMER.value, SUPMERConfig)
class SUPMER(PromptMethod[MetaTask]):
    """SUPMER meta-prompt learning on self-supervised meta-tasks.

    Args:
        backbone: the frozen model.
        tasks: ignored (SUPMER learns from the unlabelled corpus; kept for the common
            constructor, so a partition's source tasks can be passed as for any method).
        config: ``SUPMERConfig``.
        seed: the initial prompt, ψ's initialisation, the task sampler and the λ draws.
        init: start from this prompt [L, d].
        corpus: use this corpus instead of building one from ``config.corpus_sources``.
        clusters: its clusters (built and cached from the config when omitted).

    Example:
        >>> m = build_method("supmer", backbone, [], {"num_clusters": 50, "steps": 1000})
        >>> for _ in range(1000):   # θ's and φ's lrs fall linearly to 0 over the 1000 steps
        ...     metrics = m.step()
        >>> tune_prompt(backbone, fewshot, m.prompt, grad_transform=m.grad_transform)
    """

    config: SUPMERConfig
    sampler: SelfSupTaskSampler  # type: ignore[assignment]  # self-supervised tasks, not the base's source tasks

    def __init__(
        self,
        backbone: Backbone,
        tasks: Sequence[Task],
        config: SUPMERConfig,
        seed: int = 0,
        init: torch.Tensor | None = None,
        corpus: Corpus | None = None,
        clusters: Clusters | None = None,
    ):
        super().__init__(backbone, tasks, config, seed=seed, init=init)
        c = config
        self.mixup_site = resolve_site(c.mixup_site, backbone)  # raises early for encoder_output on a causal model
        if corpus is None:
            corpus = build_corpus(CorpusConfig(sources=c.corpus_sources, max_sentences=c.max_sentences))
        if clusters is None:
            clusters = cluster_corpus(
                corpus, ClusterConfig(k=c.num_clusters, encoder=c.encoder, seed=c.cluster_seed), progress=False
            )
        self.corpus, self.clusters = corpus, clusters
        self.sampler = SelfSupTaskSampler(
            corpus,
            clusters,
            c.formats,
            n_support=c.inner_batch_size,
            n_query=c.query_batch_size,
            seed=seed,
            max_option_words=c.max_option_words,
        )
        self.vectors = None
        if "scc" in c.formats:
            from promptinit.selfsup.scc import cluster_input_vectors

            self.vectors = cluster_input_vectors(backbone, corpus, clusters, c.scc_vectors)
        self._raw_centroids = torch.as_tensor(np.asarray(clusters.centroids), dtype=torch.float64)
        p = self.state.prompt
        self.psi: MetaGradRegulariser | None = None
        self.psi_optimizer: torch.optim.Optimizer | None = None
        if c.use_mgr:
            rank = c.mgr_rank or code_rank(p.shape[-1])
            self.psi = MetaGradRegulariser(p.shape[-1], rank, c.gate_hidden, seed=seed, dtype=p.dtype, device=p.device)
            self.psi_optimizer = torch.optim.Adam(self.psi.parameters(), lr=c.phi_lr)
        self.curriculum_s = 0.0  # the EMA s; 0 at the start, so early λ = 1

    def _make_optimizer(self, prompt: torch.Tensor):
        return outer_optimizer(prompt, self.config.outer_optimizer, self.config.outer_lr)

    # ------------------------------------------------------------------ sampling
    def sample(self) -> list[MetaTask]:
        """The next meta-batch of self-supervised tasks (the sampler's own generator)."""
        return [self.sampler.sample() for _ in range(self.config.meta_batch_size)]

    def lambdas(self, n: int) -> list[float]:
        """Mixup λ for ``n`` tasks at the current curriculum state (advances the generator)."""
        c = self.config
        return draw_lambdas(
            self.state.rng, n, c.curriculum, self.curriculum_s, c.mixup_alpha, c.mixup_m, c.fixed_lambda
        )

    # ------------------------------------------------------------------ schedules
    def lr_factor_at(self, step: int | None = None) -> float:
        """The learning-rate factor of outer step ``step`` (default: the next one)."""
        c = self.config
        return lr_factor(c.lr_schedule, self.state.step if step is None else step, c.steps)

    def inner_lr_at(self, step: int | None = None) -> float:
        """α of outer step ``step`` (default: the next one)."""
        c = self.config
        return c.inner_lr * (self.lr_factor_at(step) if c.inner_lr_decay else 1.0)

    @property
    def grad_transform(self) -> PsiTransform | None:
        """ψ for downstream prompt tuning, or None without the regulariser or with
        ``downstream_mgr`` off. With ``downstream_context: batch`` the tuner passes each
        batch's context (``transform(grad, h_bar)``; ``transform.takes_context``); with
        ``reference`` the gate reads ``h_ref``, and there is no transform before the first step."""
        c = self.config
        if self.psi is None or not c.downstream_mgr:
            return None
        if c.downstream_context == DownstreamContext.REFERENCE.value and int(self.psi.h_count) == 0:
            return None
        return self.psi.as_grad_transform(context=c.downstream_context)

    def psi_tensors(self) -> dict[str, torch.Tensor] | None:
        """ψ as named tensors (for ``export_prompt(psi_state=...)``), or None without it."""
        return None if self.psi is None else self.psi.tensors()

    # ------------------------------------------------------------------ the maths
    def _encode(self, tasks: Sequence[MetaTask], which: str) -> TaskBatch:
        groups = [getattr(t, which) for t in tasks]
        if self.vectors is None or not any(t.option_clusters for t in tasks):
            return TaskBatch.encode(self.backbone, groups)
        from promptinit.selfsup.scc import encode_with_markers

        # Marker-free inputs tokenise exactly as Backbone.encode does, so one call serves all.
        shown: dict[str, tuple[int, ...]] = {}
        for t in tasks:
            shown.update(t.option_clusters)
        examples = [ex for g in groups for ex in g]
        batch, injection = encode_with_markers(self.backbone, examples, shown, self.vectors)
        batch.inject = injection if len(injection.rows) else None
        owner = torch.tensor([i for i, g in enumerate(groups) for _ in g], device=self.backbone.device)
        return TaskBatch(batch, owner, len(groups))

    def _domain_sim(self, tasks: Sequence[MetaTask]) -> torch.Tensor:
        """(1 + cos)/2 of the mean centroid of each task's clusters and of its aug clusters
        (one cluster each, four for scc; the released code's ``get_domain_sim``)."""

        def mean(ids: Sequence[int]) -> torch.Tensor:
            return self._raw_centroids[list(ids)].mean(0)

        a = torch.stack([mean(t.clusters) for t in tasks])
        b = torch.stack([mean(t.aug_clusters or t.clusters) for t in tasks])
        return (1 + torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12)) / 2

    def outer_gradients(
        self, meta_tasks: Sequence[MetaTask], lambdas: Sequence[float] | None = None, task_batched: bool | None = None
    ) -> Outcome:
        """θ's first-order meta-gradient, φ's exact gradient and the step's statistics.

        Args:
            meta_tasks: the meta-batch.
            lambdas: one mixup λ per task (default: all 1, the plain query loss).
            task_batched: one batched pass (default: the config's) or one pass per task.

        Returns:
            An ``Outcome``; nothing in the method changes.
        """
        n = len(meta_tasks)
        lambdas = [1.0] * n if lambdas is None else [float(v) for v in lambdas]
        if len(lambdas) != n:
            raise PromptinitError(f"{len(lambdas)} lambdas for {n} tasks")
        order = list(range(n))
        c = self.config
        groups = self._task_groups(
            order,
            task_batched,
            max(c.inner_batch_size, c.query_batch_size),
            [ex for t in meta_tasks for ex in (*t.support, *t.query)],
        )
        phi = self.state.prompt
        theta_grad = torch.zeros_like(phi)
        phi_grads = {k: torch.zeros_like(v) for k, v in self.psi.named_parameters()} if self.psi is not None else {}
        sums = {QUERY_LOSS: 0.0, SUPPORT_LOSS: 0.0, GATE: 0.0, GATE_LOSS: 0.0, QRY_SPT_SIM: 0.0}
        support_h: list[torch.Tensor] = []
        for idx in groups:
            self._group(
                phi, [meta_tasks[i] for i in idx], [lambdas[i] for i in idx], theta_grad, phi_grads, sums, support_h
            )
        metrics = {k: v / n for k, v in sums.items()}
        metrics[LAMBDA] = sum(lambdas) / n
        if self.psi is None:
            metrics.pop(GATE)
            metrics.pop(GATE_LOSS)
        return Outcome(
            theta_grad / n,
            {k: g / n for k, g in phi_grads.items()},
            metrics,
            metrics[QRY_SPT_SIM],
            torch.cat(support_h),
        )

    def _group(
        self,
        phi: torch.Tensor,
        tasks: list[MetaTask],
        lambdas: list[float],
        theta_grad: torch.Tensor,
        phi_grads: dict[str, torch.Tensor],
        sums: dict[str, float],
        support_h: list,
    ) -> None:
        """Add the gradients and statistics of ``tasks`` (one batched pass) to the accumulators."""
        c, bb, T = self.config, self.backbone, len(tasks)
        alpha = self.inner_lr_at()
        support = self._encode(tasks, "support")
        query = self._encode(tasks, "query")
        mixing = any(v < 1.0 for v in lambdas)
        aug = self._encode(tasks, "aug_query") if mixing else None
        # inner step: one prompt row per task (the rows' gradients are the tasks' own)
        p = phi.detach().expand(T, *phi.shape).clone().requires_grad_(True)
        s_losses, s_h = mixed_task_losses(bb, p, support)
        (g_s,) = torch.autograd.grad(s_losses.sum(), p)
        if self.psi is None:
            step_dir = g_s
            theta_q = (p - alpha * g_s).detach().requires_grad_(True)  # as inner.adapt, first order
        else:
            step_dir, _ = self.psi(g_s, s_h)  # differentiable in φ; g_s is a constant for φ
            theta_q = p.detach() - alpha * step_dir
        # outer loss at the adapted prompts
        q_losses, _ = mixed_task_losses(bb, theta_q, query, aug, lambdas if mixing else None, self.mixup_site)
        params = list(self.psi.named_parameters()) if self.psi is not None else []
        grads = torch.autograd.grad(q_losses.sum(), [theta_q] + [v for _, v in params], allow_unused=True)
        g_q = grads[0]
        theta_grad += g_q.sum(0)
        sim = qry_spt_similarity(g_q, step_dir.detach())
        for (name, _), g in zip(params, grads[1:], strict=True):
            if g is not None:
                phi_grads[name] += g
        if self.psi is not None:
            # the gate's auxiliary loss: γ should follow the domain and gradient similarities
            gamma = self.psi.gate(s_h)
            target = (0.5 * self._domain_sim(tasks).to(gamma) + 0.5 * sim.to(gamma)).detach()
            aux = ((target - gamma) ** 2).sum()
            w1, w2 = torch.autograd.grad(c.gate_loss_weight * aux, [self.psi.W1, self.psi.W2])
            phi_grads["W1"] += w1
            phi_grads["W2"] += w2
            sums[GATE] += gamma.sum().item()
            sums[GATE_LOSS] += aux.item()
        sums[QUERY_LOSS] += q_losses.sum().item()
        sums[SUPPORT_LOSS] += s_losses.sum().item()
        sums[QRY_SPT_SIM] += sim.sum().item()
        support_h.append(s_h)

    def meta_gradient(
        self, meta_tasks: Sequence[MetaTask], task_batched: bool | None = None, lambdas: Sequence[float] | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """θ's meta-gradient and metrics for ``meta_tasks`` (default: λ = 1, no mixing).

        Returns:
            ``(grad [L, d], metrics)``, as every method's ``meta_gradient``.
        """
        out = self.outer_gradients(meta_tasks, lambdas, task_batched)
        return out.theta_grad, out.metrics

    # ------------------------------------------------------------------ the outer step
    def step(self) -> dict[str, float]:
        """One outer step (see the module docstring).

        Returns:
            ``meta/query_loss`` (mixed), ``meta/support_loss``, ``meta/grad_norm`` (before
            clipping), ``supmer/lambda``, ``supmer/qry_spt_sim``, ``supmer/curriculum_s``,
            ``supmer/lr_factor`` and, with ψ, ``supmer/gate``, ``supmer/gate_loss``,
            ``supmer/phi_grad_norm``.
        """
        c = self.config
        # The lrs are set from the step counter (a pure function), so a resumed run gets them too.
        factor = self.lr_factor_at()
        for group in self.optimizer.param_groups:
            group["lr"] = c.outer_lr * factor
        if self.psi_optimizer is not None:
            for group in self.psi_optimizer.param_groups:
                group["lr"] = c.phi_lr * factor
        tasks = self.sample()
        out = self.outer_gradients(tasks, self.lambdas(len(tasks)))
        metrics = dict(out.metrics)
        metrics[LR_FACTOR] = factor
        p = self.state.prompt
        p.grad = out.theta_grad.to(p.dtype)
        metrics[GRAD_NORM] = float(p.grad.norm())
        if c.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_([p], c.max_grad_norm)
        self.optimizer.step()
        p.grad = None
        if self.psi is not None and self.psi_optimizer is not None:  # set together (use_mgr)
            params = dict(self.psi.named_parameters())
            for name, g in out.phi_grads.items():
                params[name].grad = g.to(params[name].dtype)
            metrics[PHI_GRAD_NORM] = float(torch.stack([g.norm() for g in out.phi_grads.values()]).norm())
            if c.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(list(params.values()), c.max_grad_norm)
            self.psi_optimizer.step()
            self.psi_optimizer.zero_grad(set_to_none=True)
            self.psi.update_reference(out.support_h)
        self.curriculum_s = ema(self.curriculum_s, out.qry_spt_sim, c.curriculum_decay)
        metrics[CURRICULUM_S] = self.curriculum_s
        self.state.step += 1
        return metrics

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The base snapshot plus ``psi`` (named tensors), ``psi_optimizer``, ``sampler`` and
        ``curriculum`` (s)."""
        state = super().state_dict()
        state["psi"] = self.psi_tensors()
        state["psi_optimizer"] = copy.deepcopy(self.psi_optimizer.state_dict()) if self.psi_optimizer else None
        state["sampler"] = self.sampler.state_dict()
        state["curriculum"] = {"s": self.curriculum_s}
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``state_dict()``; the next ``step()`` equals the uninterrupted run's.

        Raises:
            PromptinitError: as ``PromptMethod.load_state_dict``, and a different ``steps`` under
                the linear schedule (the lrs decay over the run's own length).
        """
        theirs = (state.get("config") or {}).get("steps")
        if (
            state.get("method") == self.name
            and self.config.lr_schedule == "linear"
            and theirs is not None
            and theirs != self.config.steps
        ):
            raise PromptinitError(
                f"checkpoint config differs in ['steps']: field 'steps' is {theirs!r} there, {self.config.steps!r} "
                f"here; lr_schedule 'linear' decays the learning rates over the run's own steps, so resume with "
                f"steps={theirs}, or train with lr_schedule='constant' to extend runs"
            )
        super().load_state_dict(state)
        if self.psi is not None and self.psi_optimizer is not None:  # set together (use_mgr)
            if not state.get("psi"):
                raise PromptinitError("checkpoint has no ψ tensors although use_mgr is set; resume with its settings")
            self.psi.load_tensors(state["psi"])
            self.psi_optimizer.load_state_dict(copy.deepcopy(dict(state["psi_optimizer"])))
        self.sampler.load_state_dict(dict(state["sampler"]))
        self.curriculum_s = float(state["curriculum"]["s"])
