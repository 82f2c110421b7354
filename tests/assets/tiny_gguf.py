"""A tiny random Llama written as a GGUF file the way llama.cpp's converter writes one.

Float32 tensors (no quantisation), so the converted model must give the source model's logits
exactly; a byte-level BPE vocabulary (``tokenizer.ggml.model = gpt2``) with three merges.
"""
from __future__ import annotations

from pathlib import Path

SPECIALS = ["<pad>", "</s>", "<unk>", "<s>"]  # ids 0..3, as promptinit's tiny models
MERGES = ["Ġ t", "h e", "Ġt he"]


def tokens() -> list[str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return SPECIALS + sorted(bytes_to_unicode().values()) + ["Ġt", "he", "Ġthe"]


def _permute(w, n_head: int, n_head_kv: int):
    # llama.cpp's convert_hf_to_gguf.py reorders q/k rows for its rotary layout; transformers
    # undoes it on load (LlamaTensorProcessor), so a file written without it loads wrong.
    n = n_head_kv if n_head_kv != n_head else n_head
    return w.reshape(n, 2, w.shape[0] // n // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path: Path, seed: int = 0, name: str = "tiny-gguf-llama"):
    """Write a 2-layer Llama (hidden 64) with random weights to ``path``.

    Args:
        path: the .gguf file to write.
        seed: the weights' seed (another seed, another file content).
        name: ``general.name`` in the file's metadata.

    Returns:
        The ``LlamaForCausalLM`` that was written (in eval mode), the reference for its logits.
    """
    import gguf
    import numpy as np
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab = tokens()
    heads, kv_heads, layers = 4, 2, 2
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=256,
                      pad_token_id=0, eos_token_id=1, bos_token_id=3, tie_word_embeddings=False,
                      initializer_range=0.3, rms_norm_eps=1e-5)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_context_length(256)
    w.add_embedding_length(64)
    w.add_block_count(layers)
    w.add_feed_forward_length(128)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(64 // heads)
    w.add_vocab_size(len(vocab))
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(vocab)
    w.add_token_types([gguf.TokenType.CONTROL] * len(SPECIALS) + [gguf.TokenType.NORMAL] * (len(vocab) - len(SPECIALS)))
    w.add_token_merges(MERGES)
    w.add_pad_token_id(0)
    w.add_eos_token_id(1)
    w.add_unk_token_id(2)
    w.add_bos_token_id(3)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)
    for hf_name, t in model.state_dict().items():
        a = t.numpy().astype(np.float32)
        if "q_proj" in hf_name:
            a = _permute(a, heads, heads)
        elif "k_proj" in hf_name:
            a = _permute(a, heads, kv_heads)
        w.add_tensor(names.get_name(hf_name, try_suffixes=(".weight", ".bias")), a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model
