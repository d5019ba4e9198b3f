#!/usr/bin/env python3
"""Attention forward and backward throughput (TFLOP/s) of qtune's kernels
beside PyTorch SDPA's flash backend (and the flash-attn package where it is
importable), in one run on one GPU: causal, 32 heads, head dimension 128,
sequence 2048 and 4096, batch 1 and 4, bf16. FLOPs follow FlashAttention's
convention: forward 4·B·H·S²·d (halved when causal), backward 2.5× that.
qtune's times are `qtune-run forward --time` medians (CUDA events) of the
`fwd` and `bwd` entries of bundles staged by attention_cases.py --bench.

    attention.py QTUNE_RUN BUNDLE_DIR OUT_DIR [--runs 20]
"""
import argparse
import json
import os
import re
import subprocess
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

H, D = 32, 128


def flops(b, s, causal=True):
    f = 4 * b * H * s * s * D
    return f / 2 if causal else f


def qtune_ms(qrun, bundle, entry, inputs, runs):
    r = subprocess.run([qrun, "forward", bundle, "--entry", entry, "--inputs", inputs, "--out",
                        inputs + ".out", "--time", str(runs)], capture_output=True, text=True)
    m = re.search(r"time: median ([0-9.]+) ms", r.stdout)
    if r.returncode or not m:
        raise SystemExit("qtune-run failed on %s: %s" % (bundle, (r.stdout + r.stderr)[-600:]))
    return float(m.group(1))


def cuda_ms(fn, runs):
    for _ in range(3):
        fn()
    start = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
    end = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
    for i in range(runs):
        start[i].record()
        fn()
        end[i].record()
    torch.cuda.synchronize()
    t = sorted(s.elapsed_time(e) for s, e in zip(start, end))
    return t[len(t) // 2]


def peer_ms(attn, q, k, v, g, runs):
    """Forward, and forward + backward, of attn(q, k, v) (heads-first)."""
    qr, kr, vr = (t.detach().requires_grad_() for t in (q, k, v))
    fwd = cuda_ms(lambda: attn(qr, kr, vr), runs)

    def step():
        o = attn(qr, kr, vr)
        o.backward(g)
    both = cuda_ms(step, runs)
    return fwd, both - fwd


def main():
    p = argparse.ArgumentParser()
    p.add_argument("qtune_run"); p.add_argument("bundles"); p.add_argument("out")
    p.add_argument("--runs", type=int, default=20)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    try:
        from flash_attn import flash_attn_func
    except ImportError:
        flash_attn_func = None
    print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__,
          "| flash-attn:", "yes" if flash_attn_func else "not importable")
    rows = []
    hdr = "%-14s %22s %22s %22s" % ("shape", "qtune fwd / bwd", "sdpa flash fwd / bwd",
                                    "flash-attn fwd / bwd")
    print(hdr)
    for b, s in ((1, 2048), (4, 2048), (1, 4096), (4, 4096)):
        bundle = os.path.join(a.bundles, "bench_b%d_s%d.qtb" % (b, s))
        gen = torch.Generator(device="cuda").manual_seed(s + b)
        rnd = lambda: torch.randn(b, s, H * D, generator=gen, device="cuda").bfloat16()
        q, k, v, g = rnd(), rnd(), rnd(), rnd()
        inputs = os.path.join(a.out, "in.safetensors")
        save_file({"arg0": q.cpu(), "arg1": k.cpu(), "arg2": v.cpu()}, inputs)
        fwd = qtune_ms(a.qtune_run, bundle, "fwd", inputs, a.runs)
        # The backward's o and lse: any finite values time the same.
        heads = lambda t: t.view(b, s, H, D).transpose(1, 2)
        o = F.scaled_dot_product_attention(heads(q).float(), heads(k).float(), heads(v).float(),
                                           is_causal=True)
        s_ = torch.matmul(heads(q).float(), heads(k).float().transpose(-1, -2)) / D ** 0.5
        s_ = s_.masked_fill(torch.ones(s, s, dtype=torch.bool, device="cuda").triu(1), float("-inf"))
        lse = torch.logsumexp(s_, -1)
        del s_
        save_file({"arg0": q.cpu(), "arg1": k.cpu(), "arg2": v.cpu(),
                   "arg3": o.transpose(1, 2).reshape(b, s, H * D).bfloat16().cpu(),
                   "arg4": lse.cpu().contiguous(), "arg5": g.cpu()}, inputs)
        bwd = qtune_ms(a.qtune_run, bundle, "bwd", inputs, a.runs)
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
            sf, sb = peer_ms(lambda x, y, z: F.scaled_dot_product_attention(x, y, z, is_causal=True),
                             heads(q), heads(k), heads(v), heads(g), a.runs)
        ff = fb = None
        if flash_attn_func:
            ff, fb = peer_ms(lambda x, y, z: flash_attn_func(x, y, z, causal=True),
                             q.view(b, s, H, D), k.view(b, s, H, D), v.view(b, s, H, D),
                             g.view(b, s, H, D), a.runs)
        f = flops(b, s)
        tf = lambda ms, mult=1.0: None if ms is None else mult * f / (ms * 1e-3) / 1e12
        row = {"batch": b, "seq": s, "qtune_fwd_ms": fwd, "qtune_bwd_ms": bwd,
               "qtune_fwd_tflops": tf(fwd), "qtune_bwd_tflops": tf(bwd, 2.5),
               "sdpa_fwd_ms": sf, "sdpa_bwd_ms": sb, "sdpa_fwd_tflops": tf(sf),
               "sdpa_bwd_tflops": tf(sb, 2.5), "flash_attn_fwd_tflops": tf(ff),
               "flash_attn_bwd_tflops": tf(fb, 2.5)}
        rows.append(row)
        pair = lambda x, y: "%9s / %-9s" % ("-" if x is None else "%.0f" % x, "-" if y is None else "%.0f" % y)
        print("b%d s%-10d %22s %22s %22s" % (b, s, pair(row["qtune_fwd_tflops"], row["qtune_bwd_tflops"]),
                                             pair(row["sdpa_fwd_tflops"], row["sdpa_bwd_tflops"]),
                                             pair(row["flash_attn_fwd_tflops"], row["flash_attn_bwd_tflops"])),
              flush=True)
    with open(os.path.join(a.out, "attention.json"), "w") as fh:
        json.dump(rows, fh, indent=1)
    print("(TFLOP/s, causal, H = 32, d = 128; medians of %d runs)" % a.runs)


if __name__ == "__main__":
    sys.exit(main())
