#!/usr/bin/env python3
"""Checks what a train run updated: UPDATED (qtune-interp --out of a train
step: the params it updates) holds no tensor named like ABSENT, and every
tensor named like CHANGED in START is in UPDATED with other values.

    updated_params.py START.safetensors UPDATED.safetensors ABSENT CHANGED
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "scripts"))
from qtune_tensors import st_read  # noqa: E402

start, updated, absent, changed = st_read(sys.argv[1]), st_read(sys.argv[2]), sys.argv[3], sys.argv[4]
bad = [n for n in updated if absent in n]
if bad:
    sys.exit(f"{sys.argv[2]}: '{bad[0]}' was updated")
names = [n for n in start if changed in n]
if not names:
    sys.exit(f"{sys.argv[1]} has no tensor named like '{changed}'")
for n in names:
    if n not in updated or updated[n] == start[n]:
        sys.exit(f"'{n}' was not updated")
print(f"no '{absent}' updated; {len(names)} '{changed}' tensors updated")
