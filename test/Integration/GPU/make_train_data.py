#!/usr/bin/env python3
"""Layer-level regression data for the train-step checks (pure Python).

    make_train_data.py VARIANT OUT_DIR [--m 64] [--n 256] [--k 256] [--seed 1]

A teacher y = x·W_tᵀ and a student that starts from W_b = round-to-nearest
4-bit (uniform, group 64, asymmetric: w = s·(q − z)) of a base weight:
  lora  W_t = base + a rank-4 update; LoRA A small random, B zero.
  peqa  W_t = base with every group's scale multiplied by a factor in [0.7, 1.3]
        (so scales alone can fit it).
  qft   W_t = base + a rank-4 update; the student is base in 8-bit per-channel
        symmetric codes (w = s·(q − 128)) that train themselves.
  ce    as lora, but a classifier: `labels` (I32) are the argmax over the N
        classes of the teacher's logits, replacing `target`.
Writes OUT_DIR/inputs.safetensors (x, target) and OUT_DIR/params.safetensors
(codes, scales, zeros, lora_A, lora_B) in the dtypes the train-step entry takes,
and both in OUT_DIR/all.safetensors (for the reference interpreter).
"""
import argparse
import math
import os
import random
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from forward_cases import bf16_raw, st_write  # noqa: E402


def bf16(v):
    bits = struct.unpack("<I", struct.pack("<f", v))[0]
    bits += 0x7FFF + ((bits >> 16) & 1)
    return struct.unpack("<f", struct.pack("<I", (bits >> 16) << 16))[0]


def tensor_bytes(dtype, values):
    if dtype == "BF16":
        return bf16_raw(values)
    fmt = {"F32": "f", "I32": "i", "I8": "b"}[dtype]
    return struct.pack("<%d%s" % (len(values), fmt), *values)


def write(path, tensors):
    """Writes {name: (dtype, shape, values)} through forward_cases.st_write."""
    st_write(path, {name: (dtype, shape, tensor_bytes(dtype, values))
                    for name, (dtype, shape, values) in tensors.items()})


def quantize(w, n, k, group, bits=4):
    """Asymmetric RTN per group; returns packed codes, scales, zeros (bf16)."""
    levels = (1 << bits) - 1
    codes, scales, zeros = [], [], []
    for r in range(n):
        q_row = []
        for g in range(k // group):
            vals = w[r * k + g * group:r * k + (g + 1) * group]
            lo, hi = min(min(vals), 0.0), max(max(vals), 0.0)
            s = bf16((hi - lo) / levels or 1.0)
            z = bf16(float(min(levels, max(0, round(-lo / s)))))
            scales.append(s)
            zeros.append(z)
            q_row += [min(levels, max(0, round(v / s + z))) for v in vals]
        words = [0] * (k * bits // 32)
        for i, q in enumerate(q_row):
            words[i * bits // 32] |= q << (i * bits % 32)
        codes += [w_ - (1 << 32) if w_ >= 1 << 31 else w_ for w_ in words]
    return codes, scales, zeros


def quantize8_per_channel(w, n, k):
    """Symmetric 8-bit RTN per row: w = s·(q − 128), s = absmax / 127."""
    codes, scales = [], []
    for r in range(n):
        row = w[r * k:(r + 1) * k]
        s = bf16(max(abs(v) for v in row) / 127 or 1.0)
        scales.append(s)
        q = [min(255, max(0, round(v / s) + 128)) for v in row]
        for i in range(0, k, 4):
            word = q[i] | q[i + 1] << 8 | q[i + 2] << 16 | q[i + 3] << 24
            codes.append(word - (1 << 32) if word >= 1 << 31 else word)
    return {"codes": ("I32", [n, k // 4], codes), "scales": ("BF16", [n, 1], scales)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("variant", choices=["lora", "peqa", "qft", "ce"])
    p.add_argument("out")
    p.add_argument("--m", type=int, default=64)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--k", type=int, default=256)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--group", type=int, default=64)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--random-b", action="store_true",
                   help="LoRA B random instead of zero (so every gradient is non-zero)")
    a = p.parse_args()
    rng = random.Random(a.seed)
    m, n, k, group = a.m, a.n, a.k, a.group
    base = [rng.gauss(0, 1 / math.sqrt(k)) for _ in range(n * k)]
    codes, scales, zeros = quantize(base, n, k, group)
    if a.variant in ("lora", "qft", "ce"):
        u = [[rng.gauss(0, 1) for _ in range(4)] for _ in range(n)]
        v = [[rng.gauss(0, 1) for _ in range(4)] for _ in range(k)]
        amp = 0.5 / math.sqrt(k)
        teacher = [base[r * k + c] + amp * sum(u[r][j] * v[c][j] for j in range(4)) / 2
                   for r in range(n) for c in range(k)]
    else:
        factors = [rng.uniform(0.7, 1.3) for _ in range(n * k // group)]
        teacher = []
        for r in range(n):
            for c in range(k):
                g = r * (k // group) + c // group
                q = (codes[(r * k + c) * 4 // 32] >> ((r * k + c) * 4 % 32)) & 15
                teacher.append(scales[g] * factors[g] * (q - zeros[g]))
    x = [bf16(rng.gauss(0, 1)) for _ in range(m * k)]
    target = []
    for i in range(m):
        xi = x[i * k:(i + 1) * k]
        for r in range(n):
            row = teacher[r * k:(r + 1) * k]
            target.append(sum(xv * wv for xv, wv in zip(xi, row)))
    os.makedirs(a.out, exist_ok=True)
    inputs = {"x": ("BF16", [m, k], x), "target": ("BF16", [m, n], target)}
    if a.variant == "ce":
        labels = [max(range(n), key=lambda r: target[i * n + r]) for i in range(m)]
        inputs = {"x": ("BF16", [m, k], x), "labels": ("I32", [m], labels)}
    write(os.path.join(a.out, "inputs.safetensors"), inputs)
    if a.variant == "qft":
        params = quantize8_per_channel(base, n, k)
    else:
        params = {"codes": ("I32", [n, k * 4 // 32], codes),
                  "scales": ("BF16", [n, k // group], scales),
                  "zeros": ("BF16", [n, k // group], zeros)}
    if a.variant in ("lora", "ce"):
        params["lora_A"] = ("BF16", [a.rank, k],
                            [rng.gauss(0, 1 / math.sqrt(k)) for _ in range(a.rank * k)])
        params["lora_B"] = ("BF16", [n, a.rank],
                            [rng.gauss(0, 0.05) if a.random_b else 0.0
                             for _ in range(n * a.rank)])
    write(os.path.join(a.out, "params.safetensors"), params)
    write(os.path.join(a.out, "all.safetensors"), {**inputs, **params})


if __name__ == "__main__":
    main()
