#!/usr/bin/env python3
"""Forward-pass cases for the GPU correctness check (Python standard library only).

    forward_cases.py gen OUTDIR [--quick]
        Writes one .mlir per case (functions forward_m1, forward_m7, forward_m128,
        forward_m2048: quantized linear + LoRA, bf16 activations) and cases.json.
        --quick: only N x K = 1000 x 384, one LoRA rank, M in {1, 7}.

    forward_cases.py oracle CASEDIR --interp QTUNE_INTERP [--jobs J]
        For every case marked "oracle" in CASEDIR/cases.json and M in {1, 7}:
        runs the CPU reference interpreter on random inputs and keeps, under
        CASEDIR/oracle/NAME/, params.safetensors (frozen + trainable arguments),
        x_mM.safetensors (the input) and ref_mM.safetensors (the interpreter's
        output); writes CASEDIR/oracle.json. M = 1 uses
            qtune-interp CASE --entry forward_m1 --random-inputs SEED
                         --dump-inputs DUMP --out ref_m1.safetensors
        and M = 7 reuses the same params with a fresh x (--inputs).

A case is (format, N, K, r). Component names and shapes follow docs/formats.md:
codes i32[N, ceil(K*bits/32)], uniform scales/zeros bf16[N, K/G], nf4 absmax
f32[N, K/B], nf4 double quantization absmax_codes i32[N, ceil((K/B)*8/32)],
absmax_scales f32[N, ceil((K/B)/dq_block)], absmax_offset f32[1], lut table
f32[2^bits] or f32[N, K/G, 2^bits].
"""
import argparse
import concurrent.futures
import json
import os
import random
import struct
import subprocess
import sys
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "scripts"))
from qtune_tensors import DTYPE_SIZE, bf16_raw, st_read, st_write  # noqa: E402,F401

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (1000, 384)]
QUICK_SHAPE = (1000, 384)
RANKS = [8, 64]
QUICK_RANK = 8
MS = [1, 7, 128, 2048]
QUICK_MS = [1, 7]
ORACLE_SHAPE = (1000, 384)
ORACLE_MS = [1, 7]


def formats():
    """Every format of the matrix, as dicts (see format_attr)."""
    out = []
    for bits in (2, 3, 4, 8):
        for group in (32, 64, 128, 0):
            for symmetric in (True, False):
                out.append({"kind": "uniform", "bits": bits, "group": group,
                            "symmetric": symmetric, "scale_type": "bf16"})
    out.append({"kind": "nf4", "bits": 4, "block": 64, "double_quant": False})
    out.append({"kind": "nf4", "bits": 4, "block": 64, "double_quant": True,
                "dq_block": 256})
    out.append({"kind": "lut", "bits": 4, "group": 0})
    out.append({"kind": "lut", "bits": 3, "group": 128})
    return out


def format_id(f):
    """Short, file-name-safe id of a format."""
    if f["kind"] == "uniform":
        g = "pc" if f["group"] == 0 else "g%d" % f["group"]
        return "u%d_%s_%s" % (f["bits"], g, "sym" if f["symmetric"] else "asym")
    if f["kind"] == "nf4":
        if f["double_quant"]:
            return "nf4dq_b%d_d%d" % (f["block"], f["dq_block"])
        return "nf4_b%d" % f["block"]
    g = "pt" if f["group"] == 0 else "g%d" % f["group"]
    return "lut%d_%s" % (f["bits"], g)


def format_label(f):
    """Human-readable label used to group results per format."""
    if f["kind"] == "uniform":
        g = "per-channel" if f["group"] == 0 else "group %d" % f["group"]
        return "uniform %db %s %s" % (f["bits"], g, "sym" if f["symmetric"] else "asym")
    if f["kind"] == "nf4":
        if f["double_quant"]:
            return "nf4 block %d dq %d" % (f["block"], f["dq_block"])
        return "nf4 block %d" % f["block"]
    g = "per-tensor" if f["group"] == 0 else "group %d" % f["group"]
    return "lut %db %s" % (f["bits"], g)


def format_attr(f):
    """The MLIR attribute of a format."""
    if f["kind"] == "uniform":
        return ("#qtune.uniform<bits = %d, group = %d, symmetric = %s, scale_type = %s>"
                % (f["bits"], f["group"], "true" if f["symmetric"] else "false",
                   f["scale_type"]))
    if f["kind"] == "nf4":
        if f["double_quant"]:
            return ("#qtune.nf4<block = %d, double_quant = true, dq_block = %d>"
                    % (f["block"], f["dq_block"]))
        return "#qtune.nf4<block = %d>" % f["block"]
    if f["group"]:
        return "#qtune.lut<bits = %d, group = %d>" % (f["bits"], f["group"])
    return "#qtune.lut<bits = %d>" % f["bits"]


def words(count, bits):
    return (count * bits + 31) // 32


def skip_reason(f, n, k):
    """Why (format, N, K) is not a valid combination, or None."""
    if f["kind"] in ("uniform", "lut") and f["group"] and k % f["group"]:
        return "group %d does not divide K = %d" % (f["group"], k)
    if f["kind"] == "nf4" and k % f["block"]:
        return "block %d does not divide K = %d" % (f["block"], k)
    return None


MLIR_TYPES = {"I32": "i32", "BF16": "bf16", "F32": "f32", "F16": "f16"}


def components(f, n, k):
    """Components in operand order: name, shape, safetensors dtype, and for packed
    integer components the number of codes per row and their width."""
    comps = [{"name": "codes", "shape": [n, words(k, f["bits"])], "dtype": "I32",
              "packed": {"count": k, "bits": f["bits"]}}]
    if f["kind"] == "uniform":
        groups = k // (f["group"] or k)
        st = f["scale_type"].upper()
        comps.append({"name": "scales", "shape": [n, groups], "dtype": st})
        if not f["symmetric"]:
            comps.append({"name": "zeros", "shape": [n, groups], "dtype": st})
    elif f["kind"] == "nf4":
        blocks = k // f["block"]
        if f["double_quant"]:
            comps.append({"name": "absmax_codes", "shape": [n, words(blocks, 8)],
                          "dtype": "I32", "packed": {"count": blocks, "bits": 8}})
            comps.append({"name": "absmax_scales",
                          "shape": [n, -(-blocks // f["dq_block"])], "dtype": "F32"})
            comps.append({"name": "absmax_offset", "shape": [1], "dtype": "F32"})
        else:
            comps.append({"name": "absmax", "shape": [n, blocks], "dtype": "F32"})
    else:
        entries = 1 << f["bits"]
        if f["group"]:
            comps.append({"name": "table", "shape": [n, k // f["group"], entries],
                          "dtype": "F32"})
        else:
            comps.append({"name": "table", "shape": [entries], "dtype": "F32"})
    return comps


def tensor_type(shape, dtype):
    return "tensor<%sx%s>" % ("x".join(str(d) for d in shape), MLIR_TYPES[dtype])


def weight_type(n, k, f):
    return "!qtune.qweight<%dx%d, %s>" % (n, k, format_attr(f))


def forward_function(m, n, k, r, alpha, f, comps):
    wtype = "!w"
    xt = tensor_type([m, k], "BF16")
    yt = tensor_type([m, n], "BF16")
    at = tensor_type([r, k], "BF16")
    bt = tensor_type([n, r], "BF16")
    args = ['    %%x: %s {qtune.name = "x", qtune.role = #qtune.role<input>}' % xt]
    for c in comps:
        args.append('    %%%s: %s {qtune.name = "%s", qtune.role = #qtune.role<frozen>}'
                    % (c["name"], tensor_type(c["shape"], c["dtype"]), c["name"]))
    args.append('    %%lora_A: %s {qtune.name = "lora_A", qtune.role = #qtune.role<trainable>}' % at)
    args.append('    %%lora_B: %s {qtune.name = "lora_B", qtune.role = #qtune.role<trainable>}' % bt)
    operands = ", ".join("%" + c["name"] for c in comps)
    ctypes = ", ".join(tensor_type(c["shape"], c["dtype"]) for c in comps)
    return "\n".join([
        "func.func @forward_m%d(" % m,
        ",\n".join(args) + ")",
        '    -> (%s {qtune.name = "y"}) {' % yt,
        "  %%w = qtune.qweight %s : %s -> %s" % (operands, ctypes, wtype),
        "  %%y = qtune.linear %%x, %%w : %s, %s -> %s" % (xt, wtype, yt),
        "  %%d = qtune.lora %%x, %%lora_A, %%lora_B {alpha = %.1f : f64, rank = %d : i64}"
        % (alpha, r),
        "      : %s, %s, %s -> %s" % (xt, at, bt, yt),
        "  %%s = arith.addf %%y, %%d : %s" % yt,
        "  return %%s : %s" % yt,
        "}",
    ])


def case_module(case):
    f, n, k, r = case["format"], case["N"], case["K"], case["r"]
    head = ("// qtune GPU forward case %s: %s, N = %d, K = %d, LoRA rank %d.\n"
            "// Generated by test/Integration/GPU/forward_cases.py; y = x . W^T + "
            "(alpha/r) . (x . A^T) . B^T.\n" % (case["name"], case["format_label"], n, k, r))
    funcs = [forward_function(m, n, k, r, case["alpha"], f, case["components"])
             for m in case["ms"]]
    alias = "!w = %s\n" % weight_type(n, k, f)
    return head + "\n" + alias + "\n" + "\n\n".join(funcs) + "\n"


def build_cases(quick):
    shapes = [QUICK_SHAPE] if quick else SHAPES
    ranks = [QUICK_RANK] if quick else RANKS
    ms = QUICK_MS if quick else MS
    cases, skipped = [], []
    for f in formats():
        for (n, k) in shapes:
            reason = skip_reason(f, n, k)
            for r in ranks:
                name = "%s_N%d_K%d_r%d" % (format_id(f), n, k, r)
                if reason:
                    skipped.append({"name": name, "format": f, "format_label": format_label(f),
                                    "N": n, "K": k, "r": r, "reason": reason})
                    continue
                cases.append({
                    "name": name,
                    "file": name + ".mlir",
                    "bundle": name + ".qtb",
                    "format": f,
                    "format_id": format_id(f),
                    "format_label": format_label(f),
                    "format_attr": format_attr(f),
                    "N": n, "K": k, "r": r, "alpha": 2.0 * r,
                    "ms": list(ms),
                    "entries": {str(m): "forward_m%d" % m for m in ms},
                    "components": components(f, n, k),
                    "lora": [{"name": "lora_A", "shape": [r, k], "dtype": "BF16"},
                             {"name": "lora_B", "shape": [n, r], "dtype": "BF16"}],
                    "inputs": [{"name": "x", "shape": ["M", k], "dtype": "BF16"}],
                    "output": {"name": "y", "shape": ["M", n]},
                    "oracle": (n, k) == ORACLE_SHAPE,
                })
    return cases, skipped


def cmd_gen(args):
    os.makedirs(args.outdir, exist_ok=True)
    cases, skipped = build_cases(args.quick)
    for case in cases:
        with open(os.path.join(args.outdir, case["file"]), "w") as fh:
            fh.write(case_module(case))
    doc = {
        "version": 1,
        "generator": "test/Integration/GPU/forward_cases.py",
        "quick": args.quick,
        "ms": QUICK_MS if args.quick else MS,
        "oracle_ms": ORACLE_MS,
        "tolerance": {"rel_gpu": 1e-2, "rel_oracle": 1e-6},
        "cases": cases,
        "skipped": skipped,
    }
    with open(os.path.join(args.outdir, "cases.json"), "w") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")
    print("wrote %d cases (%d skipped) into %s" % (len(cases), len(skipped), args.outdir))
    for s in skipped:
        print("  skipped %s: %s" % (s["name"], s["reason"]))
    return 0


# --- safetensors, standard library only ------------------------------------------

def zero_padding(raw, rows, row_words, count, bits):
    """Clears the padding bits after the last code of every row (canonical packing:
    rows are padded with zero bits; random words fill them with noise)."""
    used = count * bits
    if used == row_words * 32:
        return raw
    keep = used - 32 * (row_words - 1)
    mask = (1 << keep) - 1
    buf = bytearray(raw)
    for n in range(rows):
        off = 4 * (n * row_words + row_words - 1)
        (w,) = struct.unpack_from("<I", buf, off)
        struct.pack_into("<I", buf, off, w & mask)
    return bytes(buf)


def case_seed(name, m=0):
    return zlib.crc32(("%s/m%d" % (name, m)).encode()) & 0x7FFFFFFF


def run_logged(cmd, log, casedir):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    # Logged with the tool's name and paths relative to the case folder.
    shown = [os.path.basename(cmd[0])] + [
        os.path.relpath(a, casedir) if os.path.isabs(a) and a.startswith(casedir) else a
        for a in cmd[1:]]
    log.append(" ".join(shown))
    if proc.returncode != 0:
        raise RuntimeError("command failed (exit %d): %s\n%s%s" % (
            proc.returncode, " ".join(cmd), proc.stdout[-4000:], proc.stderr[-4000:]))
    return proc


def oracle_case(case, casedir, interp):
    """Produces the oracle files of one case; returns its oracle.json entry."""
    name = case["name"]
    odir = os.path.join(casedir, "oracle", name)
    os.makedirs(odir, exist_ok=True)
    mlir = os.path.join(casedir, case["file"])
    log = []
    seed = case_seed(name, 1)
    dump = os.path.join(odir, "dump_m1.safetensors")
    ref1 = os.path.join(odir, "ref_m1.safetensors")
    run_logged([interp, mlir, "--entry", "forward_m1", "--random-inputs", str(seed),
                "--dump-inputs", dump, "--out", ref1], log, casedir)
    tensors = st_read(dump)
    os.remove(dump)
    packed = {c["name"]: c for c in case["components"] if "packed" in c}
    params = {}
    for c in case["components"] + case["lora"]:
        if c["name"] not in tensors:
            raise RuntimeError("%s: --dump-inputs wrote no tensor '%s' (has: %s)"
                               % (name, c["name"], ", ".join(sorted(tensors))))
        dtype, shape, raw = tensors[c["name"]]
        if shape != c["shape"]:
            raise RuntimeError("%s: dumped '%s' has shape %s, expected %s"
                               % (name, c["name"], shape, c["shape"]))
        if c["name"] in packed:
            p = packed[c["name"]]["packed"]
            raw = zero_padding(raw, shape[0], shape[1], p["count"], p["bits"])
        params[c["name"]] = (dtype, shape, raw)
    st_write(os.path.join(odir, "params.safetensors"), params)
    st_write(os.path.join(odir, "x_m1.safetensors"), {"x": tensors["x"]})
    runs = [{"M": 1, "entry": "forward_m1", "seed": seed,
             "inputs": "oracle/%s/x_m1.safetensors" % name,
             "ref": "oracle/%s/ref_m1.safetensors" % name}]
    for m in ORACLE_MS:
        if m == 1 or m not in case["ms"]:
            continue
        seed_m = case_seed(name, m)
        rng = random.Random(seed_m)
        x = (("BF16", [m, case["K"]],
              bf16_raw(rng.uniform(-1.0, 1.0) for _ in range(m * case["K"]))))
        xfile = os.path.join(odir, "x_m%d.safetensors" % m)
        st_write(xfile, {"x": x})
        merged = os.path.join(odir, "in_m%d.safetensors" % m)
        st_write(merged, dict(params, x=x))
        ref = os.path.join(odir, "ref_m%d.safetensors" % m)
        run_logged([interp, mlir, "--entry", "forward_m%d" % m, "--inputs", merged,
                    "--out", ref], log, casedir)
        os.remove(merged)
        runs.append({"M": m, "entry": "forward_m%d" % m, "seed": seed_m,
                     "inputs": "oracle/%s/x_m%d.safetensors" % (name, m),
                     "ref": "oracle/%s/ref_m%d.safetensors" % (name, m)})
    return {"name": name, "params": "oracle/%s/params.safetensors" % name,
            "runs": runs, "commands": log}


def cmd_oracle(args):
    with open(os.path.join(args.casedir, "cases.json")) as fh:
        doc = json.load(fh)
    args.casedir = os.path.abspath(args.casedir)
    todo = [c for c in doc["cases"] if c.get("oracle")]
    entries, failures = [], []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futs = {pool.submit(oracle_case, c, args.casedir, args.interp): c for c in todo}
        done = 0
        for fut in concurrent.futures.as_completed(futs):
            done += 1
            c = futs[fut]
            try:
                entries.append(fut.result())
                print("[oracle %d/%d] %s" % (done, len(todo), c["name"]), flush=True)
            except Exception as e:  # report every failure, not just the first
                failures.append({"name": c["name"], "error": str(e)})
                print("[oracle %d/%d] %s FAILED\n%s" % (done, len(todo), c["name"], e),
                      flush=True)
    entries.sort(key=lambda e: e["name"])
    with open(os.path.join(args.casedir, "oracle.json"), "w") as fh:
        json.dump({"version": 1, "tolerance": {"rel_gpu": 1e-2, "rel_oracle": 1e-6},
                   "cases": entries, "failures": failures}, fh, indent=1)
        fh.write("\n")
    print("oracle: %d cases, %d failed" % (len(entries), len(failures)))
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen", help="write the case .mlir files and cases.json")
    g.add_argument("outdir")
    g.add_argument("--quick", action="store_true",
                   help="only 1000 x 384, one rank, M in {1, 7}")
    o = sub.add_parser("oracle", help="interpreter references for the small cases")
    o.add_argument("casedir")
    o.add_argument("--interp", required=True, help="path of qtune-interp")
    o.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    return cmd_gen(args) if args.cmd == "gen" else cmd_oracle(args)


if __name__ == "__main__":
    sys.exit(main())
