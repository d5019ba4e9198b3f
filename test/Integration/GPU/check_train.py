#!/usr/bin/env python3
"""Compares a GPU training run (qtune-run train) with the reference
interpreter's run of the same train-step entry from the same start.

    check_train.py --name N --metrics metrics.jsonl --ref-losses ref_losses.json
                   [--trained trained.safetensors --ref-params ref_params.safetensors]
                   [--summary summary.jsonl]

Passes when the loss falls by what the interpreter predicts: the first losses
agree within --first-tol (relative), the fraction of the loss removed,
1 − L_last/L_first, is within --fall-tol (absolute) of the interpreter's, and
the last losses agree within --last-tol (relative). The trained parameters'
relative L2 distance to the interpreter's is reported (not gated: bf16
trajectories drift apart slowly by design).
"""
import argparse
import json
import math
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from forward_cases import st_read  # noqa: E402


def read_safetensors(path):
    """{name: [values]} of a safetensors file (floats widened, integers as is)."""
    out = {}
    for name, (dt, _, raw) in st_read(path).items():
        if dt == "BF16":
            out[name] = [struct.unpack("<f", struct.pack("<I", h << 16))[0]
                         for h in struct.unpack("<%dH" % (len(raw) // 2), raw)]
        else:
            fmt = {"F32": "f", "F64": "d", "I32": "i", "I8": "b", "F16": "e"}[dt]
            size = struct.calcsize(fmt)
            out[name] = list(struct.unpack("<%d%s" % (len(raw) // size, fmt), raw))
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--ref-losses", required=True)
    p.add_argument("--trained")
    p.add_argument("--ref-params")
    p.add_argument("--summary")
    p.add_argument("--first-tol", type=float, default=1e-2)
    p.add_argument("--fall-tol", type=float, default=0.03)
    p.add_argument("--last-tol", type=float, default=0.35)
    a = p.parse_args()
    gpu = [json.loads(line)["loss"] for line in open(a.metrics) if line.strip()]
    ref = json.load(open(a.ref_losses))
    if len(gpu) != len(ref):
        print("%s: %d GPU steps but %d reference steps" % (a.name, len(gpu), len(ref)))
        return 1
    first = abs(gpu[0] - ref[0]) / abs(ref[0])
    fall_gpu, fall_ref = 1 - gpu[-1] / gpu[0], 1 - ref[-1] / ref[0]
    last = abs(gpu[-1] - ref[-1]) / abs(ref[-1])
    worst = max(abs(g - r) / ref[0] for g, r in zip(gpu, ref))
    params = {}
    if a.trained and a.ref_params:
        got, want = read_safetensors(a.trained), read_safetensors(a.ref_params)
        for name, w in want.items():
            if name not in got or name in ("loss",):
                continue
            g = got[name]
            num = math.sqrt(sum((x - y) ** 2 for x, y in zip(g, w)))
            den = math.sqrt(sum(y * y for y in w)) or 1.0
            params[name] = num / den
    ok = (first <= a.first_tol and abs(fall_gpu - fall_ref) <= a.fall_tol
          and last <= a.last_tol and all(math.isfinite(x) for x in gpu))
    print("%s: loss %.6g -> %.6g on the GPU, %.6g -> %.6g in the interpreter; "
          "first step rel %.2e, fall %.4f vs %.4f, last rel %.3f, worst |diff|/L0 %.2e: %s"
          % (a.name, gpu[0], gpu[-1], ref[0], ref[-1], first, fall_gpu, fall_ref,
             last, worst, "ok" if ok else "FAILED"))
    for name, err in sorted(params.items()):
        print("  %-16s trained vs interpreter: rel L2 %.3e" % (name, err))
    if a.summary:
        with open(a.summary, "a") as f:
            f.write(json.dumps({"name": a.name, "ok": ok, "gpu_first": gpu[0],
                                "gpu_last": gpu[-1], "ref_first": ref[0],
                                "ref_last": ref[-1], "fall_gpu": fall_gpu,
                                "fall_ref": fall_ref, "params_rel_l2": params}) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
