#!/usr/bin/env python3
"""Data for the decoder GPU check (Python standard library only): a batch of
random tokens, and the imported parameters with every LoRA B drawn from
N(0, 0.02) instead of zero, so adapters change the output and their A
gradients are not zero.

    make_decoder_data.py PARAMS_IN OUT_DIR --batch B --seq S --vocab V [--seed N]
                         [--guard]

Writes OUT_DIR/batch.safetensors (input_ids, labels: I32 [B, S]; labels are
the next tokens of one random stream) and OUT_DIR/params.safetensors. With
--guard also OUT_DIR/guard_inputs.safetensors (the batch plus lr and step)
and OUT_DIR/guard_params.safetensors: the params with the final norm's weight
infinite (so the loss is not finite) and AdamW moments m, v of every LoRA
tensor filled with 0.5 (so an update would be visible).
"""
import argparse
import os
import random
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "scripts"))
from qtune_tensors import bf16_raw, st_read, st_write  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("params"); p.add_argument("out")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--seq", type=int, required=True)
    p.add_argument("--vocab", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guard", action="store_true")
    a = p.parse_args()
    rng = random.Random(a.seed)
    os.makedirs(a.out, exist_ok=True)
    ids, labels = [], []
    for _ in range(a.batch):
        stream = [rng.randrange(a.vocab) for _ in range(a.seq + 1)]
        ids += stream[:-1]
        labels += stream[1:]
    n = a.batch * a.seq
    st_write(os.path.join(a.out, "batch.safetensors"),
             {"input_ids": ("I32", [a.batch, a.seq], struct.pack("<%di" % n, *ids)),
              "labels": ("I32", [a.batch, a.seq], struct.pack("<%di" % n, *labels))})
    params = st_read(a.params)
    for name, (dt, shape, raw) in params.items():
        if name.endswith(".lora_B.weight"):
            count = shape[0] * shape[1]
            params[name] = (dt, shape, bf16_raw([rng.gauss(0.0, 0.02) for _ in range(count)]))
    st_write(os.path.join(a.out, "params.safetensors"), params)
    if a.guard:
        batch = st_read(os.path.join(a.out, "batch.safetensors"))
        batch["lr"] = ("F32", [], struct.pack("<f", 1e-2))
        batch["step"] = ("F32", [], struct.pack("<f", 1.0))
        st_write(os.path.join(a.out, "guard_inputs.safetensors"), batch)
        poisoned = dict(params)
        dt, shape, raw = poisoned["model.norm.weight"]
        poisoned["model.norm.weight"] = (dt, shape, bf16_raw([float("inf")] * shape[0]))
        for name, (dt, shape, raw) in params.items():
            if ".lora_" in name:
                count = shape[0] * shape[1]
                for moment in ("m", "v"):
                    poisoned[name + "." + moment] = ("F32", shape, struct.pack("<%df" % count, *([0.5] * count)))
        st_write(os.path.join(a.out, "guard_params.safetensors"), poisoned)


if __name__ == "__main__":
    main()
