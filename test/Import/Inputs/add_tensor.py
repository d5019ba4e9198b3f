#!/usr/bin/env python3
"""Copies a safetensors file into OUT_DIR/model.safetensors with one more BF16
tensor of zeros.   add_tensor.py IN.safetensors OUT_DIR NAME LENGTH"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "scripts"))
from qtune_tensors import st_read, st_write  # noqa: E402

src, out, name, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
t = st_read(src)
t[name] = ("BF16", [n], bytes(2 * n))
os.makedirs(out, exist_ok=True)
st_write(os.path.join(out, "model.safetensors"), t)
