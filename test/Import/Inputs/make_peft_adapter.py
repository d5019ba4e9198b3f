#!/usr/bin/env python3
"""Writes a PEFT LoRA adapter directory (adapter_config.json and
adapter_model.safetensors, keys "base_model.model.<module>.lora_{A,B}.weight")
from the "<module>.lora_{A,B}.weight" tensors of a qtune params file.

    make_peft_adapter.py PARAMS OUT_DIR R ALPHA [--config-extra JSON] [--drop NAME]
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "scripts"))
from qtune_tensors import st_read, st_write  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("params")
p.add_argument("out")
p.add_argument("r", type=int)
p.add_argument("alpha", type=float)
p.add_argument("--config-extra", default="{}", help="JSON merged into adapter_config.json")
p.add_argument("--drop", action="append", default=[], help="leave this qtune tensor out")
a = p.parse_args()
tensors = {"base_model.model." + n: t for n, t in st_read(a.params).items()
           if n.endswith((".lora_A.weight", ".lora_B.weight")) and n not in a.drop}
os.makedirs(a.out, exist_ok=True)
st_write(os.path.join(a.out, "adapter_model.safetensors"), tensors)
config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": a.r, "lora_alpha": a.alpha,
          "lora_dropout": 0.0, "bias": "none", "target_modules": ["q_proj", "v_proj"]}
config.update(json.loads(a.config_extra))
with open(os.path.join(a.out, "adapter_config.json"), "w") as f:
    json.dump(config, f)
