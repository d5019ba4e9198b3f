#!/usr/bin/env python3
"""Synthetic parameters for a compiled model bundle, made on the GPU machine
(a 7B-shaped model's weights are too large to carry): every frozen or
trainable buffer `qtune-run inspect` lists, by name, dtype and shape. Codes are
random words; scales 0.002; zero points 8; norm weights one;
embeddings and lm head N(0, 0.02); LoRA A Kaiming-uniform and B zero, as
PEFT initializes them. Optimizer states are left out (qtune-run zeroes them).

    random_params.py QTUNE_RUN BUNDLE OUT.safetensors
"""
import math
import re
import subprocess
import sys

import torch
from safetensors.torch import save_file


def main():
    qrun, bundle, out = sys.argv[1:4]
    text = subprocess.run([qrun, "inspect", bundle], capture_output=True, text=True, check=True).stdout
    dtypes = {"BF16": torch.bfloat16, "F32": torch.float32, "I32": torch.int32, "I8": torch.int8}
    g = torch.Generator(device="cuda").manual_seed(0)
    tensors = {}
    for m in re.finditer(r"^\s+\[\d+\] (\S+)\s+(frozen|trainable)\s+(\w+) \[([\d, ]*)\]", text, re.M):
        name, _, dt, shape = m.groups()
        shape = [int(v) for v in shape.split(",")] if shape.strip() else []
        if name in tensors:
            continue
        dtype = dtypes[dt]
        if dtype == torch.int32:
            t = torch.randint(-2**31, 2**31 - 1, shape, dtype=torch.int64, device="cuda", generator=g).to(torch.int32)
        elif name.endswith(".scales"):
            t = torch.full(shape, 0.002, dtype=dtype, device="cuda")
        elif name.endswith(".zeros"):
            t = torch.full(shape, 8.0, dtype=dtype, device="cuda")
        elif name.endswith("norm.weight"):
            t = torch.ones(shape, dtype=dtype, device="cuda")
        elif name.endswith("lora_A.weight"):
            bound = 1 / math.sqrt(shape[1])
            t = (torch.rand(shape, device="cuda", generator=g) * 2 - 1).mul(bound).to(dtype)
        elif name.endswith("lora_B.weight"):
            t = torch.zeros(shape, dtype=dtype, device="cuda")
        else:
            t = (torch.randn(shape, device="cuda", generator=g) * 0.02).to(dtype)
        tensors[name] = t.cpu().contiguous()
    save_file(tensors, out)
    print("%s: %d tensors, %.1f MiB" % (out, len(tensors),
                                        sum(t.numel() * t.element_size() for t in tensors.values()) / 2**20))


if __name__ == "__main__":
    main()
