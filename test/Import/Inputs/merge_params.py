#!/usr/bin/env python3
"""Writes OUT with every tensor of IN..., a tensor taken from the last file
that holds it (as qtune-run and qtune-export read repeated --params). A later
F32 tensor replacing a BF16 one (qtune-interp --out writes F32) is rounded to
BF16.

    merge_params.py OUT.safetensors IN.safetensors...
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "scripts"))
from qtune_tensors import bf16_raw, st_read, st_write, values  # noqa: E402

merged = {}
for path in sys.argv[2:]:
    for name, (dtype, shape, raw) in st_read(path).items():
        if name in merged and merged[name][0] == "BF16" and dtype == "F32":
            dtype, raw = "BF16", bf16_raw(values("F32", raw))
        merged[name] = (dtype, shape, raw)
st_write(sys.argv[1], merged)
