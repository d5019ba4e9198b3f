#!/usr/bin/env python3
"""Peer check of LoRA gradients: qtune's `layer_grad` entry (a 4-bit uniform
group-64 weight with a rank-8 LoRA adapter, MSE loss; Inputs/train_lora.mlir)
against PEFT (peft.LoraConfig) over a torch.nn.Linear holding the same
dequantized weight, in bf16. Runs on the GPU machine.

    check_peft.py QTUNE_RUN BUNDLE INPUTS PARAMS OUT_DIR [--tol 2e-2]
"""
import argparse
import os
import subprocess
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file


def dequant_uniform4(codes, scales, zeros, group):
    """w = s·(q − z); codes little-endian, 8 per int32 word."""
    n = codes.shape[0]
    words = codes.to(torch.int64) & 0xFFFFFFFF
    q = torch.stack([(words >> (4 * j)) & 0xF for j in range(8)], dim=-1).view(n, -1)
    k = q.shape[1]
    s = scales.float().repeat_interleave(group, dim=1)[:, :k]
    z = zeros.float().repeat_interleave(group, dim=1)[:, :k]
    return s * (q.float() - z)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("qtune_run"); p.add_argument("bundle"); p.add_argument("inputs")
    p.add_argument("params"); p.add_argument("out")
    p.add_argument("--tol", type=float, default=2e-2)
    p.add_argument("--group", type=int, default=64)
    p.add_argument("--alpha", type=float, default=16.0)
    a = p.parse_args()
    import peft
    os.makedirs(a.out, exist_ok=True)
    grads = os.path.join(a.out, "qtune_grads.safetensors")
    r = subprocess.run([a.qtune_run, "forward", a.bundle, "--entry", "layer_grad",
                        "--inputs", a.inputs, "--params", a.params, "--out", grads, "--poison"],
                       capture_output=True, text=True)
    print(r.stdout + r.stderr)
    if r.returncode:
        return 1
    got = load_file(grads)
    ins, prm = load_file(a.inputs), load_file(a.params)
    w = dequant_uniform4(prm["codes"], prm["scales"], prm["zeros"], a.group)
    A, B = prm["lora_A"], prm["lora_B"]
    rank = A.shape[0]

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)

        def forward(self, x):
            return self.proj(x)

    base = Layer()
    base.proj.weight.data = w.to(torch.bfloat16)
    cfg = peft.LoraConfig(r=rank, lora_alpha=a.alpha, lora_dropout=0.0, target_modules=["proj"])
    model = peft.get_peft_model(base, cfg).to(device="cuda", dtype=torch.bfloat16)
    lora = model.base_model.model.proj
    lora.lora_A["default"].weight.data = A.to("cuda", torch.bfloat16)
    lora.lora_B["default"].weight.data = B.to("cuda", torch.bfloat16)
    x, t = ins["x"].cuda(), ins["target"].cuda()
    y = model(x)
    loss = F.mse_loss(y.float(), t.float())
    loss.backward()
    ok = True
    loss_err = abs(got["loss"].item() - loss.item()) / abs(loss.item())
    print(f"peft {peft.__version__}: loss qtune {got['loss'].item():.6g} peft {loss.item():.6g} "
          f"(rel {loss_err:.2e})")
    ok &= loss_err <= a.tol
    for name, ref in (("lora_A", lora.lora_A["default"].weight.grad),
                      ("lora_B", lora.lora_B["default"].weight.grad)):
        mine = got["grad_" + name].float().cuda()
        err = ((mine - ref.float()).norm() / ref.float().norm()).item()
        print(f"  grad {name}: rel L2 error {err:.2e} (tolerance {a.tol:g}): "
              f"{'ok' if err <= a.tol else 'FAILED'}")
        ok &= err <= a.tol
    print("peft check:", "ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
