#!/usr/bin/env python3
"""An independent float64 LLaMA forward in plain Python, written from Hugging
Face transformers' modeling_llama (RMSNorm, rotate-half RoPE, repeat_kv
grouped-query attention with a causal mask, SwiGLU MLP, untied or tied lm
head), for checking qtune-import + the reference interpreter on tiny models.

    llama_reference.py MODEL_DIR BATCH.safetensors [--expect OUT.safetensors [--rtol 1e-6]]

Prints "loss <mean cross entropy>" of labels given input_ids (both [B, S]).
With --expect, compares with the f32 `loss` tensor of OUT (what qtune-interp
wrote) and fails unless they agree to --rtol relative (1e-6; a model exported
in bf16 differs from qtune's by its rounding, about 1e-5).
"""
import json
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "scripts"))
from qtune_tensors import st_read, values  # noqa: E402


def main():
    model_dir, batch_path = sys.argv[1], sys.argv[2]
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    raw = st_read(os.path.join(model_dir, "model.safetensors"))
    W = {n: (shape, values(dt, r)) for n, (dt, shape, r) in raw.items()}
    batch = st_read(batch_path)
    (_, (B, S), ids_raw), (_, _, lab_raw) = batch["input_ids"], batch["labels"]
    ids, labels = values("I32", ids_raw), values("I32", lab_raw)
    D, H = cfg["hidden_size"], cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads", H)
    hd = cfg.get("head_dim", D // H)
    eps, theta = cfg["rms_norm_eps"], cfg.get("rope_theta", 10000.0)

    def mat(name):
        shape, v = W[name]
        return [v[r * shape[1]:(r + 1) * shape[1]] for r in range(shape[0])]

    def linear(x, w):  # x: rows of K, w: N rows of K
        return [[sum(a * b for a, b in zip(row, wr)) for wr in w] for row in x]

    def rmsnorm(x, w):
        out = []
        for row in x:
            r = 1.0 / math.sqrt(sum(v * v for v in row) / len(row) + eps)
            out.append([v * r * g for v, g in zip(row, w)])
        return out

    def rope(x, pos, heads):
        out = []
        for p, row in zip(pos, x):
            new = list(row)
            for h in range(heads):
                base = h * hd
                for j in range(hd // 2):
                    inv = 1.0 / theta ** (2.0 * j / hd)
                    c, s = math.cos(p * inv), math.sin(p * inv)
                    a, b = row[base + j], row[base + j + hd // 2]
                    new[base + j] = a * c - b * s
                    new[base + j + hd // 2] = b * c + a * s
            out.append(new)
        return out

    total = 0.0
    for b in range(B):
        toks = ids[b * S:(b + 1) * S]
        emb = mat("model.embed_tokens.weight")
        h = [list(emb[t]) for t in toks]
        pos = list(range(S))
        for l in range(cfg["num_hidden_layers"]):
            p = "model.layers.%d." % l
            x = rmsnorm(h, W[p + "input_layernorm.weight"][1])
            q = rope(linear(x, mat(p + "self_attn.q_proj.weight")), pos, H)
            k = rope(linear(x, mat(p + "self_attn.k_proj.weight")), pos, KV)
            v = linear(x, mat(p + "self_attn.v_proj.weight"))
            attn = [[0.0] * (H * hd) for _ in range(S)]
            for head in range(H):
                kvh = head // (H // KV)
                for i in range(S):
                    qi = q[i][head * hd:(head + 1) * hd]
                    scores = [sum(a * c for a, c in zip(qi, k[j][kvh * hd:(kvh + 1) * hd])) / math.sqrt(hd)
                              for j in range(i + 1)]
                    m = max(scores)
                    e = [math.exp(s - m) for s in scores]
                    z = sum(e)
                    for c in range(hd):
                        attn[i][head * hd + c] = sum(e[j] / z * v[j][kvh * hd + c] for j in range(i + 1))
            o = linear(attn, mat(p + "self_attn.o_proj.weight"))
            h = [[a + c for a, c in zip(r1, r2)] for r1, r2 in zip(h, o)]
            x = rmsnorm(h, W[p + "post_attention_layernorm.weight"][1])
            g = linear(x, mat(p + "mlp.gate_proj.weight"))
            u = linear(x, mat(p + "mlp.up_proj.weight"))
            m = [[gv / (1 + math.exp(-gv)) * uv for gv, uv in zip(gr, ur)] for gr, ur in zip(g, u)]
            d = linear(m, mat(p + "mlp.down_proj.weight"))
            h = [[a + c for a, c in zip(r1, r2)] for r1, r2 in zip(h, d)]
        h = rmsnorm(h, W["model.norm.weight"][1])
        head = mat("lm_head.weight" if "lm_head.weight" in W else "model.embed_tokens.weight")
        logits = linear(h, head)
        for i in range(S):
            row = logits[i]
            m = max(row)
            lse = m + math.log(sum(math.exp(v - m) for v in row))
            total += lse - row[labels[b * S + i]]
    loss = total / (B * S)
    print("loss %.12f" % loss)
    if len(sys.argv) > 4 and sys.argv[3] == "--expect":
        (dt, _, r) = st_read(sys.argv[4])["loss"]
        got = values(dt, r)[0]
        rel = abs(got - loss) / abs(loss)
        print("qtune %.9f, relative difference %.2e" % (got, rel))
        rtol = float(sys.argv[6]) if len(sys.argv) > 6 and sys.argv[5] == "--rtol" else 1e-6
        if rel > rtol:
            sys.exit("MISMATCH: qtune's loss differs from the reference")


if __name__ == "__main__":
    main()
