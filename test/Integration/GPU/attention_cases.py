#!/usr/bin/env python3
"""Stages the attention kernel checks (no GPU needed; Python standard library
only): for each case a graph with a forward entry `fwd(q, k, v) -> (o, lse)`
and a gradient entry `bwd(q, k, v, o, lse, g) -> (dq, dk, dv)`, compiled into
NAME.qtb; for the small cases also inputs and the reference interpreter's
outputs (float64), so the GPU side compares against both the interpreter and
PyTorch (check_attention.py).

    attention_cases.py OUT_DIR --tools DIR [--target sm_90a] [--quick]

Cases (the interpreter's outputs for sequence 128 at ratio 4 and the odd
shapes): sequence 128, 1024, 2048, 4096 × grouped-KV ratios 1, 4, 8 × head
dimension 64 and 128 × causal or not, and odd shapes (sequence 40 or 100:
partial tiles; head dimensions 16, 48, 96; batch 2), and packed documents
(segment ids, causal or not). Writes OUT_DIR/cases.json (with each case's
segment ids).
"""
import argparse
import json
import math
import os
import random
import struct
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "scripts"))
from qtune_tensors import bf16_raw, st_read, st_write, values  # noqa: E402



def cases(quick):
    out = []
    seqs = [128, 1024] if quick else [128, 1024, 2048, 4096]
    for seq in seqs:
        for ratio in (1, 4, 8):
            for hd in (64, 128):
                for causal in (True, False):
                    out.append(dict(batch=1, seq=seq, heads=8, kv_heads=8 // ratio,
                                    head_dim=hd, causal=causal))
    for seq, heads, kv, hd, batch in ((40, 4, 2, 48, 2), (100, 2, 1, 16, 1), (100, 4, 4, 96, 2),
                                      (40, 8, 1, 128, 1), (200, 4, 1, 64, 1)):
        for causal in (True, False):
            out.append(dict(batch=batch, seq=seq, heads=heads, kv_heads=kv, head_dim=hd,
                            causal=causal))
    # Packed documents: segment ids (random document lengths).
    for seq, kv, hd, batch in ((128, 2, 64, 2), (200, 1, 48, 1), (1024, 8, 128, 1), (2048, 2, 64, 1),
                               (4096, 1, 128, 1)):
        for causal in (True, False):
            out.append(dict(batch=batch, seq=seq, heads=8 if seq > 200 else 4, kv_heads=kv,
                            head_dim=hd, causal=causal, segments=True))
    for c in out:
        c.setdefault("segments", False)
        c["name"] = "b%d_s%d_h%d_kv%d_d%d_%s%s" % (
            c["batch"], c["seq"], c["heads"], c["kv_heads"], c["head_dim"],
            "causal" if c["causal"] else "full", "_seg" if c["segments"] else "")
        c["scale"] = 1 / math.sqrt(c["head_dim"])
        # The interpreter's outputs for the odd shapes and sequence 128 at ratio 4
        # (the files travel to the GPU machine: a few MiB in all).
        c["oracle"] = c["seq"] != 128 and c["seq"] <= 200 or c["seq"] == 128 and c["kv_heads"] == 2
    return out


def graph(c):
    b, s, h, kv, d = c["batch"], c["seq"], c["heads"], c["kv_heads"], c["head_dim"]
    qt = "tensor<%dx%dx%dxbf16>" % (b, s, h * d)
    kt = "tensor<%dx%dx%dxbf16>" % (b, s, kv * d)
    lt = "tensor<%dx%dx%dxf32>" % (b, h, s)
    role = "{qtune.role = #qtune.role<input>}"
    attrs = "heads = %d : i64, kv_heads = %d : i64, scale = %r : f64, causal = %s" % (
        h, kv, c["scale"], "true" if c["causal"] else "false")
    # Segment ids, where the case has them, are the entries' last argument.
    st = "tensor<%dx%dxi32>" % (b, s)
    arg, use, ty = "", "", ""
    if c.get("segments"):
        arg, use, ty = f", %seg: {st} {role}", " segments %seg", ", " + st
    return f"""func.func @fwd(%q: {qt} {role}, %k: {kt} {role}, %v: {kt} {role}{arg}) -> ({qt}, {lt}) {{
  %o, %lse = qtune.attention %q, %k, %v{use} {{{attrs}}} : {qt}, {kt}, {kt}{ty} -> {qt}, {lt}
  return %o, %lse : {qt}, {lt}
}}
func.func @bwd(%q: {qt} {role}, %k: {kt} {role}, %v: {kt} {role}, %o: {qt} {role}, %lse: {lt} {role}, %g: {qt} {role}{arg}) -> ({qt}, {kt}, {kt}) {{
  %dq, %dk, %dv = qtune.attention_grad %q, %k, %v, %o, %lse, %g{use} {{{attrs}}} : {qt}, {kt}, {kt}, {qt}, {lt}, {qt}{ty} -> {qt}, {kt}, {kt}
  return %dq, %dk, %dv : {qt}, {kt}, {kt}
}}
"""


def segment_ids(c):
    """Nondecreasing ids of documents of random lengths (1 to S/3), per batch
    row; the same on the CPU and GPU sides (a seeded generator)."""
    rng = random.Random(c["seq"] * 31 + c["batch"] + c["head_dim"])
    ids = []
    for _ in range(c["batch"]):
        doc, left, row = 0, 0, []
        for _ in range(c["seq"]):
            if left == 0:
                doc += 1
                left = rng.randint(1, max(1, c["seq"] // 3))
            row.append(doc)
            left -= 1
        ids.append(row)
    return ids


def randn_bf16(rng, shape):
    n = 1
    for x in shape:
        n *= x
    return ("BF16", shape, bf16_raw([rng.gauss(0, 1) for _ in range(n)]))


def stage_oracle(c, out, tools):
    """Inputs and the interpreter's outputs of both entries."""
    rng = random.Random(hash(c["name"]) & 0xFFFF)
    b, s, h, kv, d = c["batch"], c["seq"], c["heads"], c["kv_heads"], c["head_dim"]
    fwd_in = {"arg0": randn_bf16(rng, [b, s, h * d]), "arg1": randn_bf16(rng, [b, s, kv * d]),
              "arg2": randn_bf16(rng, [b, s, kv * d])}
    seg = None
    if c["segments"]:
        flat = [x for row in segment_ids(c) for x in row]
        seg = ("I32", [b, s], struct.pack("<%di" % len(flat), *flat))
        fwd_in["arg3"] = seg
    base = os.path.join(out, c["name"])
    scratch = base + ".fwd.in.safetensors"
    st_write(scratch, fwd_in)
    interp = os.path.join(tools, "qtune-interp")
    subprocess.run([interp, base + ".mlir", "--entry", "fwd", "--inputs", scratch,
                    "--out", base + ".fwd.ref.safetensors"], check=True)
    os.remove(scratch)  # the gradient's inputs hold the forward's too
    ref = st_read(base + ".fwd.ref.safetensors")
    o = ref["out0"]
    bwd_in = {n: fwd_in[n] for n in ("arg0", "arg1", "arg2")}
    if seg:
        bwd_in["arg6"] = seg
    bwd_in["arg3"] = ("BF16", o[1], bf16_raw(values(o[0], o[2])))
    bwd_in["arg4"] = ref["out1"]  # F32
    bwd_in["arg5"] = randn_bf16(rng, [b, s, h * d])
    st_write(base + ".bwd.in.safetensors", bwd_in)
    subprocess.run([interp, base + ".mlir", "--entry", "bwd", "--inputs", base + ".bwd.in.safetensors",
                    "--out", base + ".bwd.ref.safetensors"], check=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--tools", required=True)
    p.add_argument("--target", default="sm_90a")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--bench", action="store_true",
                   help="also bench_bB_sS.qtb for bench/attention.py (32 heads, d 128, causal)")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    all_cases = cases(a.quick)
    if a.bench:
        for b, s in ((1, 2048), (4, 2048), (1, 4096), (4, 4096)):
            c = dict(batch=b, seq=s, heads=32, kv_heads=32, head_dim=128, causal=True,
                     scale=1 / math.sqrt(128))
            base = os.path.join(a.out, "bench_b%d_s%d" % (b, s))
            with open(base + ".mlir", "w") as fh:
                fh.write(graph(c))
            subprocess.run([os.path.join(a.tools, "qtune-compile"), base + ".mlir", "-o",
                            base + ".qtb", "--target", a.target], check=True,
                           stdout=subprocess.DEVNULL)
    for i, c in enumerate(all_cases):
        base = os.path.join(a.out, c["name"])
        with open(base + ".mlir", "w") as fh:
            fh.write(graph(c))
        subprocess.run([os.path.join(a.tools, "qtune-compile"), base + ".mlir", "-o", base + ".qtb",
                        "--target", a.target], check=True, stdout=subprocess.DEVNULL)
        if c["oracle"]:
            stage_oracle(c, a.out, a.tools)
        print("attention case %d/%d: %s%s" % (i + 1, len(all_cases), c["name"],
                                              " (+ interpreter)" if c["oracle"] else ""), flush=True)
    for c in all_cases:
        if c["segments"]:
            c["segment_ids"] = segment_ids(c)
    with open(os.path.join(a.out, "cases.json"), "w") as fh:
        json.dump(all_cases, fh)


if __name__ == "__main__":
    main()
