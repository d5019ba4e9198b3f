#!/usr/bin/env python3
"""Compares the tensors two safetensors files share (standard library only).

    compare-outputs.py GOT REF [--tol 1e-2]

Prints ‖got − ref‖ / ‖ref‖ per tensor and exits non-zero when one exceeds the
tolerance, a value is not finite, or a tensor of REF is missing from GOT.
"""
import json, math, struct, sys

FMT = {"F32": ("f", 4), "F64": ("d", 8), "I32": ("i", 4), "I64": ("q", 8)}


def load(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base, out = 8 + n, {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] == "BF16":
            lo, hi = info["data_offsets"]
            raw = data[base + lo:base + hi]
            out[name] = [struct.unpack("<f", b"\0\0" + raw[i:i + 2])[0] for i in range(0, len(raw), 2)]
            continue
        code, size = FMT[info["dtype"]]
        lo, hi = info["data_offsets"]
        out[name] = list(struct.unpack("<%d%s" % ((hi - lo) // size, code), data[base + lo:base + hi]))
    return out


def main():
    args = sys.argv[1:]
    tol = 1e-2
    if "--tol" in args:
        i = args.index("--tol"); tol = float(args[i + 1]); del args[i:i + 2]
    got, ref = load(args[0]), load(args[1])
    ok = True
    for name, r in ref.items():
        g = got.get(name)
        if g is None or len(g) != len(r):
            print(f"{name}: missing or wrong size"); ok = False; continue
        if not all(math.isfinite(v) for v in g):
            print(f"{name}: non-finite values"); ok = False; continue
        err = math.sqrt(sum((a - b) ** 2 for a, b in zip(g, r)))
        norm = math.sqrt(sum(b * b for b in r)) or 1.0
        rel = err / norm
        ok &= rel <= tol
        print(f"{name}: rel. error {rel:.2e} vs the reference interpreter ({'ok' if rel <= tol else 'FAIL'})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
