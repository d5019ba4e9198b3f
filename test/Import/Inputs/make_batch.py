#!/usr/bin/env python3
"""Writes input_ids and labels I32 [B, S] (labels: the next token) of random
tokens below V to a safetensors file.   make_batch.py OUT B S V"""
import os, random, struct, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'scripts'))
from qtune_tensors import st_write
B, S, V = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
r = random.Random(5)
toks = [r.randrange(V) for _ in range(B * (S + 1))]
ids = [toks[b*(S+1)+s] for b in range(B) for s in range(S)]
lab = [toks[b*(S+1)+s+1] for b in range(B) for s in range(S)]
st_write(sys.argv[1], {"input_ids": ("I32", [B, S], struct.pack("<%di" % len(ids), *ids)),
                       "labels": ("I32", [B, S], struct.pack("<%di" % len(lab), *lab))})
