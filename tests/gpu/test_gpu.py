"""On a CUDA GPU: every tensor where it belongs, bfloat16 that scores and tunes like float32,
and four trials of a quarter GPU each running at the same time on one GPU.

Marked ``gpu``: skipped without CUDA (``tests/gpu/conftest.py``). ``benchmarks/gpu_check.sh``
runs them with the GPU benchmarks and the demo's smoke test.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import pytest
import torch

from promptinit import batched, evaluation
from promptinit.backbones import Backbone, BackboneConfig
from promptinit.batched import TuneProblem, tune_prompts
from promptinit.evaluation import TuneConfig, tune_prompt
from promptinit.methods import REGISTRY, build_method
from promptinit.selfsup import clustering
from promptinit.selfsup.clustering import ClusterConfig, cluster_corpus
from promptinit.selfsup.corpus import build_corpus
from promptinit.tasks.fewshot import sample_few_shot
from promptinit.tasks.task import Example
from tests.conftest import CAUSAL, SEQ2SEQ, fresh_cache, keyword_task
from tests.methods.conftest import source_tasks
from tests.methods.test_methods import EVERY, SELFSUP, SETTINGS
from tests.methods.test_supmer import SLICE, hashed_bow

pytestmark = pytest.mark.gpu

ROOT = Path(__file__).resolve().parents[2]
ROWS = 64  # a fixed pass size: no throughput probe (its cache is not what these tests are about)


def cuda_backbone(model: str = CAUSAL, dtype: str = "float32", prompt_length: int = 4) -> Backbone:
    return Backbone(BackboneConfig(model, prompt_length=prompt_length, dtype=dtype, device="cuda"))


def not_on_cuda(named: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """The names (and devices) of the tensors that are not on a CUDA device."""
    return [f"{name} on {t.device}" for name, t in named if t.device.type != "cuda"]


def optimizer_tensors(opt: torch.optim.Optimizer) -> list[tuple[str, torch.Tensor]]:
    """Every parameter of ``opt``, its gradient and its non-scalar state tensors, by name.

    Scalar state (Adam's ``step`` counter) is left out: torch keeps it on the CPU on purpose,
    so reading it never waits for the GPU.
    """
    out = []
    for g, group in enumerate(opt.param_groups):
        for i, p in enumerate(group["params"]):
            out.append((f"param {g}.{i}", p))
            if p.grad is not None:
                out.append((f"grad {g}.{i}", p.grad))
            out += [(f"state {g}.{i} {k}", v) for k, v in opt.state.get(p, {}).items()
                    if torch.is_tensor(v) and v.dim() > 0]
    return out


@pytest.fixture
def optimizers(monkeypatch) -> list[torch.optim.Optimizer]:
    """The optimisers ``tune_prompt`` / ``tune_prompts`` create, in order (they keep them local)."""
    made: list[torch.optim.Optimizer] = []

    def spy(params, name, lr):
        made.append(real(params, name, lr))
        return made[-1]

    real = evaluation.make_optimizer
    monkeypatch.setattr(evaluation, "make_optimizer", spy)
    monkeypatch.setattr(batched, "make_optimizer", spy)
    return made


def fewshot(seed: int = 100, test_size: int = 16):
    return sample_few_shot(keyword_task(), seed, test_size=test_size)


# --------------------------------------------------------------------------- device placement


@pytest.mark.parametrize("model", [CAUSAL, SEQ2SEQ])
def test_backbone_weights_batches_prompts_and_outputs_are_on_cuda(model):
    assert BackboneConfig(model, device="auto").resolved_device().type == "cuda"
    bb = cuda_backbone(model)
    assert bb.device.type == "cuda"
    assert not_on_cuda([*bb.model.named_parameters(), *bb.model.named_buffers()]) == []
    examples = list(keyword_task(n=8).examples)
    batch = bb.encode(examples)
    assert not_on_cuda([(k, v) for k, v in vars(batch).items() if torch.is_tensor(v)]) == []
    prompts = {how: bb.init_prompt(how, seed=0, text="good or bad") for how in ("vocab", "text", "random")}
    assert not_on_cuda(prompts.items()) == []
    prompt = prompts["vocab"].requires_grad_(True)
    loss = bb.loss(prompt, batch)
    (grad,) = torch.autograd.grad(loss, prompt)
    assert not_on_cuda([("loss", loss), ("grad", grad)]) == [] and torch.isfinite(grad).all()
    # Generation runs on the device too (its token buffers are made there).
    open_ended = [Example(ex.input, ex.target) for ex in examples[:4]]
    assert len(bb.generate(prompt.detach(), open_ended, max_new_tokens=3)) == 4


@pytest.mark.parametrize("model", [CAUSAL, SEQ2SEQ])
def test_float32_scores_on_cuda_equal_those_on_the_cpu(model):
    """The same weights give the same option log-likelihoods on both devices. Scores reach
    |50| (Llama) and |155| (T5); on the CPU, float32 scores differ from the same model run in
    float64 by at most 2.3e-5 (Llama) and 3.1e-5 (T5), so two float32 devices should differ by
    about twice that. 1e-3 leaves a margin of 15x and is still far below what a misplaced or
    mis-cast tensor would change."""
    examples = list(keyword_task(n=32).examples)
    cuda = cuda_backbone(model)
    cpu = Backbone(BackboneConfig(model, prompt_length=4, device="cpu"))
    prompt = cpu.init_prompt("vocab", seed=0)
    on_cuda = torch.stack(cuda.score_options(prompt.cuda(), examples))
    on_cpu = torch.stack(cpu.score_options(prompt, examples))
    torch.testing.assert_close(on_cuda, on_cpu, rtol=0, atol=1e-3)


@pytest.mark.parametrize("optimizer", ["adafactor", "adam"])
def test_prompt_tuning_keeps_prompt_gradient_and_optimizer_state_on_cuda(optimizer, optimizers):
    bb = cuda_backbone()
    init = bb.init_prompt("vocab", seed=0)
    cfg = TuneConfig(lr=0.1, optimizer=optimizer, batch_size=4, steps=4, eval_every=2, test_size=16,
                     rows_per_pass=ROWS)
    one = tune_prompt(bb, fewshot(100), init, cfg, progress=False)
    many = tune_prompts(bb, [TuneProblem(fewshot(seed), init) for seed in (100, 13)], cfg, progress=False)
    assert len(optimizers) == 3  # one per problem
    for k, opt in enumerate(optimizers):
        tensors = optimizer_tensors(opt)
        assert any(name.startswith("grad") for name, _ in tensors), f"optimizer {k}: no gradient kept"
        assert any(name.startswith("state") for name, _ in tensors), f"optimizer {k}: no state"
        assert not_on_cuda(tensors) == [], f"optimizer {k}"
    for r in [one, *many]:
        assert r.prompt.device.type == "cuda"
        assert all(math.isfinite(c["train_loss"]) for c in r.curve[1:]), r.curve


@pytest.fixture(scope="module")
def method_inputs(tmp_path_factory):
    """Extra ``build_method`` arguments per method in a fresh cache, with the hashed
    bag-of-words sentence encoder (as tests/methods/test_methods.py)."""
    with fresh_cache(tmp_path_factory.mktemp("gpu-methods-cache")) as mp:
        mp.setattr(clustering, "encode_sentences", lambda texts, *a, **k: hashed_bow(texts))
        corpus = build_corpus(SLICE)
        clusters = cluster_corpus(corpus, ClusterConfig(k=SELFSUP["supmer"]["num_clusters"], seed=0), progress=False)
        yield {"supmer": {"corpus": corpus, "clusters": clusters}}


@pytest.mark.parametrize("name", EVERY)
def test_every_method_steps_with_all_its_tensors_on_cuda(name, method_inputs):
    bb = cuda_backbone()
    settings = dict(SETTINGS[name])
    if "rows_per_pass" in REGISTRY[name].config_cls.__dataclass_fields__:
        settings["rows_per_pass"] = ROWS
    m = build_method(name, bb, source_tasks(), settings, seed=0, **method_inputs.get(name, {}))
    start = m.prompt.clone()
    if name != "pt":  # PT has nothing to learn: no meta-batch, no gradient
        grad, metrics = m.meta_gradient(m.sample())
        assert not_on_cuda([("meta-gradient", grad)]) == [] and torch.isfinite(grad).all()
        assert all(math.isfinite(v) for v in metrics.values()), metrics
    for _ in range(2):
        metrics = m.step()
        assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert name == "pt" or not torch.equal(m.prompt, start), f"{name} did not move the prompt"
    tensors = [("prompt", m.state.prompt)]
    if m.state.optimizer is not None:
        tensors += optimizer_tensors(m.state.optimizer)
        assert any(n.startswith("state") for n, _ in tensors), "the outer optimizer kept no state"
    psi = getattr(m, "psi", None)  # SUPMER's meta-gradient regulariser and its optimizer
    if psi is not None:
        tensors += [(f"psi {k}", v) for k, v in [*psi.named_parameters(), *psi.named_buffers()]]
        tensors += [(f"psi {k}", v) for k, v in optimizer_tensors(m.psi_optimizer)]
        transform = m.grad_transform
        if transform is not None:
            tensors.append(("psi(grad)", transform(torch.ones_like(m.prompt))))
    assert not_on_cuda(tensors) == []
    assert all(p.grad is None and not p.requires_grad for p in bb.model.parameters())  # frozen


# --------------------------------------------------------------------------- bfloat16


# bfloat16 keeps 8 significant bits (unit roundoff 2**-8 = 0.4 %). Option scores are sums of
# 3-5 token log-probabilities of the wide-initialised tiny models, |score| ~ 35 (Llama) and
# ~ 115 (T5); losses ~ 8 and ~ 32. Over seeds 0-4 (64 examples each, bfloat16 against float32
# on the CPU) the largest score difference was 0.62 (mean 0.12-0.19), the largest loss
# difference 0.04, and predictions agreed on >= 98 % of examples (all disagreements had float32
# margins below 0.04). The bounds keep a margin of 3-6x; a score or loss computed in bf16
# without the float32 upcast of the logits (or a bf16 prompt) would miss them.
MAX_SCORE_DIFF = 2.0  # nats, any option
MEAN_SCORE_DIFF = 0.6  # nats, mean over options
MAX_LOSS_DIFF = 0.25  # nats
MIN_AGREEMENT = 0.9  # share of examples with the same predicted option


@pytest.mark.parametrize("model", [CAUSAL, SEQ2SEQ])
def test_bfloat16_scores_like_float32_on_cuda(model):
    b16, b32 = cuda_backbone(model, "bfloat16"), cuda_backbone(model, "float32")
    assert {p.dtype for p in b16.model.parameters()} == {torch.bfloat16}
    examples = list(keyword_task(n=64, seed=1).examples)
    prompt = b32.init_prompt("vocab", seed=1)
    assert b16.init_prompt("vocab", seed=1).dtype == torch.float32  # the prompt is never bf16
    s16 = torch.stack(b16.score_options(prompt, examples))
    s32 = torch.stack(b32.score_options(prompt, examples))
    assert s16.dtype == torch.float32 and torch.isfinite(s16).all()
    diff = (s16 - s32).abs()
    assert diff.max() <= MAX_SCORE_DIFF and diff.mean() <= MEAN_SCORE_DIFF, (diff.max(), diff.mean())
    assert (s16.argmax(1) == s32.argmax(1)).float().mean() >= MIN_AGREEMENT
    decided = (s32[:, 0] - s32[:, 1]).abs() > 2 * MAX_SCORE_DIFF  # beyond any rounding seen
    assert torch.equal(s16.argmax(1)[decided], s32.argmax(1)[decided])
    l16, l32 = (bb.loss(prompt, bb.encode(examples)) for bb in (b16, b32))
    assert torch.isfinite(l16) and abs(l16.item() - l32.item()) <= MAX_LOSS_DIFF, (l16, l32)


@pytest.mark.parametrize("model", [CAUSAL, SEQ2SEQ])
def test_bfloat16_tuning_lowers_the_loss_with_float32_prompt_and_state(model, optimizers):
    """20 Adafactor steps at lr 0.3, batch 8. The mean train loss of steps 11-20 over that of
    steps 1-10 was 0.41-0.64 (Llama) and 0.70-0.74 (T5) over few-shot seeds 100, 13, 21, in
    float32 and bfloat16 (CPU); the bound 0.9 is several times their spread above."""
    bb = cuda_backbone(model, "bfloat16")
    r = tune_prompt(bb, fewshot(100, test_size=32), bb.init_prompt("vocab", seed=0),
                    TuneConfig(lr=0.3, batch_size=8, steps=20, eval_every=10, test_size=32), progress=False)
    (opt,) = optimizers
    tensors = optimizer_tensors(opt)
    assert not_on_cuda(tensors) == []
    assert {name: t.dtype for name, t in tensors if t.dtype != torch.float32} == {}
    assert r.prompt.dtype == torch.float32 and torch.isfinite(r.prompt).all()
    first, last = r.curve[1]["train_loss"], r.curve[2]["train_loss"]
    assert math.isfinite(first) and math.isfinite(last) and last < 0.9 * first, r.curve
    assert 0 <= r.test <= 1 and math.isfinite(r.dev)


# --------------------------------------------------------------------------- packing trials


N_TRIALS = 4


def test_four_quarter_gpu_trials_run_at_the_same_time_on_one_gpu(local_ray, tmp_path):
    """``resources.gpu: auto`` gives each trial 0.25 GPU when Ray sees a GPU, so four trials fit
    on one GPU together. Each trial starts CUDA, holds a tensor there, then waits (up to 60 s)
    until all four have done so before it computes and ends: if Ray could not run them at once,
    the first ones give up waiting and end before the last one starts."""
    from ray import tune

    from promptinit.search.phases.config import load_sweep_config
    from promptinit.search.phases.prepare import trial_resources

    cfg = load_sweep_config(ROOT / "configs" / "sweep" / "tiny-test.yaml")
    cfg = cfg.model_copy(update={"resources": cfg.resources.model_copy(update={"gpu": "auto"})})
    ray = local_ray
    # One GPU (the first visible one), and CPUs enough for four trials of the config's share.
    ray.init(num_cpus=math.ceil(cfg.resources.cpu * N_TRIALS), num_gpus=1, include_dashboard=False,
             log_to_driver=False, object_store_memory=100_000_000)
    cpu, gpu = trial_resources(cfg)
    assert gpu == 0.25, gpu

    def packed(config):
        # Defined here, so Ray ships it by value: the workers need not import the tests.
        import os
        import time
        from pathlib import Path

        import ray
        import torch
        from ray import tune

        x = torch.randn(1024, 1024, device="cuda")  # CUDA up, memory held
        start = time.time()
        folder = Path(config["folder"])
        (folder / f"started-{config['i']}").touch()
        deadline = start + config["wait_s"]
        while len(list(folder.glob("started-*"))) < config["n"] and time.time() < deadline:
            time.sleep(0.05)
        together = len(list(folder.glob("started-*"))) >= config["n"]
        for _ in range(20):
            x = torch.tanh(x @ x / 32)
        torch.cuda.synchronize()
        props = torch.cuda.get_device_properties(x.device)
        tune.report({"start": start, "end": time.time(), "together": together,
                     "device": x.device.type, "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids()),
                     "visible": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
                     "gpu": f"{props.name} {getattr(props, 'uuid', '')}"})

    tuner = tune.Tuner(
        tune.with_resources(packed, {"cpu": cpu, "gpu": gpu}),
        param_space={"i": tune.grid_search(list(range(N_TRIALS))), "folder": str(tmp_path), "n": N_TRIALS,
                     "wait_s": 60},
        tune_config=tune.TuneConfig(max_concurrent_trials=N_TRIALS),
        run_config=tune.RunConfig(name="packed", storage_path=str(tmp_path / "runs"), verbose=0),
    )
    results = tuner.fit()
    assert results.num_errors == 0, [str(r.error) for r in results if r.error]
    rows = [r.metrics for r in results]
    assert len(rows) == N_TRIALS
    assert all(r["device"] == "cuda" and r["together"] for r in rows), rows
    assert len({r["gpu"] for r in rows}) == 1 and len({r["gpu_ids"] for r in rows}) == 1, rows  # one GPU
    assert all(r["visible"] for r in rows), "Ray did not assign the GPU (CUDA_VISIBLE_DEVICES unset)"
    latest_start, earliest_end = max(r["start"] for r in rows), min(r["end"] for r in rows)
    assert latest_start < earliest_end, "the four trials did not all run at the same time"
