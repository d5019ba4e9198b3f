#!/usr/bin/env python3
"""The whole training step, side by side on one GPU: qtune LoRA, PEQA and QFT
on decoders with LLaMA-7B's layer shapes (hidden 4096, SwiGLU 11008, 32 heads,
vocab 32000; sequence 2048; synthetic weights) beside Hugging Face
transformers + PEFT, LoRA r16 alpha 32 on all seven projections, AdamW:
with bf16 base weights, with the QLoRA recipe (the same INT4 g128 weights
dequantized on the fly in forward and again in backward, by a custom autograd
function), and the bf16 model under torch.compile where it compiles.

    decoder_train.py QTUNE_RUN STAGE OUT_DIR [--steps 12] [--no-compile]
                     [--only REGEX]

STAGE holds METHOD_lL_bB.qtb bundles (qtune-import --shapes-only --seq-len
2048 --batch B of an L-layer config; scripts/gpu-stage.sh makes lora_l2_b1,
lora_l2_b4, lora_l32_b1, peqa_l2_b1, qft_l2_b1). For each: step time (median
after 3 warm-up steps), tokens/s, the arena (every device byte the runtime
allocates for the model); for LoRA also the same steps launched one by one
(--no-cuda-graphs) and the per-family profile (qtune-run train --profile).
Peers run at each (layers, batch) a qtune bundle has; their memory is
torch.cuda.max_memory_allocated(). Neither counts the CUDA context.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

here = os.path.dirname(os.path.abspath(__file__))
S, V, D, FF, H, G, R = 2048, 32000, 4096, 11008, 32, 128, 16


def qtune_run(qrun, bundle, out, steps, scratch, batch, extra=()):
    """Step ms (median after 3 warm-ups), tokens/s, arena GiB and stdout."""
    params = os.path.join(scratch, os.path.basename(bundle) + ".params.safetensors")
    if not os.path.exists(params):  # made once per bundle
        subprocess.run([sys.executable, os.path.join(here, "random_params.py"), qrun, bundle, params],
                       check=True)
    ids = torch.randint(0, V, (batch, S + 1), generator=torch.Generator().manual_seed(1))
    inputs = os.path.join(scratch, "batch_b%d.safetensors" % batch)
    save_file({"input_ids": ids[:, :-1].int().contiguous(), "labels": ids[:, 1:].int().contiguous()},
              inputs)
    metrics = os.path.join(scratch, "metrics.jsonl")
    r = subprocess.run([qrun, "train", bundle, "--inputs", inputs, "--params", params, "--steps", str(steps),
                        "--lr", "1e-5", "--metrics", metrics, "--log-every", str(steps),
                        "--out", os.path.join(scratch, "trained.safetensors"), *extra],
                       capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError("qtune-run train %s failed: %s" % (bundle, (r.stdout + r.stderr)[-800:]))
    ms = statistics.median([json.loads(l)["ms"] for l in open(metrics) if l.strip()][3:])
    inspect = subprocess.run([qrun, "inspect", bundle], capture_output=True, text=True).stdout
    arena = int(re.search(r"arena: (\d+) bytes", inspect).group(1))
    return {"tok_s": batch * S / (ms / 1e3), "ms": ms, "mem_gib": arena / 2**30, "stdout": r.stdout}


def families(stdout):
    """{family: ms} from the --profile table."""
    out, on = {}, False
    for line in stdout.splitlines():
        if line.startswith("profile of entry"):
            on = True
            continue
        if on:
            m = re.match(r"\s+(.+?)\s+([0-9.]+) ms\s+([0-9.]+) %", line)
            if line.strip().startswith("kernel"):
                break
            if m:
                out[m.group(1)] = float(m.group(2))
    return out


class Dequant(torch.autograd.Function):
    """y = x · dequant(W)ᵀ; the weight is dequantized again in backward, never kept."""

    @staticmethod
    def forward(ctx, x, layer):
        ctx.layer = layer
        return x @ layer.dequant().t()

    @staticmethod
    def backward(ctx, g):
        return g @ ctx.layer.dequant(), None


class QuantLinear(torch.nn.Linear):
    """INT4 group-128 asymmetric weight, 8 codes per int32 word (qtune's packing)."""

    def __init__(self, n, k):
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = k, n
        self.weight = torch.nn.Parameter(torch.empty(0, dtype=torch.bfloat16, device="cuda"), requires_grad=False)
        self.bias = None
        self.register_buffer("codes", torch.randint(-2**31, 2**31 - 1, (n, k // 8), dtype=torch.int64,
                                                    device="cuda").to(torch.int32))
        self.register_buffer("scales", torch.full((n, k // G), 0.002, dtype=torch.bfloat16, device="cuda"))
        self.register_buffer("zeros", torch.full((n, k // G), 8.0, dtype=torch.bfloat16, device="cuda"))
        self.shifts = torch.arange(0, 32, 4, device="cuda", dtype=torch.int32)

    def dequant(self):
        n, k = self.out_features, self.in_features
        q = ((self.codes.unsqueeze(-1) >> self.shifts) & 0xF).view(n, k // G, G).to(torch.bfloat16)
        return ((q - self.zeros.unsqueeze(-1)) * self.scales.unsqueeze(-1)).view(n, k)

    def forward(self, x):
        return Dequant.apply(x, self)


def peer(layers, batch, steps, quant, compiled):
    """transformers + PEFT LoRA on bf16 weights, or on INT4 ones dequantized
    on the fly (quant), optionally under torch.compile."""
    import peft
    import transformers
    cfg = transformers.LlamaConfig(hidden_size=D, intermediate_size=FF, num_hidden_layers=layers,
                                   num_attention_heads=H, num_key_value_heads=H, vocab_size=V,
                                   max_position_embeddings=S, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    if quant:
        for name, module in list(model.named_modules()):
            for t in targets:
                child = getattr(module, t, None)
                if isinstance(child, torch.nn.Linear) and not isinstance(child, QuantLinear):
                    setattr(module, t, QuantLinear(child.out_features, child.in_features))
    torch.cuda.empty_cache()
    model = peft.get_peft_model(model, peft.LoraConfig(r=R, lora_alpha=2 * R, lora_dropout=0.0,
                                                       target_modules=targets))
    model.to(torch.bfloat16)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=True)
    ids = torch.randint(0, V, (batch, S + 1), device="cuda")
    x, y = ids[:, :-1], ids[:, 1:]

    def loss_of(x, y):
        logits = model(input_ids=x).logits
        return F.cross_entropy(logits.float().view(-1, V), y.reshape(-1))
    step_loss = torch.compile(loss_of) if compiled else loss_of
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        step_loss(x, y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    ms = statistics.median(times[3:]) * 1e3
    row = {"tok_s": batch * S / (ms / 1e3), "ms": ms, "mem_gib": torch.cuda.max_memory_allocated() / 2**30}
    del model, opt
    torch.cuda.empty_cache()
    return row


def main():
    p = argparse.ArgumentParser()
    p.add_argument("qtune_run"); p.add_argument("stage"); p.add_argument("out")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile peer")
    p.add_argument("--only", default="", help="run only the rows whose name matches")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="qtune-bench-")
    import peft
    import transformers
    print("device:", torch.cuda.get_device_name(0), "| transformers %s, peft %s, torch %s"
          % (transformers.__version__, peft.__version__, torch.__version__), flush=True)
    bundles = sorted(f for f in os.listdir(a.stage) if re.match(r"\w+_l\d+_b\d+\.qtb$", f))
    rows, shapes = {}, set()
    for f in bundles:
        method, layers, batch = re.match(r"(\w+)_l(\d+)_b(\d+)\.qtb$", f).groups()
        layers, batch = int(layers), int(batch)
        shapes.add((layers, batch))
        name = "qtune %s (%d layers, batch %d)" % (method, layers, batch)
        if not re.search(a.only, name):
            continue
        bundle = os.path.join(a.stage, f)
        profile = ("--profile", "3") if method == "lora" else ()
        try:
            row = qtune_run(a.qtune_run, bundle, a.out, a.steps, scratch, batch, profile)
            if method == "lora":
                row["families_ms"] = families(row["stdout"])
                row["launched_one_by_one_ms"] = qtune_run(
                    a.qtune_run, bundle, a.out, a.steps, scratch, batch, ("--no-cuda-graphs",))["ms"]
            row.pop("stdout")
            rows[name] = dict(row, method=method, layers=layers, batch=batch)
        except RuntimeError as e:
            print(e, flush=True)
        for left in (f + ".params.safetensors", "trained.safetensors"):
            if os.path.exists(os.path.join(scratch, left)):
                os.remove(os.path.join(scratch, left))
        print(name, rows.get(name), flush=True)
    for layers, batch in sorted(shapes):
        for label, quant, compiled in (("bf16", False, False), ("QLoRA recipe", True, False),
                                       ("bf16, torch.compile", False, True)):
            if compiled and (a.no_compile or layers > 2):
                continue
            name = "HF + PEFT LoRA %s (%d layers, batch %d)" % (label, layers, batch)
            if not re.search(a.only, name):
                continue
            try:
                rows[name] = dict(peer(layers, batch, a.steps, quant, compiled), layers=layers, batch=batch)
            except Exception as e:  # a peer that does not run (e.g. compile fails) is reported
                print("%s: %s" % (name, str(e)[:300]), flush=True)
            print(name, rows.get(name), flush=True)

    print("\nseq %d, LLaMA-7B layer shapes, LoRA r16 on all projections" % S)
    print("| run | ms/step | tokens/s | memory GiB |\n|---|---:|---:|---:|")
    for name, r in rows.items():
        print("| %s | %.1f | %.0f | %.2f |" % (name, r["ms"], r["tok_s"], r["mem_gib"]))
    for layers, batch in sorted(shapes):
        ours = rows.get("qtune lora (%d layers, batch %d)" % (layers, batch))
        if not ours:
            continue
        for label in ("bf16", "QLoRA recipe", "bf16, torch.compile"):
            peer_row = rows.get("HF + PEFT LoRA %s (%d layers, batch %d)" % (label, layers, batch))
            if peer_row:
                print("qtune LoRA vs HF + PEFT %s (%d layers, batch %d): %.2fx the tokens/s, %.2fx the memory"
                      % (label, layers, batch, ours["tok_s"] / peer_row["tok_s"],
                         ours["mem_gib"] / peer_row["mem_gib"]))
        print("  CUDA graphs: %.1f ms a step, %.1f launched one by one" % (ours["ms"], ours["launched_one_by_one_ms"]))
        fam = ours.get("families_ms", {})
        total = sum(fam.values()) or 1
        print("  per family: " + ", ".join("%s %.1f ms (%.0f %%)" % (k, v, 100 * v / total) for k, v in fam.items()))
    json.dump(rows, open(os.path.join(a.out, "decoder_train.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
