#!/usr/bin/env python3
"""PEQA and QFT on one quantized layer (N = K = 4096, MSE loss), qtune beside
PyTorch eager and torch.compile of the same step, measured in this run on this
GPU. Runs on the GPU machine.

    peqa_qft_layer.py PEQA_BUNDLE QFT_BUNDLE QTUNE_RUN OUT_DIR [--m 16,2048,8192]

PEQA (bench/layer_model.py --method peqa, qtune-autodiff): forward and
backward of an INT4 g128 layer whose scales train: dx and the scale gradient
Σ_{k∈g} dW[n, k]·(q[n, k] − z[n, g]). The peer dequantizes in forward and
again in backward, forms dW (N × K) and reduces it per group. qtune's
gradients are checked against the peer's (relative L2).

QFT (--method qft, qtune-compile --train, Lion with int8 momentum): one train
step of an INT8 g128 layer whose codes train: forward, dW, and the Lion update
of the codes and the int8 momentum (per-256 absmax scales). The peer
dequantizes the weight, lets autograd form dW, runs Lion on the dequantized
momentum and requantizes both. qtune's step never holds dW (fused per tile).

Writes OUT_DIR/peqa_qft_layer.json.
"""
import argparse
import json
import os
import re
import subprocess
import sys

import torch
import torch.nn.functional as F
import triton.testing as tt
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qlayer import QLayer  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("peqa_bundle"); p.add_argument("qft_bundle"); p.add_argument("qtune_run")
p.add_argument("out")
p.add_argument("--n", type=int, default=4096); p.add_argument("--k", type=int, default=4096)
p.add_argument("--m", default="16,2048,8192"); p.add_argument("--iters", type=int, default=30)
a = p.parse_args()
os.makedirs(a.out, exist_ok=True)
N, K, G = a.n, a.k, 128
dev = "cuda"


def bench(fn):
    return tt.do_bench(fn, warmup=10, rep=200, return_mode="median") * 1e3  # us


def qtune_time(bundle, entry, inputs, params, out):
    r = subprocess.run([a.qtune_run, "forward", bundle, "--entry", entry, "--inputs", inputs,
                        "--params", params, "--out", out, "--time", str(a.iters)],
                       capture_output=True, text=True, timeout=600)
    if r.returncode:
        print(r.stdout, r.stderr, file=sys.stderr)
        sys.exit(f"qtune-run failed: {entry}")
    return float(re.search(r"median ([0-9.]+) ms", r.stdout + r.stderr).group(1)) * 1e3


def rel(x, y):
    return ((x.float() - y.float()).norm() / y.float().norm()).item()


# ---- PEQA -------------------------------------------------------------------------
layer = QLayer(N, K, a.out)


def codes_minus_zero():
    lo, hi = layer.packed & 0xF, layer.packed >> 4
    qq = torch.stack([lo, hi], dim=-1).view(N, K).to(torch.bfloat16)
    return (qq.view(N, K // G, G) - layer.zero_b.unsqueeze(-1)).view(N, K)


class PeqaLinear(torch.autograd.Function):
    """x · (s·(q − z))ᵀ, the weight re-dequantized in backward, dW reduced per group."""

    @staticmethod
    def forward(ctx, x, s):
        ctx.save_for_backward(x, s)
        w = (codes_minus_zero().view(N, K // G, G) * s.unsqueeze(-1)).view(N, K)
        return x @ w.t()

    @staticmethod
    def backward(ctx, g):
        x, s = ctx.saved_tensors
        d = codes_minus_zero()
        w = (d.view(N, K // G, G) * s.unsqueeze(-1)).view(N, K)
        dw = g.t() @ x
        ds = (dw.float() * d.float()).view(N, K // G, G).sum(-1)
        return g @ w, ds.to(s.dtype)


def peqa_step(x, s, t):
    loss = F.mse_loss(PeqaLinear.apply(x, s).float(), t.float())
    loss.backward()
    return loss


# ---- QFT --------------------------------------------------------------------------
torch.manual_seed(1)
w8 = torch.randn(N, K, device=dev) * 0.02
wg = w8.view(N, K // G, G)
lo8 = wg.amin(-1, keepdim=True).clamp(max=0)
hi8 = wg.amax(-1, keepdim=True).clamp(min=0)
s8 = ((hi8 - lo8) / 255).clamp(min=1e-8).to(torch.bfloat16)
z8 = torch.round(-lo8 / s8.float()).clamp(0, 255).to(torch.bfloat16)
q8 = torch.clamp(torch.round(wg / s8.float()) + z8.float(), 0, 255).to(torch.int32).view(N, K)
words = torch.zeros(N, K // 4, dtype=torch.int64, device=dev)
for j in range(4):
    words |= q8[:, j::4].to(torch.int64) << (8 * j)
codes8 = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)
BLOCK, B1, B2 = 256, 0.9, 0.99


def qft_step(q, m8, ms, x, t, lr):
    """One Lion step on uint8 codes with int8 momentum (per-BLOCK absmax scales)."""
    w = ((q.float().view(N, K // G, G) - z8.float()) * s8.float()).view(N, K).to(torch.bfloat16)
    w.requires_grad_()
    loss = F.mse_loss((x @ w.t()).float(), t.float())
    loss.backward()
    g = w.grad.float().view(-1, BLOCK)
    m = m8.float().view(-1, BLOCK) * ms.view(-1, 1)
    c = B1 * m + (1 - B1) * g
    wn = w.detach().float().view(-1, BLOCK) - lr * torch.sign(c)
    mn = B2 * m + (1 - B2) * g
    scale = (mn.abs().amax(-1) / 127).clamp(min=1e-30)
    m8.copy_(torch.round(mn / scale.view(-1, 1)).clamp(-127, 127).to(torch.int8).view(N, K))
    ms.copy_(scale)
    qn = torch.round(wn.view(N, K // G, G) / s8.float() + z8.float()).clamp(0, 255)
    q.copy_(qn.view(N, K).to(torch.uint8))
    return loss


peqa_compiled = torch.compile(peqa_step)
qft_compiled = torch.compile(qft_step)
rows = []
for M in [int(v) for v in a.m.split(",")]:
    x = (torch.rand(M, K, device=dev, dtype=torch.bfloat16) * 2 - 1)
    t = torch.randn(M, N, device=dev, dtype=torch.bfloat16) * 0.1
    # PEQA: qtune's gradient entry, then the peers.
    inputs = os.path.join(a.out, "in.safetensors")
    params = os.path.join(a.out, "params.safetensors")
    outp = os.path.join(a.out, "out.safetensors")
    save_file({"target": t.contiguous()}, inputs)
    lp = load_file(layer.params)
    save_file({"codes": lp["codes"], "scales": lp["scales"], "zeros": lp["zeros"],
               "x": x.contiguous()}, params)
    peqa_us = qtune_time(a.peqa_bundle, f"loss_m{M}_grad", inputs, params, outp)
    got = load_file(outp)
    xr, sr = x.clone().requires_grad_(), layer.scale_b.clone().requires_grad_()
    peqa_step(xr, sr, t)
    errs = {"x": rel(got["grad_x"].cuda(), xr.grad), "scales": rel(got["grad_scales"].cuda(), sr.grad)}
    args = [x.clone().requires_grad_(), layer.scale_b.clone().requires_grad_()]
    row = {"M": M, "peqa": {"qtune_us": peqa_us, "grad_rel_err": errs,
                            "eager_us": bench(lambda: peqa_step(*args, t)),
                            "compiled_us": bench(lambda: peqa_compiled(*args, t))}}
    # QFT: qtune's train step (codes and momentum updated in place), then the peers.
    save_file({"x": x.contiguous(), "target": t.contiguous(),
               "lr": torch.tensor(1e-5, dtype=torch.float32)}, inputs)
    save_file({"codes": codes8.contiguous(), "scales": s8.squeeze(-1).contiguous(),
               "zeros": z8.squeeze(-1).contiguous(),
               "codes.m": torch.zeros(N, K, dtype=torch.int8, device=dev),
               "codes.m_scales": torch.zeros(N * K // BLOCK, dtype=torch.float32, device=dev)},
              params)
    qft_us = qtune_time(a.qft_bundle, f"loss_m{M}_train_step", inputs, params, outp)
    q, m8, ms = (q8.to(torch.uint8).clone(), torch.zeros(N, K, dtype=torch.int8, device=dev),
                 torch.zeros(N * K // BLOCK, device=dev))
    row["qft"] = {"qtune_us": qft_us,
                  "eager_us": bench(lambda: qft_step(q, m8, ms, x, t, 1e-5)),
                  "compiled_us": bench(lambda: qft_compiled(q, m8, ms, x, t, 1e-5))}
    rows.append(row)
    for f in (inputs, params, outp):
        os.remove(f)
    print(f"M={M}: {json.dumps(row)}", flush=True)

json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "N": N, "K": K,
           "rows": rows}, open(os.path.join(a.out, "peqa_qft_layer.json"), "w"), indent=1)
print(f"\nPEQA (INT4 g128, dx and scale gradient) and QFT (INT8 g128, one Lion int8 step), "
      f"N={N} K={K}, median us ({torch.cuda.get_device_name()})")
print(f"{'method':>6} {'M':>6} {'qtune':>9} {'eager':>9} {'compile':>9} {'vs eager':>9} "
      f"{'vs comp':>8} {'grad err':>9}")
for r in rows:
    for meth in ("peqa", "qft"):
        v = r[meth]
        err = max(v["grad_rel_err"].values()) if "grad_rel_err" in v else float("nan")
        print(f"{meth:>6} {r['M']:>6} {v['qtune_us']:9.1f} {v['eager_us']:9.1f} "
              f"{v['compiled_us']:9.1f} {v['eager_us'] / v['qtune_us']:8.2f}x "
              f"{v['compiled_us'] / v['qtune_us']:7.2f}x {err:9.2e}")
