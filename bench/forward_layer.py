#!/usr/bin/env python3
"""Forward time of one quantized LoRA layer (INT4 g128 asymmetric, r = 16):
qtune's bundle beside PyTorch eager (dequantize + matmul + LoRA), torch.compile
of the same, cuBLAS bf16 on an already dense weight, and tinygemm int4, all
measured in this run on this GPU. Runs on the GPU machine.

    forward_layer.py BUNDLE QTUNE_RUN OUT_DIR [--n 4096 --k 4096 --m 1,16,...]

Prints a table of median microseconds and qtune's speed-up over each peer, and
writes OUT_DIR/forward_layer.json.
"""
import argparse, json, math, os, re, subprocess, sys
import torch
import triton.testing as tt
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qlayer import QLayer  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("bundle"); p.add_argument("qtune_run"); p.add_argument("out")
p.add_argument("--n", type=int, default=4096); p.add_argument("--k", type=int, default=4096)
p.add_argument("--m", default="1,16,128,2048,8192"); p.add_argument("--iters", type=int, default=50)
p.add_argument("--qtune-only", action="store_true", help="skip the peers (schedule experiments)")
a = p.parse_args()
N, K = a.n, a.k
dev = "cuda"
os.makedirs(a.out, exist_ok=True)


def bench(fn):
    return tt.do_bench(fn, warmup=25, rep=200, return_mode="median") * 1e3  # us


layer = QLayer(N, K, a.out)
R, G, alpha, A, B, q, scale, zero = layer.R, layer.G, layer.alpha, layer.A, layer.B, layer.q, layer.scale, layer.zero
params, dequant = layer.params, layer.dequant


def eager(x):
    return x @ dequant().t() + (alpha / R) * ((x @ A.t()) @ B.t())


compiled = torch.compile(eager)
Wd = dequant()
try:  # tinygemm int4: q in [0, 15] with (scale, (8 - zero)·scale) pairs per group
    w_int4 = torch.ops.aten._convert_weight_to_int4pack(
        (q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8), 8)
    sz = torch.stack([scale.squeeze(-1).t(), (8 - zero.squeeze(-1).t()) * scale.squeeze(-1).t()],
                     dim=-1).to(torch.bfloat16).contiguous()
    tiny = lambda x: torch.ops.aten._weight_int4pack_mm(x, w_int4, G, sz)
    xt = torch.randn(4, K, device=dev, dtype=torch.bfloat16)
    err = ((tiny(xt).float() - (xt @ Wd.t()).float()).norm() / (xt @ Wd.t()).float().norm()).item()
    if err > 2e-2:
        raise RuntimeError(f"tinygemm disagrees with the dequantized weight (rel err {err:.3f})")
except Exception as e:  # its packing API differs between versions
    print(f"tinygemm unavailable: {e}", file=sys.stderr)
    tiny = None

rows = []
for M in [int(v) for v in a.m.split(",")]:
    x = torch.rand(M, K, device=dev, dtype=torch.bfloat16) * 2 - 1
    inputs = os.path.join(a.out, f"layer_x_m{M}.safetensors")
    save_file({"x": x.contiguous()}, inputs)
    outp = os.path.join(a.out, f"layer_y_m{M}.safetensors")
    r = subprocess.run([a.qtune_run, "forward", a.bundle, "--entry", f"forward_m{M}", "--inputs", inputs,
                        "--params", params, "--out", outp, "--time", str(a.iters)],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        print(r.stdout, r.stderr, file=sys.stderr)
        sys.exit(f"qtune-run failed for M={M}")
    med = float(re.search(r"median ([0-9.]+) ms", r.stdout + r.stderr).group(1)) * 1e3
    from safetensors.torch import load_file
    y = load_file(outp)["y"].double().to(dev)
    ref = (x.double() @ Wd.double().t() + (alpha / R) * (x.double() @ A.double().t()) @ B.double().t())
    rel = ((y - ref).norm() / ref.norm()).item()
    if a.qtune_only:
        print(f"M={M:6d} qtune {med:9.1f} us  rel err {rel:.2e}", flush=True)
        continue
    row = {"M": M, "qtune_us": med, "rel_err": rel,
           "eager_us": bench(lambda: eager(x)), "compiled_us": bench(lambda: compiled(x)),
           "cublas_dense_us": bench(lambda: x @ Wd.t()),
           "tinygemm_us": bench(lambda: tiny(x)) if tiny else None}
    rows.append(row)
    os.remove(inputs)

json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "N": N, "K": K,
           "rows": rows}, open(os.path.join(a.out, "forward_layer.json"), "w"), indent=1)
print(f"\nforward, INT4 g128 + LoRA r16, N={N} K={K}, median us ({torch.cuda.get_device_name()})")
print(f"{'M':>6} {'qtune':>9} {'eager':>9} {'compile':>9} {'cuBLAS':>9} {'tinygemm':>9} "
      f"{'vs eager':>9} {'vs comp':>8} {'rel err':>9}")
for r in rows:
    t = f"{r['tinygemm_us']:9.1f}" if r["tinygemm_us"] else f"{'-':>9}"
    print(f"{r['M']:>6} {r['qtune_us']:9.1f} {r['eager_us']:9.1f} {r['compiled_us']:9.1f} "
          f"{r['cublas_dense_us']:9.1f} {t} {r['eager_us'] / r['qtune_us']:8.2f}x "
          f"{r['compiled_us'] / r['qtune_us']:7.2f}x {r['rel_err']:9.2e}")
