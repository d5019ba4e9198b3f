#!/usr/bin/env python3
"""Checks that the `loss` of qtune-interp output A is RATIO times that of B
(to 1e-6 relative).

    loss_ratio.py A.safetensors B.safetensors RATIO
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "scripts"))
from qtune_tensors import st_read, values  # noqa: E402


def loss(path):
    dtype, _, raw = st_read(path)["loss"]
    return values(dtype, raw)[0]


a, b, ratio = loss(sys.argv[1]), loss(sys.argv[2]), float(sys.argv[3])
rel = abs(a - ratio * b) / abs(ratio * b)
print("loss %.9g = %.9g x %.9g (relative difference %.2e)" % (a, ratio, b, rel))
if rel > 1e-6:
    sys.exit("MISMATCH")
