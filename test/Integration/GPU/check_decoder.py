#!/usr/bin/env python3
"""GPU check of a whole imported decoder (scripts/gpu-stage.sh stages it under
STAGE/decoder): a tiny LLaMA with grouped-query attention, INT4 group-64
weights and LoRA r = 8 on every linear layer. Runs on the GPU machine.

    check_decoder.py QTUNE_RUN STAGE/decoder OUT_DIR

1. qtune's logits (`model_logits`), loss and LoRA gradients (`model_grad`)
   against the reference interpreter's (relative L2 within 2e-2, loss 1e-2,
   gradients 5e-2), also from a bundle that computes the lm head, its loss
   and gradient 16 rows at a time (`--logits-chunk-bytes`);
2. 30 steps of `model_train_step` by `qtune-run train` against the
   interpreter's run (check_train.py);
3. against Hugging Face transformers + PEFT: LlamaForCausalLM loaded from the
   same directory with each quantized weight replaced by its dequantized value,
   wrapped in peft.LoraConfig(r, alpha, all seven projections) holding qtune's
   adapters, in bf16: logits within 2e-2, loss within 1e-2, every LoRA
   gradient within 5e-2 (relative L2);
4. a guarded step: `model_train_step` once with the final norm's weight
   infinite (a non-finite loss) leaves every adapter and AdamW moment
   bit-identical;
5. PEQA on the same model: the scale gradients of `model_grad` against the
   interpreter and against PyTorch autograd through w = s·(q − z) in the same
   transformers model (5e-2);
6. gradient accumulation: `qtune-run train --data --batch-accum 2` on the
   batch-2 bundle and plain training of a batch-4 bundle on the same token
   windows (unshuffled) give the same losses (1e-2) and adapters (2e-2);
7. the checkpoint's PEFT adapter: after a few steps with --save-dir,
   peft.PeftModel.from_pretrained loads the checkpoint onto transformers'
   model with the dequantized weights, and its logits equal qtune's logits
   entry run with the trained parameters (2e-2);
8. qtune-export: transformers' LlamaForCausalLM loads the exported bf16
   directory (dequantized weights with the adapters merged) and its logits
   equal qtune's (2e-2).
9. GPTQ calibration on the GPU: the calibration graph of `qtune-quantize
   --emit-calibration` (every layer's 2·XᵀX / rows) run by `qtune-run forward`
   gives the Hessians the reference interpreter collects (2e-2 each).
10. data-parallel training through NCCL: `qtune-run train --gpus 1` (one rank
   of the data-parallel path: accumulate, NCCL all-reduce, apply) against
   plain training on the same windows (losses 1e-2, adapters 2e-2); with two
   or more GPUs also `--gpus 2` on the batch-2 bundle against plain training
   of the batch-4 bundle (the same global batch), otherwise reported skipped;
   a rank killed (SIGKILL) in the middle of a `--gpus 1` run stops it with an
   error naming the rank within 30 s, and `--resume` continues from the last
   checkpoint it wrote; rank 0 of a hand-started world of 2 whose rank 1 never
   starts stops within its --nccl-timeout (5 s) saying so, and two ranks on
   one GPU (a NCCL error) both stop naming themselves and ncclCommInitRank.
"""
import json
import os
import subprocess
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from check_peft import dequant_uniform4  # noqa: E402
sys.path.insert(0, os.path.join(here, "..", "..", "..", "bench"))
from data_parallel import nccl_library  # noqa: E402

GROUP, RANK, ALPHA = 64, 8, 16.0
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def load_llama(path, dtype):
    """transformers' LlamaForCausalLM from a directory (dtype= in new versions)."""
    import transformers
    try:
        return transformers.LlamaForCausalLM.from_pretrained(path, dtype=dtype)
    except TypeError:
        return transformers.LlamaForCausalLM.from_pretrained(path, torch_dtype=dtype)


def dequantized_llama(path, prm):
    """The model in f32 with every target projection holding qtune's dequantized weight."""
    model = load_llama(path, torch.float32)
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.split(".")[-1] in TARGETS:
                module.weight.copy_(dequant_uniform4(prm[name + ".codes"], prm[name + ".scales"],
                                                     prm[name + ".zeros"], GROUP))
    return model


def rel(a, b):
    a, b = a.double().flatten(), b.double().flatten()
    return ((a - b).norm() / b.norm()).item()


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    print(" ".join(os.path.basename(c) if i == 0 else c for i, c in enumerate(cmd)))
    print((r.stdout + r.stderr).strip())
    if r.returncode:
        raise SystemExit("FAILED: %s exited with %d" % (cmd[0], r.returncode))


def main():
    qrun, d, out = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(out, exist_ok=True)
    batch, params = os.path.join(d, "batch.safetensors"), os.path.join(d, "params.safetensors")
    bundle = os.path.join(d, "model.qtb")
    ok = True

    def check(what, err, tol):
        nonlocal ok
        good = err <= tol
        ok &= good
        print("  %-58s %.2e (tolerance %g) %s" % (what, err, tol, "ok" if good else "FAILED"))

    # 1. against the interpreter
    run([qrun, "forward", bundle, "--entry", "model_logits", "--inputs", batch, "--params", params,
         "--out", os.path.join(out, "logits.safetensors"), "--poison"])
    run([qrun, "forward", bundle, "--entry", "model_grad", "--inputs", batch, "--params", params,
         "--out", os.path.join(out, "grads.safetensors"), "--poison"])
    logits = load_file(os.path.join(out, "logits.safetensors"))["logits"].float()
    grads = load_file(os.path.join(out, "grads.safetensors"))
    ref_logits = load_file(os.path.join(d, "ref_logits.safetensors"))["logits"].float()
    ref_grads = load_file(os.path.join(d, "ref_grads.safetensors"))
    print("qtune on the GPU against the reference interpreter:")
    check("logits", rel(logits, ref_logits), 2e-2)
    check("loss (%.6f vs %.6f)" % (grads["loss"].item(), ref_grads["loss"].item()),
          abs(grads["loss"].item() - ref_grads["loss"].item()) / abs(ref_grads["loss"].item()), 1e-2)
    worst = max(((rel(grads[k].float(), ref_grads[k].float()), k) for k in ref_grads if k != "loss"))
    check("worst LoRA gradient (%s)" % worst[1].replace("grad_model.", ""), worst[0], 5e-2)
    chunked = os.path.join(out, "grads_chunked.safetensors")
    run([qrun, "forward", os.path.join(d, "model_chunked.qtb"), "--entry", "model_grad", "--inputs", batch,
         "--params", params, "--out", chunked, "--poison"])
    cg = load_file(chunked)
    print("the lm head and loss in chunks of 16 rows, against the interpreter:")
    check("loss (%.6f)" % cg["loss"].item(),
          abs(cg["loss"].item() - ref_grads["loss"].item()) / abs(ref_grads["loss"].item()), 1e-2)
    worst = max(((rel(cg[k].float(), ref_grads[k].float()), k) for k in ref_grads if k != "loss"))
    check("worst LoRA gradient (%s)" % worst[1].replace("grad_model.", ""), worst[0], 5e-2)

    # 2. training
    metrics = os.path.join(out, "metrics.jsonl")
    run([qrun, "train", bundle, "--inputs", batch, "--params", params, "--steps", "30",
         "--lr", "2e-3", "--metrics", metrics, "--out", os.path.join(out, "trained.safetensors")])
    r = subprocess.run([sys.executable, os.path.join(here, "check_train.py"), "--name", "decoder_lora",
                        "--metrics", metrics, "--ref-losses", os.path.join(d, "ref_losses.json")],
                       capture_output=True, text=True)
    print((r.stdout + r.stderr).strip())
    ok &= r.returncode == 0

    # 3. against transformers + PEFT
    import peft
    import transformers
    prm = load_file(params)
    model = dequantized_llama(os.path.join(d, "hf"), prm)
    cfg = peft.LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=TARGETS)
    try:
        model = peft.get_peft_model(model, cfg, autocast_adapter_dtype=False)
    except TypeError:
        model = peft.get_peft_model(model, cfg)
    model = model.to(device="cuda", dtype=torch.bfloat16)
    lora = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
                hf = name.replace("base_model.model.", "")
                module.lora_A["default"].weight.copy_(prm[hf + ".lora_A.weight"].to(torch.bfloat16))
                module.lora_B["default"].weight.copy_(prm[hf + ".lora_B.weight"].to(torch.bfloat16))
                lora[hf] = module
    b = load_file(batch)
    ids, labels = b["input_ids"].long().cuda(), b["labels"].long().cuda()
    hf_logits = model(input_ids=ids).logits
    loss = F.cross_entropy(hf_logits.float().reshape(-1, hf_logits.shape[-1]), labels.reshape(-1))
    loss.backward()
    print("qtune on the GPU against transformers %s + peft %s (bf16, dequantized weights):"
          % (transformers.__version__, peft.__version__))
    check("logits", rel(logits.cuda(), hf_logits.float()), 2e-2)
    check("loss (%.6f vs %.6f)" % (grads["loss"].item(), loss.item()),
          abs(grads["loss"].item() - loss.item()) / abs(loss.item()), 1e-2)
    errs = []
    for hf, module in lora.items():
        for ab in ("A", "B"):
            ref = getattr(module, "lora_" + ab)["default"].weight.grad.float()
            mine = grads["grad_%s.lora_%s.weight" % (hf, ab)].float().cuda()
            errs.append((rel(mine, ref), "%s.lora_%s" % (hf.replace("model.", ""), ab)))
    worst = max(errs)
    check("worst LoRA gradient of %d (%s)" % (len(errs), worst[1]), worst[0], 5e-2)
    # 4. a guarded step with a non-finite loss changes nothing
    guard_out = os.path.join(out, "guard.safetensors")
    run([qrun, "forward", bundle, "--entry", "model_train_step", "--inputs",
         os.path.join(d, "guard_inputs.safetensors"), "--params",
         os.path.join(d, "guard_params.safetensors"), "--out", guard_out])
    after, before = load_file(guard_out), load_file(os.path.join(d, "guard_params.safetensors"))
    changed = [k for k in after if k != "loss" and not torch.equal(after[k], before[k])]
    print("guarded step: loss %s; %d updated tensors, %d changed"
          % (after["loss"].item(), len(after) - 1, len(changed)))
    good = not torch.isfinite(after["loss"]).item() and not changed and len(after) > 1
    ok &= good
    print("  non-finite loss leaves every parameter and state as it was:",
          "ok" if good else "FAILED %s" % changed[:4])

    # 5. PEQA scale gradients
    peqa_prm = os.path.join(d, "peqa_params.safetensors")
    peqa_out = os.path.join(out, "peqa_grads.safetensors")
    run([qrun, "forward", os.path.join(d, "peqa.qtb"), "--entry", "model_grad", "--inputs", batch,
         "--params", peqa_prm, "--out", peqa_out, "--poison"])
    pg, ref_pg, pp = load_file(peqa_out), load_file(os.path.join(d, "ref_peqa_grads.safetensors")), load_file(peqa_prm)
    print("PEQA scale gradients:")
    worst = max(((rel(pg[k].float(), ref_pg[k].float()), k) for k in ref_pg if k != "loss"))
    check("worst against the interpreter (%s)" % worst[1].replace("grad_model.", ""), worst[0], 5e-2)
    base = load_llama(os.path.join(d, "hf"), torch.bfloat16)
    base = base.cuda()
    scales = {}
    for name, module in base.named_modules():
        if name.split(".")[-1] not in TARGETS:
            continue
        codes = pp[name + ".codes"].cuda()
        n = codes.shape[0]
        words = codes.to(torch.int64) & 0xFFFFFFFF
        q = torch.stack([(words >> (4 * j)) & 0xF for j in range(8)], dim=-1).view(n, -1).to(torch.bfloat16)
        z = pp[name + ".zeros"].cuda().repeat_interleave(GROUP, dim=1)
        s_ = torch.nn.Parameter(pp[name + ".scales"].cuda().clone())
        scales[name] = s_

        def forward(x, s_=s_, q=q, z=z):
            return F.linear(x, s_.repeat_interleave(GROUP, dim=1) * (q - z))
        module.forward = forward
    for p_ in base.parameters():
        p_.requires_grad_(False)
    out_logits = base(input_ids=ids).logits
    loss = F.cross_entropy(out_logits.float().reshape(-1, out_logits.shape[-1]), labels.reshape(-1))
    loss.backward()
    check("loss against autograd (%.6f vs %.6f)" % (pg["loss"].item(), loss.item()),
          abs(pg["loss"].item() - loss.item()) / abs(loss.item()), 1e-2)
    worst = max((rel(pg["grad_%s.scales" % n].float().cuda(), s_.grad.float()), n)
                for n, s_ in scales.items())
    check("worst against autograd of %d (%s)" % (len(scales), worst[1].replace("model.", "")),
          worst[0], 5e-2)
    # 6. gradient accumulation
    runs = {}
    for name, bnd, accum in (("accum", "model.qtb", "2"), ("big", "model_b4.qtb", "1")):
        metrics = os.path.join(out, name + "_metrics.jsonl")
        trained = os.path.join(out, name + "_trained.safetensors")
        run([qrun, "train", os.path.join(d, bnd), "--data", os.path.join(d, "text.txt"),
             "--params", params, "--no-shuffle", "--batch-accum", accum, "--steps", "8",
             "--lr", "2e-3", "--metrics", metrics, "--out", trained])
        runs[name] = ([json.loads(l)["loss"] for l in open(metrics) if l.strip()], load_file(trained))
    (la, pa), (lb, pb) = runs["accum"], runs["big"]
    print("gradient accumulation (2 x batch 2 against batch 4, 8 steps): losses %s vs %s"
          % (["%.4f" % v for v in la[:3]], ["%.4f" % v for v in lb[:3]]))
    check("worst step loss", max(abs(x - y) / abs(y) for x, y in zip(la, lb)), 1e-2)
    worst = max((rel(pa[k].float(), pb[k].float()), k) for k in pb if ".lora_" in k)
    check("worst trained adapter (%s)" % worst[1].replace("model.", ""), worst[0], 2e-2)
    # 7. the PEFT adapter of a checkpoint
    save = os.path.join(out, "run")
    run([qrun, "train", bundle, "--data", os.path.join(d, "text.txt"), "--params", params,
         "--steps", "5", "--lr", "5e-3", "--save-dir", save])
    ckpt = os.path.join(save, sorted(os.listdir(save))[-1])
    from safetensors.torch import save_file
    merged = dict(load_file(params))
    merged.update(load_file(os.path.join(ckpt, "qtune_state.safetensors")))
    merged_path = os.path.join(out, "trained_params.safetensors")
    save_file({k: v.contiguous() for k, v in merged.items()}, merged_path)
    run([qrun, "forward", bundle, "--entry", "model_logits", "--inputs", batch, "--params", merged_path,
         "--out", os.path.join(out, "trained_logits.safetensors")])
    mine = load_file(os.path.join(out, "trained_logits.safetensors"))["logits"].float().cuda()
    base = dequantized_llama(os.path.join(d, "hf"), prm)
    peft_model = peft.PeftModel.from_pretrained(base, ckpt).to(device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        theirs = peft_model(input_ids=ids).logits.float()
    print("checkpoint %s loaded by peft.PeftModel.from_pretrained:" % os.path.basename(ckpt))
    check("logits against qtune's with the trained adapters", rel(mine, theirs), 2e-2)
    # 8. qtune-export's Hugging Face directory (adapters merged, bf16)
    exported = load_llama(os.path.join(d, "exported"), torch.bfloat16).to("cuda")
    with torch.no_grad():
        theirs = exported(input_ids=ids).logits.float()
    print("qtune-export's bf16 directory loaded by transformers.LlamaForCausalLM:")
    check("logits against qtune's", rel(logits.cuda(), theirs), 2e-2)
    # 9. GPTQ Hessians from the compiled calibration entry
    hess = os.path.join(out, "hessians.safetensors")
    run([qrun, "forward", os.path.join(d, "calibration.qtb"), "--inputs",
         os.path.join(d, "calibration.inputs.safetensors"), "--params",
         os.path.join(d, "calibration.safetensors"), "--out", hess, "--poison"])
    got, ref = load_file(hess), load_file(os.path.join(d, "ref_hessians.safetensors"))
    print("GPTQ Hessians of the calibration entry on the GPU against the interpreter's:")
    check("layers", abs(len(got) - len(ref)), 0)
    worst = max((rel(got[k].float(), ref[k].float()), k) for k in ref)
    check("worst (%s)" % worst[1].replace("hessian.model.", ""), worst[0], 2e-2)
    # 10. data parallel through NCCL
    nccl_library()
    def train_curve(name, bnd, extra):
        metrics = os.path.join(out, name + "_metrics.jsonl")
        trained = os.path.join(out, name + "_trained.safetensors")
        run([qrun, "train", os.path.join(d, bnd), "--data", os.path.join(d, "text.txt"),
             "--params", params, "--no-shuffle", "--steps", "8", "--lr", "2e-3",
             "--metrics", metrics, "--out", trained] + extra)
        return [json.loads(l)["loss"] for l in open(metrics) if l.strip()], load_file(trained)
    pairs = [("one rank (--gpus 1) against plain training, batch 2",
              train_curve("dp1", "model.qtb", ["--gpus", "1"]),
              train_curve("plain2", "model.qtb", []))]
    if torch.cuda.device_count() >= 2:
        pairs.append(("two ranks of batch 2 (--gpus 2) against plain training of batch 4",
                      train_curve("dp2", "model.qtb", ["--gpus", "2"]), runs["big"]))
    else:
        print("data parallel on 2 GPUs: skipped (%d GPU visible)" % torch.cuda.device_count())
    for what, (la, pa), (lb, pb) in pairs:
        print("data parallel, %s (8 steps): losses %s vs %s"
              % (what, ["%.4f" % v for v in la[:3]], ["%.4f" % v for v in lb[:3]]))
        check("worst step loss", max(abs(x - y) / abs(y) for x, y in zip(la, lb)), 1e-2)
        worst = max((rel(pa[k].float(), pb[k].float()), k) for k in pb if ".lora_" in k)
        check("worst trained adapter (%s)" % worst[1].replace("model.", ""), worst[0], 2e-2)
    # A rank that dies stops the run; its checkpoints stay usable.
    import signal
    import time
    # A rank that never joins, and a NCCL error, stop the run within the
    # timeout with one message naming the rank.
    def hand_started(name, ranks, timeout):
        idfile = os.path.join(out, name + ".ncclid")
        if os.path.exists(idfile):
            os.remove(idfile)
        base = [qrun, "train", os.path.join(d, "model.qtb"), "--data", os.path.join(d, "text.txt"),
                "--params", params, "--steps", "3", "--lr", "1e-3", "--world-size", "2",
                "--nccl-id", idfile, "--nccl-timeout", str(timeout), "--device", "0"]
        started = time.time()
        procs = [subprocess.Popen(base + ["--rank", str(r), "--out",
                                          os.path.join(out, "%s_%d.safetensors" % (name, r))],
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for r in ranks]
        results = []
        for p in procs:
            try:
                _, err = p.communicate(timeout=timeout + 60)
            except subprocess.TimeoutExpired:
                p.kill()
                _, err = p.communicate()
            results.append((p.returncode, err.strip().splitlines()[-1] if err.strip() else ""))
        return results, time.time() - started
    results, took = hand_started("lonely", [0], 5)
    print("rank 0 of a world of 2 started alone (--nccl-timeout 5): %s" % results[0][1])
    check("rank 0 stopped with an error (exit %s)" % results[0][0], 0 if results[0][0] == 1 else 1, 0)
    check("error says the world did not form", 0 if "did not finish within 5 s" in results[0][1] else 1, 0)
    check("seconds until it stopped", took, 30)
    results, took = hand_started("same_gpu", [0, 1], 20)
    for r, (code, msg) in enumerate(results):
        print("rank %d of two ranks on one GPU (a NCCL error): %s" % (r, msg))
        check("rank %d stopped with an error (exit %s)" % (r, code), 0 if code == 1 else 1, 0)
        check("rank %d's error names it and NCCL" % r,
              0 if ("rank %d: ncclCommInitRank" % r) in msg else 1, 0)
    check("seconds until both stopped", took, 80)
    save = os.path.join(out, "dp_killed")
    cmd = [qrun, "train", os.path.join(d, "model.qtb"), "--data", os.path.join(d, "text.txt"),
           "--params", params, "--steps", "100000", "--lr", "1e-3", "--save-dir", save,
           "--save-every", "20", "--keep", "2", "--gpus", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (
            os.path.isdir(save) and any(n.startswith("checkpoint-") for n in os.listdir(save))):
        time.sleep(0.2)
    ranks = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    killed_at = time.time()
    for pid in ranks:
        os.kill(int(pid), signal.SIGKILL)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    waited = time.time() - killed_at
    print("killed rank 0 (pid %s) of a --gpus 1 run after its first checkpoint; qtune-run said: %s"
          % (",".join(ranks), err.strip().splitlines()[-1] if err.strip() else "(nothing)"))
    check("run stopped with an error (exit %s)" % proc.returncode, 0 if proc.returncode == 1 else 1, 0)
    check("error names the killed rank", 0 if "rank 0 was killed by signal 9" in err else 1, 0)
    check("seconds until the run stopped", waited, 30)
    steps = [int(n.split("-", 1)[1]) for n in os.listdir(save)
             if n.startswith("checkpoint-") and n.split("-", 1)[1].isdigit()]
    run([qrun, "train", os.path.join(d, "model.qtb"), "--data", os.path.join(d, "text.txt"),
         "--params", params, "--resume", save, "--steps", str(max(steps, default=0) + 3),
         "--gpus", "1", "--out", os.path.join(out, "dp_resumed.safetensors")])
    print("decoder check:", "ok" if ok else "FAILED")
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"ok": ok}, f)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
