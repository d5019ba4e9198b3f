#!/usr/bin/env python3
"""Rewrites the LoRA adapters of a qtune parameter file so that every adapter
term s·B·A is constant within each quantization group of GROUP columns: each
row of A takes, in every group, the mean of its values there (B is kept).
Such an adapter merges exactly into an asymmetric uniform layer's zero points.

    group_constant_adapters.py IN.safetensors OUT.safetensors GROUP
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "scripts"))
from qtune_tensors import bf16_raw, st_read, st_write, values  # noqa: E402


def main():
    src, dst, group = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tensors = st_read(src)
    changed = 0
    for name, (dtype, shape, raw) in list(tensors.items()):
        if not name.endswith(".lora_A.weight"):
            continue
        r, k = shape
        a = values(dtype, raw)
        out = []
        for i in range(r):
            row = a[i * k:(i + 1) * k]
            for g in range(0, k, group):
                mean = sum(row[g:g + group]) / group
                out.extend([mean] * group)
        tensors[name] = ("BF16", shape, bf16_raw(out))
        changed += 1
    if not changed:
        sys.exit("no LoRA A tensors in %s" % src)
    st_write(dst, tensors)
    print("%d adapters made constant per group of %d" % (changed, group))


if __name__ == "__main__":
    main()
