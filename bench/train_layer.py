#!/usr/bin/env python3
"""Forward + backward of one quantized LoRA layer (INT4 g128 asymmetric,
r = 16, MSE loss; gradients of the input, A and B, as for a layer inside a
model): qtune's `loss_mM_grad` entry beside PyTorch eager (QLoRA-style: the
weight dequantized in forward and again in backward, never kept) and
torch.compile of the same, all measured in this run on this GPU. Runs on the
GPU machine.

    train_layer.py BUNDLE QTUNE_RUN OUT_DIR [--n 4096 --k 4096 --m 16,2048,8192]

Also checks qtune's gradients against the eager ones (relative L2 error) and
writes OUT_DIR/train_layer.json.
"""
import argparse, json, os, re, subprocess, sys
import torch
import torch.nn.functional as F
import triton.testing as tt
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qlayer import QLayer  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("bundle"); p.add_argument("qtune_run"); p.add_argument("out")
p.add_argument("--n", type=int, default=4096); p.add_argument("--k", type=int, default=4096)
p.add_argument("--m", default="16,2048,8192"); p.add_argument("--iters", type=int, default=30)
p.add_argument("--qtune-only", action="store_true", help="skip the peers (profiling, schedules)")
a = p.parse_args()
os.makedirs(a.out, exist_ok=True)
layer = QLayer(a.n, a.k, a.out)
scale = layer.alpha / layer.R


class QLinear(torch.autograd.Function):
    """x · dequant(W)ᵀ with the weight re-dequantized in backward."""

    @staticmethod
    def forward(ctx, x):
        return x @ layer.dequant().t()

    @staticmethod
    def backward(ctx, g):
        return g @ layer.dequant()


def step(x, A, B, t):
    y = QLinear.apply(x) + scale * ((x @ A.t()) @ B.t())
    loss = F.mse_loss(y.float(), t.float())
    loss.backward()
    return loss


compiled = None if a.qtune_only else torch.compile(step)


def bench(fn):
    return tt.do_bench(fn, warmup=10, rep=200, return_mode="median") * 1e3  # us


rows = []
for M in [int(v) for v in a.m.split(",")]:
    x = (torch.rand(M, a.k, device="cuda", dtype=torch.bfloat16) * 2 - 1)
    t = torch.randn(M, a.n, device="cuda", dtype=torch.bfloat16) * 0.1
    inputs = os.path.join(a.out, f"train_in_m{M}.safetensors")
    save_file({"target": t.contiguous()}, inputs)
    # x is trainable in this graph (its gradient is computed), so it is a param.
    params = os.path.join(a.out, f"train_params_m{M}.safetensors")
    save_file({**load_file(layer.params), "x": x.contiguous()}, params)
    outp = os.path.join(a.out, f"train_grads_m{M}.safetensors")
    r = subprocess.run([a.qtune_run, "forward", a.bundle, "--entry", f"loss_m{M}_grad", "--inputs", inputs,
                        "--params", params,
                        "--out", outp, "--time", str(a.iters)],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        print(r.stdout, r.stderr, file=sys.stderr)
        sys.exit(f"qtune-run failed for M={M}")
    med = float(re.search(r"median ([0-9.]+) ms", r.stdout + r.stderr).group(1)) * 1e3
    if a.qtune_only:
        print(f"M={M}: qtune {med:.1f} us", flush=True)
        continue
    got = load_file(outp)
    xr, Ar, Br = (v.detach().clone().requires_grad_() for v in (x, layer.A, layer.B))
    step(xr, Ar, Br, t)
    errs = {name: ((got[f"grad_{name}"].float().cuda() - ref.grad.float()).norm()
                   / ref.grad.float().norm()).item()
            for name, ref in (("x", xr), ("lora_A", Ar), ("lora_B", Br))}
    args = [v.detach().clone().requires_grad_() for v in (x, layer.A, layer.B)]
    row = {"M": M, "qtune_us": med, "grad_rel_err": errs,
           "eager_us": bench(lambda: step(*args, t)),
           "compiled_us": bench(lambda: compiled(*args, t))}
    rows.append(row)
    for f in (inputs, params, outp):
        os.remove(f)
    print(f"M={M}: qtune {med:.1f} us, eager {row['eager_us']:.1f} us, compile "
          f"{row['compiled_us']:.1f} us, grad rel err {errs}", flush=True)

json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "N": a.n, "K": a.k,
           "rows": rows}, open(os.path.join(a.out, "train_layer.json"), "w"), indent=1)
print(f"\nforward+backward, INT4 g128 + LoRA r16 (dx, dA, dB), N={a.n} K={a.k}, median us "
      f"({torch.cuda.get_device_name()})")
print(f"{'M':>6} {'qtune':>9} {'eager':>9} {'compile':>9} {'vs eager':>9} {'vs comp':>8} {'max grad err':>12}")
for r in rows:
    print(f"{r['M']:>6} {r['qtune_us']:9.1f} {r['eager_us']:9.1f} {r['compiled_us']:9.1f} "
          f"{r['eager_us'] / r['qtune_us']:8.2f}x {r['compiled_us'] / r['qtune_us']:7.2f}x "
          f"{max(r['grad_rel_err'].values()):12.2e}")
