#!/usr/bin/env python3
"""Writes a small LLaMA-style model directory from a deterministic recipe, as
Hugging Face's `save_pretrained` would (config.json + model.safetensors, bf16),
with the Python standard library only.

    tiny_llama.py OUT_DIR [--layers 4 --hidden 256 --heads 4 --kv-heads 2
                           --ffn 512 --vocab 256 --seed 0 --tied --zeros]

The default is the embedded example: a byte-vocabulary decoder (vocab 256) of
4 layers, hidden 256, 4 query heads on 2 KV heads (head_dim 64), SwiGLU width
512, RMSNorm eps 1e-5, rope theta 10000. Weights are N(0, 0.02) from a seeded
generator (norm weights 1 + N(0, 0.02)), so the same arguments always give the
same bytes.
"""
import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
from qtune_tensors import bf16_raw, st_write  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--ffn", type=int, default=512)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tied", action="store_true", help="tie the lm head to the embedding")
    p.add_argument("--extra", default="", help="JSON merged into config.json (tests)")
    p.add_argument("--zeros", action="store_true",
                   help="all-zero weights, written fast (shapes for benchmarks)")
    a = p.parse_args()
    d, hd = a.hidden, a.hidden // a.heads
    rng = random.Random(a.seed)

    def normal(shape, std=0.02, mean=0.0):
        n = 1
        for s in shape:
            n *= s
        if a.zeros:
            return ("BF16", list(shape), bytes(2 * n))
        return ("BF16", list(shape), bf16_raw([mean + rng.gauss(0.0, std) for _ in range(n)]))

    t = {"model.embed_tokens.weight": normal([a.vocab, d])}
    for i in range(a.layers):
        p_ = "model.layers.%d." % i
        t[p_ + "input_layernorm.weight"] = normal([d], mean=1.0)
        t[p_ + "self_attn.q_proj.weight"] = normal([a.heads * hd, d])
        t[p_ + "self_attn.k_proj.weight"] = normal([a.kv_heads * hd, d])
        t[p_ + "self_attn.v_proj.weight"] = normal([a.kv_heads * hd, d])
        t[p_ + "self_attn.o_proj.weight"] = normal([d, a.heads * hd])
        t[p_ + "post_attention_layernorm.weight"] = normal([d], mean=1.0)
        t[p_ + "mlp.gate_proj.weight"] = normal([a.ffn, d])
        t[p_ + "mlp.up_proj.weight"] = normal([a.ffn, d])
        t[p_ + "mlp.down_proj.weight"] = normal([d, a.ffn])
    t["model.norm.weight"] = normal([d], mean=1.0)
    if not a.tied:
        t["lm_head.weight"] = normal([a.vocab, d])
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": d, "intermediate_size": a.ffn, "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads,
        "head_dim": hd, "vocab_size": a.vocab, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "rope_scaling": None, "hidden_act": "silu",
        "max_position_embeddings": 4096, "attention_bias": False, "mlp_bias": False,
        "tie_word_embeddings": a.tied, "torch_dtype": "bfloat16",
        "bos_token_id": 1, "eos_token_id": 2, "initializer_range": 0.02,
    }
    if a.extra:
        config.update(json.loads(a.extra))
    os.makedirs(a.out, exist_ok=True)
    st_write(os.path.join(a.out, "model.safetensors"), t)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
