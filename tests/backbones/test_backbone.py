"""Backbones: frozen weights, a differentiable prompt loss, cached option scoring, generation."""
from __future__ import annotations

import warnings

import pytest
import torch

from promptinit.backbones import Backbone, BackboneConfig, Family, load_prompt, save_prompt
from promptinit.backbones.backbone import DTYPES
from promptinit.errors import PromptinitError
from promptinit.evaluation import TuneConfig, tune_prompt
from promptinit.tasks.fewshot import sample_few_shot
from promptinit.tasks.task import Example
from tests.conftest import CAUSAL, SEQ2SEQ, keyword_task, tiny_backbone

OPTS3 = ("positive", "negative", "mixed feelings")
EXAMPLES = [
    Example("Review: great movie\nSentiment:", "positive", OPTS3),
    Example("Review: a terrible, awful film that bored me to tears\nSentiment:", "negative", OPTS3),
    Example("Q: which is a fruit? A:", "pear", ("pear", "car")),  # options of different counts
]


def _reference_logits(bb: Backbone, prompt: torch.Tensor, ex: Example, target: str) -> torch.Tensor:
    """Log-probs of ``target`` tokens from the model's own full forward pass, no cache, batch 1."""
    inp = torch.tensor([bb._input_ids(ex.input)])
    tgt = torch.tensor([bb._target_ids(ex.input, target)])
    P = prompt.to(bb.dtype)[None]
    if bb.family is Family.CAUSAL:
        ids = torch.cat([inp, tgt], 1)
        logits = bb.model(inputs_embeds=torch.cat([P, bb.embed(ids)], 1)).logits[0]
        start = P.shape[1] + inp.shape[1] - 1
        lp = torch.log_softmax(logits[start : start + tgt.shape[1]].double(), -1)
    else:
        logits = bb.model(inputs_embeds=torch.cat([P, bb.embed(inp)], 1), labels=tgt).logits[0]
        lp = torch.log_softmax(logits.double(), -1)
    return lp.gather(1, tgt[0][:, None]).squeeze(1)


@pytest.mark.parametrize("model", [CAUSAL, "tiny-gpt2", SEQ2SEQ, "tiny-bart"])
def test_loss_equals_model_forward_cross_entropy(model):
    bb = tiny_backbone(model, "float64")
    prompt = bb.init_prompt("vocab", seed=3)
    loss = bb.loss(prompt, bb.encode(EXAMPLES), per_example=True)
    ref = torch.stack([-_reference_logits(bb, prompt, ex, ex.target).mean() for ex in EXAMPLES])
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-10)


def test_loss_is_differentiable_in_prompt_finite_differences(backbone64):
    bb = backbone64
    batch = bb.encode(EXAMPLES)
    prompt = bb.init_prompt("vocab", seed=1).requires_grad_(True)
    (grad,) = torch.autograd.grad(bb.loss(prompt, batch), prompt)
    gen = torch.Generator().manual_seed(0)
    eps = 1e-6
    for _ in range(3):
        v = torch.randn(prompt.shape, generator=gen, dtype=torch.float64)
        with torch.no_grad():
            fd = (bb.loss(prompt + eps * v, batch) - bb.loss(prompt - eps * v, batch)) / (2 * eps)
        analytic = (grad * v).sum()
        assert abs(fd - analytic) / abs(analytic) < 1e-6


def test_per_example_prompts_equal_separate_passes(backbone64):
    bb = backbone64
    prompts = torch.stack([bb.init_prompt("vocab", seed=s) for s in range(len(EXAMPLES))])
    together = bb.loss(prompts, bb.encode(EXAMPLES), per_example=True)
    apart = torch.stack([bb.loss(p, bb.encode([ex])) for p, ex in zip(prompts, EXAMPLES)])
    torch.testing.assert_close(together, apart, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("model", [CAUSAL, "tiny-gpt2", SEQ2SEQ, "tiny-bart"])
def test_option_scores_equal_slow_reference_scoring_each_option_separately(model):
    bb = tiny_backbone(model, "float64")
    prompt = bb.init_prompt("vocab", seed=2)
    fast = bb.score_options(prompt, EXAMPLES, batch_size=2)
    for ex, scores in zip(EXAMPLES, fast):
        ref = torch.stack([_reference_logits(bb, prompt, ex, o).sum() for o in ex.options])
        torch.testing.assert_close(scores.double(), ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("model", [CAUSAL, "tiny-gpt2"])
def test_cached_scoring_and_generation_use_no_deprecated_cache_argument(model):
    """transformers 5.x renamed the key/value cache argument to ``cache`` and warns (a
    FutureWarning, removal in 5.40) on every ``past_key_values=``; scoring passes the new name."""
    bb = tiny_backbone(model, "float64")
    prompt = bb.init_prompt("vocab", seed=2)
    expected = bb.score_options(prompt, EXAMPLES, batch_size=2)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=r".*past_key_values", category=FutureWarning)
        scores = bb.score_options(prompt, EXAMPLES, batch_size=2)
        bb.generate(prompt, EXAMPLES, max_new_tokens=3)
    assert all(torch.equal(a, b) for a, b in zip(scores, expected))


@pytest.mark.parametrize("model", [CAUSAL, SEQ2SEQ])
def test_greedy_generation_equals_uncached_reference(model):
    bb = tiny_backbone(model, "float64")
    prompt = bb.init_prompt("vocab", seed=4)
    got = bb.generate(prompt, EXAMPLES, max_new_tokens=6)
    for ex, text in zip(EXAMPLES, got):
        # Reference: re-run the whole sequence each step through the model's own forward.
        inp = torch.tensor([bb._input_ids(ex.input)])
        P = prompt[None]
        toks: list[int] = []
        for _ in range(6):
            if bb.family is Family.CAUSAL:
                ids = torch.cat([inp, torch.tensor([toks], dtype=torch.long)], 1)
                logits = bb.model(inputs_embeds=torch.cat([P, bb.embed(ids)], 1)).logits[0, -1]
            else:
                dec = torch.tensor([[bb.model.config.decoder_start_token_id, *toks]])
                logits = bb.model(inputs_embeds=torch.cat([P, bb.embed(inp)], 1), decoder_input_ids=dec).logits[0, -1]
            nxt = int(logits.argmax())
            if nxt == bb.eos_id:
                break
            toks.append(nxt)
        assert text == bb.tokenizer.decode(toks, skip_special_tokens=True).strip()


@pytest.mark.parametrize("model", [CAUSAL, SEQ2SEQ])
def test_only_the_prompt_is_trained_and_weights_stay_bit_identical(model):
    bb = tiny_backbone(model)
    before = {k: v.clone() for k, v in bb.model.state_dict().items()}
    fs = sample_few_shot(keyword_task(), 13, test_size=16)
    init = bb.init_prompt("vocab", seed=0)
    tune_prompt(bb, fs, init, TuneConfig(steps=6, eval_every=3), progress=False)
    prompt = init.clone().requires_grad_(True)
    bb.loss(prompt, bb.encode(fs.train[:4])).backward()
    assert prompt.grad is not None and prompt.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in bb.model.parameters())
    after = bb.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bfloat16_backbone_gives_finite_loss_and_float32_prompt_gradient():
    bb = tiny_backbone(CAUSAL, "bfloat16")
    prompt = bb.init_prompt("vocab", seed=0).requires_grad_(True)
    (g,) = torch.autograd.grad(bb.loss(prompt, bb.encode(EXAMPLES)), prompt)
    assert prompt.dtype == torch.float32 and g.dtype == torch.float32
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_prompt_initialisations(tmp_path):
    bb = tiny_backbone(CAUSAL, prompt_length=5)
    vocab = bb.init_prompt("vocab", seed=0)
    table = bb.model.get_input_embeddings().weight
    assert vocab.shape == (5, bb.hidden_size)
    assert all((table == row).all(1).any() for row in vocab), "vocab init rows are embedding rows"
    assert torch.equal(vocab, bb.init_prompt("vocab", seed=0))
    assert not torch.equal(vocab, bb.init_prompt("vocab", seed=1))
    text = bb.init_prompt("text", text="ab")
    ids = bb.tokenizer("ab", add_special_tokens=False).input_ids
    assert torch.equal(text, table[torch.tensor((ids * 3)[:5])])
    path = save_prompt(vocab, tmp_path / "p.safetensors")
    assert torch.equal(bb.init_prompt("file", path=path), vocab)


@pytest.mark.parametrize("model", [CAUSAL, SEQ2SEQ])
def test_class_label_init_is_each_labels_mean_token_embedding_then_vocabulary(model):
    """Lester et al. 2021's class-label init: row i is the mean embedding of label i's tokens as
    the model reads it as an answer (a causal model's with its separating space), the rest the
    vocabulary init of the same seed."""
    bb = tiny_backbone(model, prompt_length=5)
    table = bb.model.get_input_embeddings().weight.detach()
    labels = ("yes", "no way")
    prompt = bb.init_prompt("labels", labels=labels, seed=7)
    space = " " if model == CAUSAL else ""
    for row, label in zip(prompt, labels):
        ids = bb.tokenizer(space + label, add_special_tokens=False).input_ids
        torch.testing.assert_close(row, table[torch.tensor(ids)].mean(0))
    assert len(bb.tokenizer(space + "no way", add_special_tokens=False).input_ids) > 1, "a multi-token label is averaged"
    assert torch.equal(prompt[2:], bb.init_prompt("vocab", seed=7)[2:])
    many = bb.init_prompt("labels", labels=[f"l{i}" for i in range(9)], seed=7)
    assert many.shape == (5, bb.hidden_size)
    with pytest.raises(PromptinitError, match="class labels"):
        bb.init_prompt("labels", labels=(), seed=7)


def test_prompt_file_with_wrong_shape_or_truncated_is_refused(tmp_path):
    bb = tiny_backbone(CAUSAL, prompt_length=5)
    path = save_prompt(torch.zeros(3, bb.hidden_size), tmp_path / "p.safetensors")
    with pytest.raises(PromptinitError, match=r"p.safetensors: field 'prompt_embeddings': shape \[3, 64\]"):
        bb.init_prompt("file", path=path)
    good = save_prompt(torch.zeros(5, bb.hidden_size), tmp_path / "q.safetensors")
    data = good.read_bytes()
    good.write_bytes(data[: len(data) - 100])
    with pytest.raises(PromptinitError, match="not a readable safetensors file"):
        load_prompt(good)


def test_bad_backbone_settings_name_the_field():
    with pytest.raises(PromptinitError, match="field 'dtype'"):
        BackboneConfig("tiny-llama", dtype="float16")
    with pytest.raises(PromptinitError, match="known names: .*smollm2-135m"):
        Backbone(BackboneConfig("no-such-model"))


@pytest.mark.parametrize("native", [True, False])
def test_auto_dtype_is_bfloat16_exactly_where_the_cpu_has_native_bf16(monkeypatch, native):
    from promptinit.backbones.backbone import resolve_dtype

    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: native)
    want = "bfloat16" if native else "float32"
    assert resolve_dtype("auto", torch.device("cpu")) == want
    assert resolve_dtype("auto", torch.device("cuda")) == "float32"  # parity measured on CPUs only
    assert resolve_dtype("float64", torch.device("cpu")) == "float64"
    bb = Backbone(BackboneConfig("tiny-llama", prompt_length=4, dtype="auto", device="cpu"))
    assert bb.config.dtype == want and bb.dtype == DTYPES[want]
    assert {p.dtype for p in bb.model.parameters()} == {DTYPES[want]}
    assert want in bb.fingerprint  # cache keys name the dtype it stands for, never "auto"


def test_a_gguf_model_path_is_made_absolute_so_ray_workers_find_the_same_file(tmp_path, monkeypatch):
    from promptinit.backbones import BackboneConfig

    monkeypatch.chdir(tmp_path)
    assert BackboneConfig("models/m.gguf").model == str(tmp_path / "models" / "m.gguf")
    assert BackboneConfig("tiny-llama").model == "tiny-llama"  # names stay names
