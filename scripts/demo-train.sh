#!/usr/bin/env bash
# The GPU half of scripts/demo.sh: trains the compiled tiny LLaMA (INT4 + LoRA)
# on a text corpus with qtune-run, then samples from the trained adapters.
# Runs wherever qtune-run and a CUDA GPU are (no compiler needed).
#   scripts/demo-train.sh QTUNE_RUN BUNDLE PARAMS CORPUS OUT_DIR [STEPS]
set -euo pipefail
run="$1" bundle="$2" params="$3" corpus="$4" out="$5" steps="${6:-300}"
mkdir -p "$out"
echo "-- eval before training"
"$run" eval "$bundle" --params "$params" --data "$corpus" --max-batches 8
echo "-- train: $steps steps of LoRA (AdamW, warmup + cosine) on $(wc -c < "$corpus") bytes of text"
rm -rf "$out/run"
"$run" train "$bundle" --params "$params" --data "$corpus" --steps "$steps" --lr 3e-3 \
  --warmup 20 --schedule cosine --min-lr 3e-4 --log-every 25 \
  --save-dir "$out/run" --save-every "$steps" --metrics "$out/metrics.jsonl"
echo "-- eval after training"
"$run" eval "$bundle" --params "$params" --params "$out/run" --data "$corpus" --max-batches 8
echo "-- a sample (temperature 0.8, top-p 0.95)"
"$run" generate "$bundle" --params "$params" --params "$out/run" --prompt "The " \
  --max-new-tokens 200 --temperature 0.8 --top-p 0.95 --seed 1
