#!/usr/bin/env python3
"""Data-parallel training figures: tokens/s and per-GPU memory of a bundle's
train step on 1, 2, 4, 8 GPUs (as many as are visible), through
`qtune-run train --gpus N`, beside plain single-GPU training of the same
bundle. Runs on the GPU machine.

    data_parallel.py QTUNE_RUN BUNDLE OUT [--steps 20] [--max-gpus 8]

BUNDLE is a token model compiled with --train (it needs <fn>_accumulate and
<fn>_apply), e.g. bench/decoder_train.py's stage/lora_l2_b1.qtb (two layers of
LLaMA-7B shapes, INT4 g128 + LoRA r16, seq 2048, batch 1). Parameters are
random (bench/random_params.py), tokens uniform over the vocabulary. Each rank
takes the bundle's batch, so N ranks train on N times the tokens a step;
scaling efficiency is tokens/s on N GPUs over N times tokens/s on one.
Memory is the bundle's arena, what the runtime allocates on each GPU (optimizer
state is replicated on every rank). Writes OUT/data_parallel.json.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))


def nccl_library():
    """Points QTUNE_NCCL_LIBRARY at PyTorch's NCCL wheel where it is unset and
    the wheel is installed (machines without a system libnccl2)."""
    if os.environ.get("QTUNE_NCCL_LIBRARY"):
        return
    try:  # PyTorch's NCCL wheel, where the system has no libnccl2
        import nvidia.nccl
        lib = os.path.join(list(nvidia.nccl.__path__)[0], "lib", "libnccl.so.2")
        if os.path.exists(lib):
            os.environ["QTUNE_NCCL_LIBRARY"] = lib
    except ImportError:
        pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("qtune_run"); p.add_argument("bundle"); p.add_argument("out")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--max-gpus", type=int, default=8)
    a = p.parse_args()
    import torch
    nccl_library()
    os.makedirs(a.out, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="qtune-dp-")
    inspect = subprocess.run([a.qtune_run, "inspect", a.bundle], capture_output=True, text=True,
                             check=True).stdout
    arena = int(re.search(r"arena: (\d+) bytes", inspect).group(1))
    vocab = 32000
    m = re.search(r"input_ids\s+input\s+I32 \[(\d+), (\d+)\]", inspect)
    tokens_per_rank = int(m.group(1)) * int(m.group(2)) if m else 0
    params = os.path.join(scratch, "params.safetensors")
    subprocess.run([sys.executable, os.path.join(here, "random_params.py"), a.qtune_run, a.bundle,
                    params], check=True)
    data = os.path.join(scratch, "tokens.u16")
    g = torch.Generator().manual_seed(1)
    torch.randint(0, vocab, (1 << 22,), generator=g).to(torch.int32).numpy().astype(
        "<u2").tofile(data)

    def train(name, extra):
        metrics = os.path.join(a.out, name + "_metrics.jsonl")
        r = subprocess.run([a.qtune_run, "train", a.bundle, "--data", data, "--params", params,
                            "--steps", str(a.steps), "--lr", "1e-5", "--metrics", metrics,
                            "--log-every", str(a.steps), "--vocab", str(vocab),
                            "--out", os.path.join(scratch, "trained.safetensors")] + extra,
                           capture_output=True, text=True)
        print(r.stdout[-400:] + r.stderr[-400:])
        if r.returncode:
            raise SystemExit("qtune-run train failed: " + name)
        rows = [json.loads(l) for l in open(metrics) if l.strip()][3:]
        ms = statistics.median(r["ms"] for r in rows)
        tok = statistics.median(r["tokens_per_s"] for r in rows)
        return {"ms": ms, "tok_s": tok, "mem_gib": arena / 2**30}

    rows = {"1 GPU, plain": train("plain", [])}
    n = 1
    while n <= min(a.max_gpus, torch.cuda.device_count()):
        rows["%d GPU%s, --gpus %d" % (n, "s" if n > 1 else "", n)] = train("dp%d" % n, ["--gpus", str(n)])
        n *= 2
    base = rows["1 GPU, --gpus 1"]["tok_s"]
    print("\n%s: %d tokens a rank a step, %s" % (os.path.basename(a.bundle), tokens_per_rank,
                                                  torch.cuda.get_device_name(0)))
    print("| run | ms/step | tokens/s | per-GPU memory GiB | scaling efficiency |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        k = int(re.search(r"--gpus (\d+)", name).group(1)) if "--gpus" in name else 1
        eff = "" if "plain" in name else "%.2f" % (r["tok_s"] / (k * base))
        print("| %s | %.1f | %.0f | %.2f | %s |" % (name, r["ms"], r["tok_s"], r["mem_gib"], eff))
    if torch.cuda.device_count() < 2:
        print("(only %d GPU visible: no multi-GPU rows)" % torch.cuda.device_count())
    json.dump(rows, open(os.path.join(a.out, "data_parallel.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
