"""Safetensors files and bfloat16 values with the Python standard library only
(for the scripts that make test data and example models on machines without
numpy or torch).

    st_read(path) -> {name: (dtype, shape, raw bytes)}
    st_write(path, {name: (dtype, shape, raw bytes)})   (atomic)
    bf16_raw(floats) -> little-endian bfloat16 bytes, rounded to nearest even
"""
import array
import json
import os
import struct

DTYPE_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "U32": 4,
              "I16": 2, "I8": 1, "U8": 1}


def st_read(path):
    """{name: (dtype, shape, raw bytes)} of a safetensors file."""
    with open(path, "rb") as fh:
        data = fh.read()
    if len(data) < 8:
        raise ValueError("%s: not a safetensors file (too short)" % path)
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hlen].decode("utf-8"))
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        out[name] = (info["dtype"], list(info["shape"]), data[base + b:base + e])
    return out


def st_write(path, tensors):
    """Writes {name: (dtype, shape, raw bytes)} (names sorted, 8-byte aligned header)."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        numel = 1
        for d in shape:
            numel *= d
        if len(raw) != numel * DTYPE_SIZE[dtype]:
            raise ValueError("%s: %d bytes for %s%s" % (name, len(raw), dtype, shape))
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)))
        fh.write(text)
        for raw in blobs:
            fh.write(raw)
    os.replace(tmp, path)


def bf16_raw(values):
    """Little-endian bfloat16 bytes of floats, rounded to nearest even."""
    words = array.array("I", array.array("f", values).tobytes())
    if struct.pack("=I", 1) != struct.pack("<I", 1):
        words.byteswap()
    out = array.array("H", (((w + 0x7FFF + ((w >> 16) & 1)) >> 16) & 0xFFFF for w in words))
    if struct.pack("=H", 1) != struct.pack("<H", 1):
        out.byteswap()
    return out.tobytes()




def values(dtype, raw):
    """The numbers held by raw little-endian bytes of `dtype` (BF16, F32, I32, ...)."""
    if dtype == "BF16":
        half = array.array("H", raw)
        if struct.pack("=H", 1) != struct.pack("<H", 1):
            half.byteswap()
        return list(array.array("f", array.array("I", (h << 16 for h in half)).tobytes()))
    codes = {"F32": "f", "F64": "d", "I32": "i", "U32": "I", "I64": "q", "I16": "h",
             "I8": "b", "U8": "B"}
    if dtype not in codes:
        raise ValueError("unsupported dtype %s" % dtype)
    out = array.array(codes[dtype], raw)
    if struct.pack("=H", 1) != struct.pack("<H", 1):
        out.byteswap()
    return list(out)
