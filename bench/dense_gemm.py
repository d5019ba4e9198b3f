#!/usr/bin/env python3
"""A dense bf16 linear layer, y = x · Wᵀ with W a frozen bf16 tensor, through
qtune's GEMM template beside torch.matmul (cuBLAS) in the same run: how far
the template's loop is from cuBLAS when there is nothing to dequantize. Runs
on the GPU machine.

    dense_gemm.py --emit-mlir FILE [--m 8192 --n 4096 --k 4096]     # here
    qtune-compile FILE -o dense.qtb                                   # here
    dense_gemm.py --bundle dense.qtb --qtune-run QTUNE_RUN [same sizes]   # GPU

Prints both medians (CUDA events; qtune-run --time) and qtune's relative
error against float32.
"""
import argparse, os, re, subprocess, sys, tempfile

p = argparse.ArgumentParser()
p.add_argument("--emit-mlir"); p.add_argument("--bundle"); p.add_argument("--qtune-run")
p.add_argument("--m", type=int, default=8192); p.add_argument("--n", type=int, default=4096)
p.add_argument("--k", type=int, default=4096); p.add_argument("--iters", type=int, default=30)
a = p.parse_args()
M, N, K = a.m, a.n, a.k
if a.emit_mlir:
    with open(a.emit_mlir, "w") as f:
        f.write(f"""func.func @forward(%x: tensor<{M}x{K}xbf16> {{qtune.name = "x", qtune.role = #qtune.role<input>}},
                   %w: tensor<{N}x{K}xbf16> {{qtune.name = "w", qtune.role = #qtune.role<frozen>}}) -> tensor<{M}x{N}xbf16> {{
  %y = qtune.linear %x, %w : tensor<{M}x{K}xbf16>, tensor<{N}x{K}xbf16> -> tensor<{M}x{N}xbf16>
  return %y : tensor<{M}x{N}xbf16>
}}
""")
    sys.exit(0)
if not (a.bundle and a.qtune_run):
    sys.exit("dense_gemm.py: pass --emit-mlir FILE, or --bundle and --qtune-run")

import torch
from safetensors.torch import load_file, save_file

torch.manual_seed(0)
x = torch.randn(M, K, device="cuda").to(torch.bfloat16)
w = (torch.randn(N, K, device="cuda") * 0.02).to(torch.bfloat16)
with tempfile.TemporaryDirectory() as d:
    inputs, params, out = (os.path.join(d, n) for n in ("in.safetensors", "p.safetensors", "out.safetensors"))
    save_file({"x": x.cpu()}, inputs)
    save_file({"w": w.cpu()}, params)
    r = subprocess.run([a.qtune_run, "forward", a.bundle, "--inputs", inputs, "--params", params,
                        "--out", out, "--time", str(a.iters)], capture_output=True, text=True)
    if r.returncode:
        sys.exit(r.stdout + r.stderr)
    qtune_ms = float(re.search(r"median ([0-9.]+) ms", r.stdout + r.stderr).group(1))
    y = next(iter(load_file(out).values())).cuda().float()
ref = x.float() @ w.float().t()
err = ((y - ref).norm() / ref.norm()).item()
for _ in range(3):
    torch.matmul(x, w.t())
torch.cuda.synchronize()
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
times = []
for _ in range(a.iters):
    start.record(); torch.matmul(x, w.t()); end.record(); torch.cuda.synchronize()
    times.append(start.elapsed_time(end))
times.sort()
cublas_ms = times[len(times) // 2]
print(f"dense bf16 linear {M}x{N}x{K} ({torch.cuda.get_device_name()}): qtune {qtune_ms * 1e3:.0f} us, "
      f"cuBLAS {cublas_ms * 1e3:.0f} us ({cublas_ms / qtune_ms:.2f}x), qtune rel err {err:.1e}")
