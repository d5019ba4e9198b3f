#!/usr/bin/env python3
"""GPU check of the attention kernels (forward, dQ, dK/dV) over the cases
staged by attention_cases.py (with packed documents' segment ids for some).
For every case, with random bf16 inputs made here: the forward's o and lse, then the gradients (from qtune's own o and lse
and a random output gradient), against a float32 PyTorch reference computed
from the same bf16 inputs; PyTorch SDPA in bf16 (its flash backend) is
measured against the same reference for context. For the small cases also
against the reference interpreter's outputs made when staging. The bound is
a relative L2 error of 2e-2 for o, lse, dq, dk and dv.

    check_attention.py QTUNE_RUN CASES_DIR OUT_DIR [--filter REGEX]
"""
import argparse
import json
import os
import re
import subprocess
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

BOUND = 2e-2


def rel_l2(x, ref):
    x, ref = x.double(), ref.double()
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def run(qrun, bundle, entry, inputs, out):
    r = subprocess.run([qrun, "forward", bundle, "--entry", entry, "--inputs", inputs, "--out", out,
                        "--poison"], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError("qtune-run %s failed: %s" % (entry, (r.stdout + r.stderr)[-800:]))
    return load_file(out, device="cuda")


def heads_first(x, heads):
    b, s, _ = x.shape
    return x.view(b, s, heads, -1).transpose(1, 2)


def visible(c, device):
    """[B, 1, S, S] (or [S, S]): whether query i sees key j."""
    n = c["seq"]
    ok = torch.ones(n, n, dtype=torch.bool, device=device)
    if c["causal"]:
        ok = ok.tril()
    if c.get("segments"):
        seg = torch.tensor(c["segment_ids"], device=device)
        ok = ok & (seg[:, :, None] == seg[:, None, :])[:, None]
    return ok


def reference(c, q, k, v, g):
    """o, lse, dq, dk, dv in float32 from the bf16 inputs (math, no S×S kept
    beyond one batch at a time)."""
    h, kv = c["heads"], c["kv_heads"]
    qf, kf, vf = (heads_first(t.float(), n).detach().requires_grad_()
                  for t, n in ((q, h), (k, kv), (v, kv)))
    kr = kf.repeat_interleave(h // kv, dim=1)
    vr = vf.repeat_interleave(h // kv, dim=1)
    s = torch.matmul(qf, kr.transpose(-1, -2)) * c["scale"]
    s = s.masked_fill(~visible(c, s.device), float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    o = torch.matmul(torch.softmax(s, dim=-1), vr)
    o.backward(heads_first(g.float(), h))
    flat = lambda t: t.transpose(1, 2).reshape(t.shape[0], t.shape[2], -1)
    return {"o": flat(o.detach()), "lse": lse.detach(), "dq": flat(qf.grad), "dk": flat(kf.grad),
            "dv": flat(vf.grad)}


def sdpa(c, q, k, v, g):
    """The peer: SDPA in bf16 (flash backend where it applies)."""
    h, kv = c["heads"], c["kv_heads"]
    qh, kh, vh = (heads_first(t, n).detach().requires_grad_() for t, n in ((q, h), (k, kv), (v, kv)))
    if c.get("segments"):
        o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=visible(c, q.device),
                                           scale=c["scale"], enable_gqa=h != kv)
    else:
        o = F.scaled_dot_product_attention(qh, kh, vh, is_causal=c["causal"], scale=c["scale"],
                                           enable_gqa=h != kv)
    o.backward(heads_first(g, h))
    flat = lambda t: t.transpose(1, 2).reshape(t.shape[0], t.shape[2], -1)
    return {"o": flat(o.detach()), "dq": flat(qh.grad), "dk": flat(kh.grad), "dv": flat(vh.grad)}


def check_case(qrun, cases_dir, out, c):
    base = os.path.join(cases_dir, c["name"])
    bundle = base + ".qtb"
    gen = torch.Generator(device="cuda").manual_seed(len(c["name"]) * 7919 + c["seq"])
    b, s, h, kv, d = c["batch"], c["seq"], c["heads"], c["kv_heads"], c["head_dim"]
    rnd = lambda n: torch.randn(b, s, n * d, generator=gen, device="cuda").bfloat16()
    q, k, v, g = rnd(h), rnd(kv), rnd(kv), rnd(h)
    fin = os.path.join(out, "fwd.in.safetensors")
    extra_fwd, extra_bwd = {}, {}
    if c.get("segments"):
        seg = torch.tensor(c["segment_ids"], dtype=torch.int32)
        extra_fwd, extra_bwd = {"arg3": seg}, {"arg6": seg}
    save_file({"arg0": q.cpu(), "arg1": k.cpu(), "arg2": v.cpu(), **extra_fwd}, fin)
    f = run(qrun, bundle, "fwd", fin, os.path.join(out, "fwd.out.safetensors"))
    o, lse = f["out0"], f["out1"]
    bin_ = os.path.join(out, "bwd.in.safetensors")
    save_file({"arg0": q.cpu(), "arg1": k.cpu(), "arg2": v.cpu(), "arg3": o.bfloat16().cpu(),
               "arg4": lse.float().cpu().contiguous(), "arg5": g.cpu(), **extra_bwd}, bin_)
    gr = run(qrun, bundle, "bwd", bin_, os.path.join(out, "bwd.out.safetensors"))
    ours = {"o": o, "lse": lse, "dq": gr["out0"], "dk": gr["out1"], "dv": gr["out2"]}
    ref = reference(c, q, k, v, g)
    peer = sdpa(c, q, k, v, g)
    row = {"case": c["name"]}
    for key in ours:
        row[key] = rel_l2(ours[key], ref[key])
        if not torch.isfinite(ours[key]).all():
            row[key] = float("inf")
        if key in peer:
            row["sdpa_" + key] = rel_l2(peer[key], ref[key])
    if c.get("oracle"):
        # Against the interpreter (float64), with its own inputs.
        # The gradient's inputs (q, k, v, o, lse, g, segments) hold the forward's.
        fwd_in = os.path.join(out, "oracle.fwd.in.safetensors")
        t = load_file(base + ".bwd.in.safetensors")
        save_file({n: t[n] for n in ("arg0", "arg1", "arg2")} |
                  ({"arg3": t["arg6"]} if "arg6" in t else {}), fwd_in)
        fo = run(qrun, bundle, "fwd", fwd_in, os.path.join(out, "o.safetensors"))
        fr = load_file(base + ".fwd.ref.safetensors", device="cuda")
        bo = run(qrun, bundle, "bwd", base + ".bwd.in.safetensors", os.path.join(out, "g.safetensors"))
        br = load_file(base + ".bwd.ref.safetensors", device="cuda")
        row["interp"] = max(rel_l2(fo["out0"], fr["out0"]), rel_l2(fo["out1"], fr["out1"]),
                            *(rel_l2(bo[n], br[n]) for n in ("out0", "out1", "out2")))
    keys = [k for k in ("o", "lse", "dq", "dk", "dv", "interp") if k in row]
    row["ok"] = all(row[k] <= BOUND for k in keys)
    return row


def main():
    p = argparse.ArgumentParser()
    p.add_argument("qtune_run"); p.add_argument("cases"); p.add_argument("out")
    p.add_argument("--filter", default="")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    cases = [c for c in json.load(open(os.path.join(a.cases, "cases.json")))
             if re.search(a.filter, c["name"])]
    rows, bad = [], 0
    print("%-32s %9s %9s %9s %9s %9s %9s | sdpa bf16: %9s %9s %9s %9s" %
          ("case", "o", "lse", "dq", "dk", "dv", "interp", "o", "dq", "dk", "dv"))
    for c in cases:
        try:
            row = check_case(a.qtune_run, a.cases, a.out, c)
        except Exception as e:  # one failing case must not hide the others
            row = {"case": c["name"], "ok": False, "error": str(e)}
        rows.append(row)
        if "error" in row:
            print("%-32s ERROR %s" % (row["case"], row["error"]))
        else:
            fmt = lambda k: "%9.2e" % row[k] if k in row else "%9s" % "-"
            print("%-32s %s %s %s %s %s %s | %s %s %s %s %s" % (
                row["case"], fmt("o"), fmt("lse"), fmt("dq"), fmt("dk"), fmt("dv"), fmt("interp"),
                " " * 9, fmt("sdpa_o"), fmt("sdpa_dq"), fmt("sdpa_dk"), fmt("sdpa_dv"),
                "" if row["ok"] else "FAIL"), flush=True)
        bad += not row["ok"]
    with open(os.path.join(a.out, "attention.jsonl"), "w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    print("attention: %d/%d cases within %.0e (relative L2)" % (len(rows) - bad, len(rows), BOUND))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
