"""Tiny random models for tests: built from configs with a fixed seed, no downloads."""

from __future__ import annotations

from pathlib import Path

SPECIALS = ["<pad>", "</s>", "<unk>", "<s>"]  # ids 0..3; T5 convention: pad 0, eos 1
# The cache folder name carries a hash of this file and of the library versions, so an edit
# below rebuilds the models (promptinit.assets._tiny_folder).
# Decoder-only models get a wide init (std 0.3, not 0.02): at 0.02 a 2-layer random model is
# nearly input-independent and a prompt cannot steer it, so nothing would be learnable.


def byte_tokenizer():
    """A byte-level tokenizer (259 + 4 tokens) that needs no training and no files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", bos_token="<s>"
    )


def _llama(vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=3,
        tie_word_embeddings=False,
        initializer_range=0.3,
    )
    return LlamaForCausalLM(cfg)


def _gpt2(vocab: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=vocab,
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_positions=1024,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=3,
        initializer_range=0.3,
    )
    return GPT2LMHeadModel(cfg)


def _t5(vocab: int):
    from transformers import T5Config, T5ForConditionalGeneration

    # decoder_start_token_id and tie_word_embeddings reach T5Config through **kwargs, which
    # transformers' @strict dataclass hides from mypy
    cfg = T5Config(  # type: ignore[call-arg]
        vocab_size=vocab,
        d_model=64,
        d_ff=128,
        d_kv=16,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
    )
    return T5ForConditionalGeneration(cfg)


def _bart(vocab: int):
    from transformers import BartConfig, BartForConditionalGeneration

    cfg = BartConfig(
        vocab_size=vocab,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_position_embeddings=1024,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=3,
        decoder_start_token_id=1,
        forced_eos_token_id=None,
    )
    return BartForConditionalGeneration(cfg)


TINY_MODELS = {"tiny-llama": _llama, "tiny-gpt2": _gpt2, "tiny-t5": _t5, "tiny-bart": _bart}


def build_tiny(name: str, out: Path, seed: int = 0) -> None:
    """Build tiny model ``name`` with a fixed seed and save it (safetensors + tokenizer)."""
    import torch

    tok = byte_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TINY_MODELS[name](len(tok))
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
