#!/usr/bin/env python3
"""GPU correctness check of compiled forward passes (quantized linear + LoRA).

    check_forward.py --cases CASEDIR --qtune-run QTUNE_RUN --out LOGDIR [options]

CASEDIR is what `forward_cases.py gen` wrote, with a bundle NAME.qtb per case
(or all of them in bundles.tar.gz), and optionally oracle.json and oracle/ from
`forward_cases.py oracle`. Needs torch and (preferably) safetensors.

Random check, for each case and each M: parameters are drawn with torch on the
device, seeded by the case name (codes uniform in [0, 2^bits) packed in the
canonical packing, scales of size ~ 1/(sqrt(K) 2^(bits-1)), ...), written to
safetensors, and `qtune-run forward BUNDLE --entry forward_mM --poison` runs on
them. Its output y is compared with a float64 reference computed here from the
same bf16-rounded values by an independent dequantizer (docs/formats.md):

    y_ref = x . W^T + (alpha / r) . (x . A^T) . B^T,   ||y - y_ref|| / ||y_ref|| <= 1e-2

and y must hold no NaN (--poison fills outputs with NaN first: a NaN left is an
element the kernels never wrote).

Oracle check, for the cases in oracle.json: qtune-run on the inputs the reference
interpreter was given must match the interpreter's output (<= 1e-2), and this
script's float64 reference on the same inputs must match it too (<= 1e-6).

Writes LOGDIR/forward.jsonl (one record per run, as they finish), forward.csv,
forward-summary.json and forward-summary.txt (the table printed last). Exits 0
when everything passed, 1 when a check failed, 2 on a setup error.
"""
import argparse
import collections
import concurrent.futures
import csv
import importlib.util
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib

import torch

try:
    import safetensors.torch as st_torch
except ImportError:  # fall back to the small reader/writer below
    st_torch = None

NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
       -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
       0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
       0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
       0.7229568362236023, 1.0]

TORCH_DTYPE = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32,
               "F64": torch.float64, "I32": torch.int32, "I64": torch.int64,
               "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16}
SCALE_DTYPE = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}


# --- safetensors -------------------------------------------------------------------

def _raw_bytes(t):
    t = t.contiguous().cpu()
    if importlib.util.find_spec("numpy") is None:  # slow, but only a fallback
        return bytes(t.view(-1).view(torch.uint8).tolist())
    if t.dtype in (torch.bfloat16, torch.float16):
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def st_save(path, tensors):
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    if st_torch is not None:
        st_torch.save_file(tensors, path)
        return
    names = {v: k for k, v in TORCH_DTYPE.items()}
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        raw = _raw_bytes(tensors[name])
        header[name] = {"dtype": names[tensors[name].dtype], "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)) + text)
        for raw in blobs:
            fh.write(raw)


def st_load(path):
    """{name: CPU tensor}; U32 words come back as I32 with the same bits."""
    if st_torch is not None:
        out = st_torch.load_file(path)
        for k, v in list(out.items()):
            if hasattr(torch, "uint32") and v.dtype == torch.uint32:
                out[k] = v.view(torch.int32)
        return out
    with open(path, "rb") as fh:
        data = fh.read()
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hlen])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        dtype = TORCH_DTYPE["I32" if info["dtype"] == "U32" else info["dtype"]]
        buf = bytearray(data[8 + hlen + b:8 + hlen + e])
        t = torch.frombuffer(buf, dtype=dtype) if buf else torch.zeros(0, dtype=dtype)
        out[name] = t.reshape(info["shape"])
    return out


# --- canonical packing (docs/formats.md), written independently of the compiler ----

def pack_codes(q, bits):
    """Codes q[R, C] (integers in [0, 2^bits)) -> words int32[R, ceil(C*bits/32)].
    Literal form of the spec: row r is one bit stream, code c at stream bits
    [c*bits, c*bits + bits), stream bit i = bit (i mod 32) of word i // 32."""
    rows, count = q.shape
    nwords = (count * bits + 31) // 32
    out = torch.empty(rows, nwords, dtype=torch.int32, device=q.device)
    weights = torch.ones(32, dtype=torch.int64, device=q.device) << torch.arange(
        32, device=q.device)
    j = torch.arange(bits, device=q.device)
    chunk = max(1, (1 << 24) // max(1, nwords * 32))
    for r0 in range(0, rows, chunk):
        qc = q[r0:r0 + chunk].to(torch.int64)
        n = qc.shape[0]
        stream = torch.zeros(n, nwords * 32, dtype=torch.int64, device=q.device)
        stream[:, :count * bits] = ((qc.unsqueeze(-1) >> j) & 1).reshape(n, count * bits)
        w = (stream.view(n, nwords, 32) * weights).sum(-1)
        w = torch.where(w >= (1 << 31), w - (1 << 32), w)
        out[r0:r0 + n] = w.to(torch.int32)
    return out


def unpack_codes(words, count, bits):
    """Words int32[R, W] -> codes int64[R, count]: each code from its first word
    shifted down, plus the high bits from the next word when it straddles."""
    rows, nwords = words.shape
    if nwords * 32 < count * bits:
        raise ValueError("%d words per row cannot hold %d codes of %d bits"
                         % (nwords, count, bits))
    w = words.to(torch.int64) & 0xFFFFFFFF
    w = torch.cat([w, torch.zeros(rows, 1, dtype=torch.int64, device=w.device)], 1)
    start = torch.arange(count, device=w.device) * bits
    idx, shift = start // 32, start % 32
    lo = w.index_select(1, idx) >> shift
    hi = w.index_select(1, idx + 1) << (32 - shift)
    return (lo | hi) & ((1 << bits) - 1)


# --- dequantization (docs/formats.md), float64 ---------------------------------------

def dequantize(fmt, comps, n, k):
    """Dense float64 W[n, k] from components (device tensors)."""
    dev = comps["codes"].device
    q = unpack_codes(comps["codes"], k, fmt["bits"])
    kk = torch.arange(k, device=dev)
    kind = fmt["kind"]
    if kind == "uniform":
        g = kk // (fmt["group"] or k)
        s = comps["scales"].to(torch.float64).index_select(1, g)
        if fmt["symmetric"]:
            z = float(1 << (fmt["bits"] - 1))
        else:
            z = comps["zeros"].to(torch.float64).index_select(1, g)
        return s * (q.to(torch.float64) - z)
    if kind == "nf4":
        table = torch.tensor(NF4, dtype=torch.float64, device=dev)
        nblocks = k // fmt["block"]
        if fmt.get("double_quant"):
            c = unpack_codes(comps["absmax_codes"], nblocks, 8).to(torch.float64)
            j = torch.arange(nblocks, device=dev) // fmt["dq_block"]
            s2 = comps["absmax_scales"].to(torch.float64).index_select(1, j)
            offset = comps["absmax_offset"].to(torch.float64).reshape(-1)[0]
            absmax = offset + s2 * (c - 128.0)
        else:
            absmax = comps["absmax"].to(torch.float64)
        return absmax.index_select(1, kk // fmt["block"]) * table[q]
    if kind == "lut":
        table = comps["table"].to(torch.float64)
        if not fmt["group"]:
            return table[q]
        entries = 1 << fmt["bits"]
        flat = table.reshape(n, -1)
        return torch.gather(flat, 1, (kk // fmt["group"]) * entries + q)
    raise ValueError("unknown format kind %r" % kind)


def self_test(dev):
    """The worked examples of docs/formats.md and a pack/unpack round trip."""
    def words_of(codes, bits):
        q = torch.tensor([codes], dtype=torch.int64, device=dev)
        return [w & 0xFFFFFFFF for w in pack_codes(q, bits)[0].tolist()]
    got = words_of([1, 2, 3, 4, 5, 6, 7, 8, 9], 4)
    assert got == [0x87654321, 0x00000009], "4-bit worked example: %s" % [hex(w) for w in got]
    row3 = [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 7]
    got = words_of(row3, 3)
    assert got == [0xC8FAC688, 0x00000001], "3-bit worked example: %s" % [hex(w) for w in got]
    codes = torch.tensor([[0xC8FAC688 - (1 << 32), 1]], dtype=torch.int32, device=dev)
    w = dequantize({"kind": "uniform", "bits": 3, "group": 0, "symmetric": True},
                   {"codes": codes, "scales": torch.ones(1, 1, device=dev)}, 1, 11)
    assert w[0].tolist() == [-4, -3, -2, -1, 0, 1, 2, 3, -4, -3, 3], w[0].tolist()
    w = dequantize({"kind": "nf4", "bits": 4, "block": 4},
                   {"codes": torch.tensor([[0x8F70]], dtype=torch.int32, device=dev),
                    "absmax": torch.full((1, 1), 2.0, device=dev)}, 1, 4)
    assert w[0].tolist() == [-2.0, 0.0, 2.0, 2 * NF4[8]], w[0].tolist()
    g = torch.Generator(device=dev)
    g.manual_seed(7)
    for bits in range(1, 9):
        for count in (1, 5, 31, 32, 33, 97):
            q = torch.randint(0, 1 << bits, (3, count), generator=g, device=dev)
            back = unpack_codes(pack_codes(q, bits), count, bits)
            assert torch.equal(back, q), "round trip bits=%d count=%d" % (bits, count)


# --- parameters ----------------------------------------------------------------------

def seed_of(text):
    return zlib.crc32(text.encode()) & 0x7FFFFFFF


def generator(dev, text):
    g = torch.Generator(device=dev)
    g.manual_seed(seed_of(text))
    return g


def make_params(case, dev):
    """Components + LoRA factors of a case, on the device, in their file dtypes."""
    f, n, k, r = case["format"], case["N"], case["K"], case["r"]
    g = generator(dev, case["name"] + "/params")
    bits = f["bits"]
    sq = math.sqrt(k)

    def rand(*shape):
        return torch.rand(*shape, generator=g, device=dev, dtype=torch.float64)

    def randn(*shape):
        return torch.randn(*shape, generator=g, device=dev, dtype=torch.float64)

    p = {"codes": pack_codes(torch.randint(0, 1 << bits, (n, k), generator=g, device=dev),
                             bits)}
    if f["kind"] == "uniform":
        groups = k // (f["group"] or k)
        st = SCALE_DTYPE[f["scale_type"]]
        base = 1.0 / (sq * 2 ** (bits - 1))
        p["scales"] = ((0.5 + rand(n, groups)) * base).to(st)
        if not f["symmetric"]:
            p["zeros"] = torch.randint(0, 1 << bits, (n, groups), generator=g,
                                       device=dev).to(st)
    elif f["kind"] == "nf4":
        nblocks = k // f["block"]
        if f.get("double_quant"):
            c = torch.randint(0, 256, (n, nblocks), generator=g, device=dev)
            p["absmax_codes"] = pack_codes(c, 8)
            nd = -(-nblocks // f["dq_block"])
            # absmax = offset + s2 (c - 128) stays in [0.25, 1.5] / sqrt(K).
            p["absmax_scales"] = ((0.5 + rand(n, nd)) * (0.5 / sq / 128)).to(torch.float32)
            p["absmax_offset"] = ((1.0 + 0.25 * rand(1)) / sq).to(torch.float32)
        else:
            p["absmax"] = ((0.5 + rand(n, nblocks)) / sq).to(torch.float32)
    elif f["kind"] == "lut":
        entries = 1 << bits
        shape = (n, k // f["group"], entries) if f["group"] else (entries,)
        p["table"] = (torch.sort(randn(*shape), dim=-1).values / sq).to(torch.float32)
    p["lora_A"] = (randn(r, k) / sq).to(torch.bfloat16)
    p["lora_B"] = (randn(n, r) * 0.1).to(torch.bfloat16)
    return p


def make_x(case, m, dev):
    g = generator(dev, "%s/x/m%d" % (case["name"], m))
    x = torch.rand(m, case["K"], generator=g, device=dev, dtype=torch.float64) * 2 - 1
    return x.to(torch.bfloat16)


def check_component_shapes(case, params):
    for c in case["components"] + case["lora"]:
        t = params.get(c["name"])
        if t is None:
            raise ValueError("no tensor '%s' (have: %s)" % (c["name"], ", ".join(sorted(params))))
        if list(t.shape) != list(c["shape"]):
            raise ValueError("tensor '%s' has shape %s, cases.json says %s"
                             % (c["name"], list(t.shape), c["shape"]))


class Reference:
    """float64 pieces of y = x W^T + (alpha/r) (x A^T) B^T for one parameter set."""

    def __init__(self, case, params):
        self.w = dequantize(case["format"], params, case["N"], case["K"])
        self.a = params["lora_A"].to(torch.float64)
        self.b = params["lora_B"].to(torch.float64)
        self.scale = case["alpha"] / case["r"]

    def parts(self, x):
        x = x.to(torch.float64)
        return x @ self.w.t(), (x @ self.a.t()) @ self.b.t()

    def __call__(self, x):
        base, lora = self.parts(x)
        return base + self.scale * lora


def rel_err(y, ref):
    den = torch.linalg.norm(ref).item()
    num = torch.linalg.norm(y - ref).item()
    return num / den if den > 0 else num


# --- running qtune-run ------------------------------------------------------------------

def run_qtune(qtune_run, bundle, entry, inputs, params, out, timeout):
    cmd = [qtune_run, "forward", bundle, "--entry", entry, "--inputs", inputs,
           "--params", params, "--out", out, "--poison"]
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        rc, so, se = proc.returncode, proc.stdout, proc.stderr
        err = None if rc == 0 else "qtune-run exited with status %d" % rc
    except subprocess.TimeoutExpired as e:
        rc, err = None, "qtune-run timed out after %d s" % timeout
        so = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        se = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
    except OSError as e:
        rc, so, se, err = None, "", str(e), "could not start qtune-run: %s" % e
    return {"cmd": cmd, "rc": rc, "stdout": so, "stderr": se, "error": err,
            "seconds": time.time() - t0}


def read_output(path, m, n):
    if not os.path.exists(path):
        raise ValueError("qtune-run wrote no output file %s" % path)
    out = st_load(path)
    if "y" not in out:
        raise ValueError("output file has no tensor 'y' (has: %s)" % ", ".join(sorted(out)))
    y = out["y"]
    if list(y.shape) != [m, n]:
        raise ValueError("output 'y' has shape %s, expected [%d, %d]" % (list(y.shape), m, n))
    return y


def nan_report(y):
    nan = torch.isnan(y)
    count = int(nan.sum().item())
    if not count:
        return count, None
    rows = torch.nonzero(nan.any(1)).flatten()
    cols = torch.nonzero(nan.any(0)).flatten()
    return count, "rows %d..%d (%d rows), cols %d..%d (%d cols)" % (
        rows.min().item(), rows.max().item(), rows.numel(),
        cols.min().item(), cols.max().item(), cols.numel())


def hints(y, base, lora, scale):
    """How close y is to plausible mistakes (printed only for failures)."""
    cands = {"no LoRA term": base, "LoRA unscaled": base + lora,
             "LoRA times alpha": base + scale * scale * lora, "LoRA only": scale * lora,
             "zero": torch.zeros_like(base)}
    return {k: round(rel_err(y, v), 4) for k, v in cands.items()}


class Checker:
    def __init__(self, args, doc, casedir):
        self.args, self.doc, self.casedir = args, doc, casedir
        self.dev = torch.device(args.device)
        self.records = []
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs))
        os.makedirs(args.out, exist_ok=True)
        self.faildir = os.path.join(args.out, "failures")
        self.jsonl = open(os.path.join(args.out, "forward.jsonl"), "w")
        self.count = 0
        self.total = 0

    def record(self, rec):
        self.count += 1
        self.records.append(rec)
        self.jsonl.write(json.dumps(rec) + "\n")
        self.jsonl.flush()
        extra = ""
        if rec.get("oracle_rel") is not None:
            extra = " torch-vs-interp %.2e" % rec["oracle_rel"]
        rel = "rel %.2e" % rec["rel"] if rec.get("rel") is not None else "rel -"
        t = " %.2fs" % rec["run_seconds"] if rec.get("run_seconds") is not None else ""
        print("[%d/%d] %-4s %-6s %-34s M=%-4d %s%s%s%s" % (
            self.count, self.total, rec["status"], rec["check"], rec["case"], rec["M"],
            rel, extra, t, ("  " + rec["message"]) if rec.get("message") else ""), flush=True)
        if rec["status"] != "PASS" and rec.get("stderr"):
            tail = rec["stderr"].strip().splitlines()[-25:]
            print("      qtune-run stderr (last %d lines):" % len(tail))
            for line in tail:
                print("      | " + line)
        if rec["status"] != "PASS":
            os.makedirs(self.faildir, exist_ok=True)
            with open(os.path.join(self.faildir, "%s_%s_m%d.log" % (
                    rec["check"], rec["case"], rec["M"])), "w") as fh:
                fh.write(json.dumps({k: v for k, v in rec.items()
                                     if k not in ("stdout", "stderr")}, indent=1) + "\n")
                fh.write("\n--- stdout\n%s\n--- stderr\n%s\n" % (
                    rec.get("stdout", ""), rec.get("stderr", "")))

    def base_record(self, case, m, check):
        return {"check": check, "case": case["name"], "format": case["format_label"],
                "N": case["N"], "K": case["K"], "r": case["r"], "M": m,
                "status": "FAIL", "rel": None, "message": ""}

    def bundle_path(self, case):
        return os.path.join(self.casedir, case["bundle"])

    def evaluate(self, rec, run, outfile, case, m, ref_fn, tol):
        """Fills rec from a finished qtune-run; ref_fn() -> (y_ref, base, lora)."""
        rec["run_seconds"] = round(run["seconds"], 3)
        rec["command"] = " ".join(run["cmd"])
        if run["error"]:
            rec["message"] = run["error"]
            rec["stderr"], rec["stdout"] = run["stderr"][-20000:], run["stdout"][-5000:]
            return
        try:
            y = read_output(outfile, m, case["N"]).to(self.dev, torch.float64)
        except Exception as e:  # noqa: BLE001 - any unreadable output is a failure
            rec["message"] = str(e)
            rec["stderr"], rec["stdout"] = run["stderr"][-20000:], run["stdout"][-5000:]
            return
        nan, where = nan_report(y)
        inf = int(torch.isinf(y).sum().item())
        y_ref, base, lora = ref_fn()
        finite = torch.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
        rec["rel"] = rel_err(finite, y_ref)
        rec["max_abs_err"] = (finite - y_ref).abs().max().item()
        rec["ref_rms"] = (y_ref.pow(2).mean().sqrt().item())
        rec["nan"], rec["inf"] = nan, inf
        problems = []
        if nan:
            problems.append("%d NaN (unwritten) elements: %s" % (nan, where))
        if inf:
            problems.append("%d infinite elements" % inf)
        if not rec["rel"] <= tol:
            problems.append("rel %.3e > %.0e" % (rec["rel"], tol))
            if base is not None and not nan and not inf:
                rec["hints"] = hints(finite, base, lora, case["alpha"] / case["r"])
                problems.append("closest: " + ", ".join(
                    "%s %.3g" % kv for kv in sorted(rec["hints"].items(), key=lambda kv: kv[1])[:2]))
        if problems:
            rec["message"] = "; ".join(problems)
            rec["stderr"] = run["stderr"][-20000:]
        else:
            rec["status"] = "PASS"

    # -- random parameters ----------------------------------------------------------

    def prepare_random(self, case, ms, workdir):
        """Writes params and inputs of one case and starts its qtune-run runs."""
        state = {"case": case, "ms": ms, "dir": os.path.join(workdir, case["name"]),
                 "runs": {}, "error": None}
        bundle = self.bundle_path(case)
        if not os.path.exists(bundle):
            state["error"] = "no bundle %s (did qtune-compile fail for this case?)" % case["bundle"]
            return state
        try:
            os.makedirs(state["dir"], exist_ok=True)
            params = make_params(case, self.dev)
            check_component_shapes(case, params)
            pfile = os.path.join(state["dir"], "params.safetensors")
            st_save(pfile, params)
            state["ref"] = Reference(case, params)
            del params
            state["x"] = {}
            for m in ms:
                x = make_x(case, m, self.dev)
                xfile = os.path.join(state["dir"], "x_m%d.safetensors" % m)
                st_save(xfile, {"x": x})
                state["x"][m] = x
                outfile = os.path.join(state["dir"], "y_m%d.safetensors" % m)
                state["runs"][m] = (outfile, self.pool.submit(
                    run_qtune, self.args.qtune_run, bundle, case["entries"][str(m)], xfile,
                    pfile, outfile, self.args.timeout))
        except Exception as e:  # noqa: BLE001
            state["error"] = "preparing parameters failed: %s: %s" % (type(e).__name__, e)
        return state

    def finish_random(self, state):
        case = state["case"]
        for m in state["ms"]:
            rec = self.base_record(case, m, "random")
            if state["error"] or m not in state["runs"]:
                rec["message"] = state["error"] or "not run"
                self.record(rec)
                continue
            outfile, fut = state["runs"][m]
            run = fut.result()
            ref = state["ref"]
            x = state["x"][m]

            def ref_fn():
                base, lora = ref.parts(x)
                return base + ref.scale * lora, base, lora
            self.evaluate(rec, run, outfile, case, m, ref_fn, self.args.tol)
            self.record(rec)
        if not self.args.keep_files:
            shutil.rmtree(state["dir"], ignore_errors=True)
        if self.dev.type == "cuda":
            torch.cuda.empty_cache()

    def run_random(self, cases, ms_filter, workdir):
        inflight = collections.deque()
        for case in cases:
            ms = [m for m in case["ms"] if ms_filter is None or m in ms_filter]
            inflight.append(self.prepare_random(case, ms, workdir))
            while len(inflight) > self.args.lookahead:
                self.finish_random(inflight.popleft())
        while inflight:
            self.finish_random(inflight.popleft())

    # -- oracle (reference interpreter) -------------------------------------------------

    def run_oracle(self, cases_by_name, entries, ms_filter):
        """All oracle runs are queued first (the cases are small), then checked."""
        jobs = []
        for entry in entries:
            case = cases_by_name.get(entry["name"])
            if case is None:
                continue
            ref, perr = None, None
            try:
                params = {k: v.to(self.dev) for k, v in
                          st_load(os.path.join(self.casedir, entry["params"])).items()}
                check_component_shapes(case, params)
                ref = Reference(case, params)
            except Exception as e:  # noqa: BLE001
                perr = "oracle params unusable: %s: %s" % (type(e).__name__, e)
            for r in entry["runs"]:
                if ms_filter is not None and r["M"] not in ms_filter:
                    continue
                outfile = os.path.join(self.workdir, "oracle_%s_m%d.safetensors"
                                       % (case["name"], r["M"]))
                fut = None
                if perr is None and os.path.exists(self.bundle_path(case)):
                    fut = self.pool.submit(
                        run_qtune, self.args.qtune_run, self.bundle_path(case), r["entry"],
                        os.path.join(self.casedir, r["inputs"]),
                        os.path.join(self.casedir, entry["params"]), outfile,
                        self.args.timeout)
                jobs.append((case, ref, perr, r, outfile, fut))
        for case, ref, perr, r, outfile, fut in jobs:
            m = r["M"]
            rec = self.base_record(case, m, "oracle")
            if perr or fut is None:
                rec["message"] = perr or "no bundle %s (did qtune-compile fail?)" % case["bundle"]
                self.record(rec)
                continue
            try:
                x = st_load(os.path.join(self.casedir, r["inputs"]))["x"].to(self.dev)
                interp = st_load(os.path.join(self.casedir, r["ref"]))["y"].to(
                    self.dev, torch.float64)
                base, lora = ref.parts(x)
                rec["oracle_rel"] = rel_err(base + ref.scale * lora, interp)
            except Exception as e:  # noqa: BLE001
                rec["message"] = "oracle files unusable: %s: %s" % (type(e).__name__, e)
                fut.result()
                self.record(rec)
                continue
            run = fut.result()
            self.evaluate(rec, run, outfile, case, m,
                          lambda: (interp, base, lora), self.args.tol)
            if not rec["oracle_rel"] <= self.args.oracle_tol:
                rec["status"] = "FAIL"
                msg = ("torch float64 reference and interpreter disagree: rel %.3e > %.0e"
                       % (rec["oracle_rel"], self.args.oracle_tol))
                rec["message"] = (rec["message"] + "; " + msg) if rec["message"] else msg
            self.record(rec)
            if os.path.exists(outfile):
                os.remove(outfile)


# --- summary ----------------------------------------------------------------------------

def summarize(records, skipped, out_dir, header, order=()):
    groups = collections.OrderedDict()
    rank = {label: i for i, label in enumerate(order)}
    for r in sorted(records, key=lambda r: rank.get(r["format"], len(rank))):
        g = groups.setdefault(r["format"], {"random_pass": 0, "random_fail": 0,
                                            "oracle_pass": 0, "oracle_fail": 0,
                                            "worst_rel": 0.0, "worst_oracle": 0.0,
                                            "worst_case": ""})
        key = r["check"] + ("_pass" if r["status"] == "PASS" else "_fail")
        g[key] += 1
        rel = r.get("rel")
        if rel is None or math.isnan(rel):
            rel = math.inf  # a run that produced no comparable output
        if rel >= g["worst_rel"]:
            g["worst_rel"], g["worst_case"] = rel, "%s M=%d" % (r["case"], r["M"])
        if r.get("oracle_rel") is not None:
            g["worst_oracle"] = max(g["worst_oracle"], r["oracle_rel"])
    lines = [header, ""]
    fmt = "%-30s %9s %9s %11s %12s  %s"
    lines.append(fmt % ("format", "random", "oracle", "worst rel", "torch/interp", "worst run"))
    lines.append(fmt % ("", "pass/fail", "pass/fail", "(tol 1e-2)", "(tol 1e-6)", ""))
    tot = collections.Counter()
    worst = 0.0
    for name, g in groups.items():
        for k in ("random_pass", "random_fail", "oracle_pass", "oracle_fail"):
            tot[k] += g[k]
        worst = max(worst, g["worst_rel"])
        lines.append(fmt % (name, "%d/%d" % (g["random_pass"], g["random_fail"]),
                            "%d/%d" % (g["oracle_pass"], g["oracle_fail"]),
                            "%.2e" % g["worst_rel"],
                            ("%.1e" % g["worst_oracle"]) if g["oracle_pass"] + g["oracle_fail"]
                            else "-", g["worst_case"]))
    lines.append(fmt % ("TOTAL", "%d/%d" % (tot["random_pass"], tot["random_fail"]),
                        "%d/%d" % (tot["oracle_pass"], tot["oracle_fail"]),
                        "%.2e" % worst, "", ""))
    if skipped:
        lines.append("")
        lines.append("skipped combinations (%d):" % len(skipped))
        for s in skipped:
            lines.append("  %s: %s" % (s["name"], s["reason"]))
    failed = [r for r in records if r["status"] != "PASS"]
    if failed:
        by_m = collections.Counter(r["M"] for r in failed)
        by_shape = collections.Counter("%dx%d" % (r["N"], r["K"]) for r in failed)
        by_r = collections.Counter(r["r"] for r in failed)
        lines.append("")
        lines.append("failed by M: %s; by N x K: %s; by r: %s" % (
            ", ".join("%d: %d" % kv for kv in sorted(by_m.items())),
            ", ".join("%s: %d" % kv for kv in sorted(by_shape.items())),
            ", ".join("%d: %d" % kv for kv in sorted(by_r.items()))))
        shown = 12
        lines.append("failures (%d; all in forward.csv, details in failures/):" % len(failed))
        for r in failed[:shown]:
            msg = r["message"] if len(r["message"]) <= 150 else r["message"][:147] + "..."
            lines.append("  %s %s M=%d: %s" % (r["check"], r["case"], r["M"], msg))
        if len(failed) > shown:
            lines.append("  ... %d more" % (len(failed) - shown))
    passed = len(records) - len(failed)
    lines.append("")
    lines.append("forward: %d passed, %d failed" % (passed, len(failed)))
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out_dir, "forward-summary.txt"), "w") as fh:
        fh.write(text)
    with open(os.path.join(out_dir, "forward-summary.json"), "w") as fh:
        json.dump({"passed": passed, "failed": len(failed),
                   "by_format": groups, "skipped": skipped}, fh, indent=1,
                  default=lambda v: None)
    cols = ["check", "case", "format", "N", "K", "r", "M", "status", "rel", "oracle_rel",
            "max_abs_err", "ref_rms", "nan", "inf", "run_seconds", "message"]
    with open(os.path.join(out_dir, "forward.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in records:
            w.writerow(r)
    return text, len(failed)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", help="folder with cases.json and the bundles")
    ap.add_argument("--qtune-run", help="the qtune-run executable")
    ap.add_argument("--out", help="folder for the logs")
    ap.add_argument("--work", help="scratch folder for parameter files (default: a temp dir)")
    ap.add_argument("--device", default="cuda", help="torch device of the reference (cuda)")
    ap.add_argument("--jobs", "-j", type=int, default=4, help="qtune-run processes at once")
    ap.add_argument("--lookahead", type=int, default=1,
                    help="cases prepared ahead of the one being checked")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per qtune-run")
    ap.add_argument("--tol", type=float, default=1e-2, help="relative error bound of y")
    ap.add_argument("--oracle-tol", type=float, default=1e-6,
                    help="bound between the torch and interpreter float64 references")
    ap.add_argument("--filter", help="regular expression on case names")
    ap.add_argument("--ms", help="comma-separated M values to run (default: all)")
    ap.add_argument("--shard", help="I/N: run every N-th case starting at I (0-based)")
    ap.add_argument("--no-random", action="store_true", help="skip the random-parameter check")
    ap.add_argument("--no-oracle", action="store_true", help="skip the interpreter check")
    ap.add_argument("--self-test", action="store_true",
                    help="only check the packing and dequantization against the worked "
                         "examples of docs/formats.md, then exit")
    ap.add_argument("--no-table", action="store_true",
                    help="do not print the summary table (it is still written)")
    ap.add_argument("--keep-files", action="store_true", help="keep parameter/output files")
    args = ap.parse_args()
    if not args.self_test and not (args.cases and args.qtune_run and args.out):
        ap.error("--cases, --qtune-run and --out are required")
    return args


def main():
    args = parse_args()
    if args.self_test:
        self_test(torch.device(args.device))
        print("self-test passed (packing worked examples, dequantization, round trips)")
        return 0
    casedir = os.path.abspath(args.cases)
    os.makedirs(args.out, exist_ok=True)
    try:
        with open(os.path.join(casedir, "cases.json")) as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as e:
        print("error: cannot read %s/cases.json: %s" % (casedir, e), file=sys.stderr)
        return 2
    if not (os.path.isfile(args.qtune_run) and os.access(args.qtune_run, os.X_OK)):
        print("error: qtune-run %s is not an executable file" % args.qtune_run, file=sys.stderr)
        return 2
    args.qtune_run = os.path.abspath(args.qtune_run)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: torch sees no CUDA device (torch %s, CUDA %s)"
              % (torch.__version__, torch.version.cuda), file=sys.stderr)
        return 2

    workdir = args.work or tempfile.mkdtemp(prefix="qtune-forward-")
    os.makedirs(workdir, exist_ok=True)
    tarball = os.path.join(casedir, "bundles.tar.gz")
    if os.path.exists(tarball):
        unpacked = os.path.join(workdir, "bundles")
        print("unpacking %s into %s" % (tarball, unpacked), flush=True)
        with tarfile.open(tarball) as tf:
            if hasattr(tarfile, "data_filter"):
                tf.extractall(unpacked, filter="data")
            else:
                tf.extractall(unpacked)
        for c in doc["cases"]:
            src = os.path.join(unpacked, c["bundle"])
            if os.path.exists(src):
                c["bundle"] = src

    try:
        self_test(torch.device(args.device))
    except AssertionError as e:
        print("error: packing/dequantization self-test failed: %s" % e, file=sys.stderr)
        return 2

    cases = doc["cases"]
    if args.filter:
        cases = [c for c in cases if re.search(args.filter, c["name"])]
    if args.shard:
        i, n = (int(v) for v in args.shard.split("/"))
        cases = [c for j, c in enumerate(cases) if j % n == i]
    ms_filter = set(int(v) for v in args.ms.split(",")) if args.ms else None

    oracle_entries = []
    opath = os.path.join(casedir, "oracle.json")
    if not args.no_oracle and os.path.exists(opath):
        with open(opath) as fh:
            odoc = json.load(fh)
        names = {c["name"] for c in cases}
        oracle_entries = [e for e in odoc["cases"] if e["name"] in names]
        for f in odoc.get("failures", []):
            print("note: staging could not produce oracle files for %s" % f["name"])

    dev_name = (torch.cuda.get_device_name(torch.device(args.device))
                if args.device.startswith("cuda") else args.device)
    header = ("qtune forward check: %d cases, M %s, %d oracle cases; device %s; torch %s; "
              "safetensors %s" % (len(cases), sorted(ms_filter) if ms_filter else doc["ms"],
                                  len(oracle_entries), dev_name, torch.__version__,
                                  "yes" if st_torch is not None else "fallback"))
    print(header, flush=True)

    checker = Checker(args, doc, casedir)
    checker.workdir = workdir
    n_random = 0 if args.no_random else sum(
        len([m for m in c["ms"] if ms_filter is None or m in ms_filter]) for c in cases)
    n_oracle = sum(len([r for r in e["runs"] if ms_filter is None or r["M"] in ms_filter])
                   for e in oracle_entries)
    checker.total = n_random + n_oracle
    t0 = time.time()
    try:
        if oracle_entries:
            checker.run_oracle({c["name"]: c for c in cases}, oracle_entries, ms_filter)
        if not args.no_random:
            checker.run_random(cases, ms_filter, workdir)
    finally:
        checker.pool.shutdown(wait=True)
        checker.jsonl.close()
        if not args.work and not args.keep_files:
            shutil.rmtree(workdir, ignore_errors=True)
    header += "; %.0f s" % (time.time() - t0)
    skipped = [s for s in doc.get("skipped", [])
               if not args.filter or re.search(args.filter, s["name"])]
    order = []
    for c in doc["cases"]:
        if c["format_label"] not in order:
            order.append(c["format_label"])
    text, failed = summarize(checker.records, skipped, args.out, header, order)
    if not args.no_table:
        print()
        print(text, end="")
    else:
        print("forward: %d passed, %d failed (table: %s)" % (
            len(checker.records) - failed, failed,
            os.path.join(args.out, "forward-summary.txt")))
    if not checker.records:
        print("error: nothing was checked", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
