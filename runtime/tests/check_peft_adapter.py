#!/usr/bin/env python3
"""Loads a qtune checkpoint's PEFT adapter with peft.PeftModel.from_pretrained.

    QTUNE_PEFT_EXPORT_DIR=/tmp/peft qtune-rt-unittests \
        --gtest_filter=CheckpointDirTest.PeftAdapterForATinyLlama
    python3 check_peft_adapter.py /tmp/peft/checkpoint-7

The checkpoint is the adapter of a tiny Llama (hidden 16, 2 layers, 2 heads,
LoRA r 4 on q_proj and v_proj) written by the runtime's checkpoint writer.
The script builds that model with random weights, loads the adapter, and
checks that every tensor of adapter_model.safetensors landed in the LoRA layer
PEFT made for it, with the scaling lora_alpha / r, and that a forward pass runs.
Exit status 0 when everything matches. Needs torch, transformers, peft and
safetensors.
"""
import json
import sys
import warnings

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    ckpt = sys.argv[1]
    config = json.load(open(f"{ckpt}/adapter_config.json"))
    tensors = load_file(f"{ckpt}/adapter_model.safetensors")
    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=2, num_attention_heads=2,
                                        num_key_value_heads=2, vocab_size=256))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = PeftModel.from_pretrained(base, ckpt)
    problems = [str(w.message) for w in caught if "adapter" in str(w.message).lower()]
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    bad = 0
    for key, want in tensors.items():
        # base_model.model.<module>.lora_A.weight -> <...>.lora_A.default.weight
        assert key.startswith("base_model.model."), key
        name = key[: -len(".weight")] + ".default.weight"
        got = params.get(name)
        if got is None:
            print(f"MISSING {key}: no parameter {name}")
            bad += 1
            continue
        if got.shape != want.shape or not torch.equal(got.detach().float(), want.float()):
            print(f"DIFFERENT {key}: {tuple(got.shape)} vs {tuple(want.shape)}")
            bad += 1
        layer = modules[key[: -len(".lora_A.weight")]]
        scaling = layer.scaling["default"]
        if abs(scaling - config["lora_alpha"] / config["r"]) > 1e-12:
            print(f"SCALING {key}: {scaling}")
            bad += 1
    lora_params = [n for n in params if ".lora_" in n]
    if len(lora_params) != len(tensors):
        print(f"PEFT made {len(lora_params)} LoRA params, the adapter has {len(tensors)}")
        bad += 1
    out = model(torch.tensor([[1, 2, 3, 4]])).logits
    print(f"{len(tensors)} adapter tensors loaded, logits {tuple(out.shape)}, "
          f"warnings: {problems or 'none'}")
    if problems:
        bad += 1
    print("ok" if bad == 0 else f"FAILED ({bad})")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
