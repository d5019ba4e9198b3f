#!/usr/bin/env python3
"""Training throughput and memory of a decoder with LLaMA-7B's layer shapes
(hidden 4096, SwiGLU 11008, 32 heads, vocab 32000; a few layers; synthetic
weights), sequence 2048, batch 1: qtune's compiled train steps (LoRA r16 on
INT4 g128, PEQA on INT4 g128, QFT on INT8 with Lion + INT8 momentum) beside
Hugging Face transformers + PEFT with the same INT4 weights dequantized on the
fly in PyTorch (the QLoRA recipe without bitsandbytes: a custom autograd
function dequantizes in forward and again in backward), in one run on one GPU.
Runs on the GPU machine.

    decoder_train.py QTUNE_RUN STAGE OUT_DIR [--steps 20] [--layers 2]

STAGE holds {lora,peqa,qft}.qtb compiled from `qtune-import --seq-len 2048
--batch 1` of the same config. Memory: qtune's arena (every device byte the
runtime allocates for the model) against torch.cuda.max_memory_allocated();
neither counts the CUDA context.
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


def qtune_run(qrun, stage, method, out, steps, scratch):
    bundle = os.path.join(stage, method + ".qtb")
    params = os.path.join(scratch, method + "_params.safetensors")
    subprocess.run([sys.executable, os.path.join(here, "random_params.py"), qrun, bundle, params], check=True)
    ids = torch.randint(0, V, (1, S + 1), generator=torch.Generator().manual_seed(1))
    batch = os.path.join(out, "batch.safetensors")
    save_file({"input_ids": ids[:, :-1].int().contiguous(), "labels": ids[:, 1:].int().contiguous()}, batch)
    metrics = os.path.join(out, method + "_metrics.jsonl")
    r = subprocess.run([qrun, "train", bundle, "--inputs", batch, "--params", params, "--steps", str(steps),
                        "--lr", "1e-5", "--metrics", metrics, "--log-every", str(steps),
                        "--out", os.path.join(scratch, "trained.safetensors")],
                       capture_output=True, text=True)
    print(r.stdout[-600:] + r.stderr[-600:])
    if r.returncode:
        raise SystemExit("qtune-run train failed for " + method)
    ms = [json.loads(l)["ms"] for l in open(metrics) if l.strip()][3:]
    inspect = subprocess.run([qrun, "inspect", bundle], capture_output=True, text=True).stdout
    arena = int(re.search(r"arena: (\d+) bytes", inspect).group(1))
    os.remove(params)
    os.remove(os.path.join(scratch, "trained.safetensors"))
    return {"tok_s": S / (statistics.median(ms) / 1e3), "ms": statistics.median(ms), "mem_gib": arena / 2**30}


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


def peer(layers, steps):
    import peft
    import transformers
    cfg = transformers.LlamaConfig(hidden_size=D, intermediate_size=FF, num_hidden_layers=layers,
                                   num_attention_heads=H, num_key_value_heads=H, vocab_size=V,
                                   max_position_embeddings=S, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    for name, module in list(model.named_modules()):
        for t in targets:
            child = getattr(module, t, None)
            if isinstance(child, torch.nn.Linear) and not isinstance(child, QuantLinear):
                setattr(module, t, QuantLinear(child.out_features, child.in_features))
    torch.cuda.empty_cache()
    model = peft.get_peft_model(model, peft.LoraConfig(r=R, lora_alpha=2 * R, lora_dropout=0.0,
                                                       target_modules=targets))
    model.to(torch.bfloat16)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ids = torch.randint(0, V, (1, S + 1), device="cuda")
    x, y = ids[:, :-1], ids[:, 1:]
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.float().view(-1, V), y.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    ms = statistics.median(times[3:]) * 1e3
    return {"tok_s": S / (ms / 1e3), "ms": ms, "mem_gib": torch.cuda.max_memory_allocated() / 2**30,
            "versions": "transformers %s, peft %s, torch %s" % (transformers.__version__, peft.__version__,
                                                                 torch.__version__)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("qtune_run"); p.add_argument("stage"); p.add_argument("out")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--layers", type=int, default=2)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="qtune-bench-")
    rows = {}
    for method in ("lora", "peqa", "qft"):
        if os.path.exists(os.path.join(a.stage, method + ".qtb")):
            rows["qtune " + method] = qtune_run(a.qtune_run, a.stage, method, a.out, a.steps, scratch)
    rows["HF + PEFT LoRA (eager dequant)"] = peer(a.layers, a.steps)
    print("\n%d layers of LLaMA-7B shapes, seq %d, batch 1, %s" % (a.layers, S, rows["HF + PEFT LoRA (eager dequant)"]["versions"]))
    print("| run | ms/step | tokens/s | peak memory GiB |\n|---|---:|---:|---:|")
    for name, r in rows.items():
        print("| %s | %.1f | %.0f | %.2f |" % (name, r["ms"], r["tok_s"], r["mem_gib"]))
    lora, hf = rows.get("qtune lora"), rows["HF + PEFT LoRA (eager dequant)"]
    if lora:
        print("qtune LoRA vs HF + PEFT: %.2fx the tokens/s, %.2fx the memory"
              % (lora["tok_s"] / hf["tok_s"], lora["mem_gib"] / hf["mem_gib"]))
    json.dump(rows, open(os.path.join(a.out, "decoder_train.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
