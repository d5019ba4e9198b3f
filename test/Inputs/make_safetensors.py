#!/usr/bin/env python3
"""Writes a .safetensors file from tensors given on the command line (for tests).

    make_safetensors.py OUT NAME:DTYPE:SHAPE=VALUES ...

SHAPE is e.g. 2x3 (or 'scalar'); VALUES is a comma-separated list whose items are
numbers (ints may be hex, 0x87654321) or 'V*N' for N copies of V. DTYPE is one
of F64 F32 F16 I64 I32 U32 I8 U8 (BF16: the value rounded to bfloat16).
Independent of qtune's own writer, so tests check the reader against the format.
"""
import json
import struct
import sys

FORMATS = {"F64": "d", "F32": "f", "F16": "e", "I64": "q", "I32": "i",
           "U32": "I", "I8": "b", "U8": "B"}


def bf16_bytes(values):
    out = b""
    for v in values:
        bits = struct.unpack("<I", struct.pack("<f", v))[0]
        bits += 0x7FFF + ((bits >> 16) & 1)  # round to nearest even
        out += struct.pack("<H", (bits >> 16) & 0xFFFF)
    return out


def parse_values(text, is_int):
    values = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        count = 1
        if "*" in item:
            item, n = item.split("*")
            count = int(n)
        v = int(item, 0) if is_int else float(item)
        values += [v] * count
    return values


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out_path, specs = sys.argv[1], sys.argv[2:]
    header, blobs, offset = {}, [], 0
    for spec in specs:
        head, _, vals = spec.partition("=")
        name, dtype, shape_text = head.split(":")
        shape = [] if shape_text == "scalar" else [int(d) for d in shape_text.split("x")]
        numel = 1
        for d in shape:
            numel *= d
        values = parse_values(vals, dtype[0] in "IU")
        if dtype == "I32":  # bit patterns such as 0xc8fac688 wrap to signed
            values = [v - (1 << 32) if v >= (1 << 31) else v for v in values]
        if len(values) != numel:
            sys.exit(f"{name}: {len(values)} values for shape {shape}")
        if dtype == "BF16":
            blob = bf16_bytes(values)
        else:
            blob = struct.pack("<" + FORMATS[dtype] * numel, *values)
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(out_path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


if __name__ == "__main__":
    main()
