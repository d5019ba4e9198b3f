#!/usr/bin/env bash
# The main job on the embedded examples: builds the tools, then
#  1. for every function of examples/*.mlir: parses and verifies it, interprets
#     it on the CPU reference interpreter (deterministic pseudo-random inputs)
#     and prints what it computes, compiles it to a GPU bundle, and — where a
#     CUDA GPU answers — runs the bundle and compares its outputs with the
#     interpreter's;
#  2. the embedded model: a byte-vocabulary LLaMA-style decoder written by
#     examples/tiny_llama.py (deterministic), imported with INT4 weights and
#     LoRA (qtune-import), compiled for training; where a GPU answers it trains
#     on the fortunes corpus (Debian's fortunes-min) for a few hundred steps and
#     prints the loss falling and a sample (scripts/demo-train.sh); otherwise
#     it prints the compile summary and says that a GPU is needed.
#   scripts/demo.sh [STEPS]    (build dir: build/, or $QTUNE_BUILD_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
build="${QTUNE_BUILD_DIR:-build}"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target qtune-opt qtune-interp qtune-compile qtune-import qtune-run
work="$build/examples"
mkdir -p "$work"

gpu=0
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then gpu=1; fi
cubin=()
if [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/ptxas" ] || command -v ptxas >/dev/null; then :; else
  cubin=(--no-cubin)   # no ptxas here: keep PTX, which the driver compiles at load
fi

for model in examples/*.mlir; do
  name=$(basename "$model" .mlir)
  echo
  echo "== $model"
  # Parse and verify (qtune-opt fails with the verifier's message otherwise).
  "$build/bin/qtune-opt" "$model" >/dev/null
  funcs=$(grep -o 'func\.func @[A-Za-z0-9_]*' "$model" | sed 's/func\.func @//')
  echo "verified: $(echo "$funcs" | wc -w) functions, $(grep -cE "= qtune\.[a-z_]+" "$model") qtune ops"
  "$build/bin/qtune-compile" "$model" -o "$work/$name.qtb" "${cubin[@]}"
  for f in $funcs; do
    echo "-- @$f (inputs: --random-inputs 1)"
    "$build/bin/qtune-interp" "$model" --entry "$f" --random-inputs 1 --print \
      --dump-inputs "$work/$f.in.safetensors" --out "$work/$f.ref.safetensors"
    if [ $gpu = 1 ]; then
      "$build/bin/qtune-run" forward "$work/$name.qtb" --entry "$f" \
        --inputs "$work/$f.in.safetensors" --params "$work/$f.in.safetensors" \
        --out "$work/$f.gpu.safetensors" --poison
      python3 scripts/compare-outputs.py "$work/$f.gpu.safetensors" "$work/$f.ref.safetensors"
    fi
  done
done
echo
if [ $gpu = 1 ]; then
  echo "Ran every example on the GPU and compared with the reference interpreter."
else
  echo "No CUDA GPU answers here: the bundles above are compiled (qtune-run inspect"
  echo "$work/<name>.qtb shows them); running them needs a GPU."
fi

echo
echo "== the embedded model: a byte-level LLaMA-style decoder, INT4 + LoRA"
tiny="$work/tiny-llama"
python3 examples/tiny_llama.py "$tiny/hf"
"$build/bin/qtune-import" "$tiny/hf" -o "$tiny/model.mlir" --seq-len 128 --batch 8 \
  --lora-r 16 --lora-alpha 32
"$build/bin/qtune-compile" "$tiny/model.mlir" --train -o "$tiny/model.qtb" "${cubin[@]}"
"$build/bin/qtune-run" inspect "$tiny/model.qtb" > "$tiny/inspect.txt"
echo "kernels (block size, shared memory):"
sed -n '/^kernels/,/^buffers/p' "$tiny/inspect.txt" | grep '^  \[' | head -12
echo "  ... ($(grep -c '^  \[' <(sed -n '/^kernels/,/^buffers/p' "$tiny/inspect.txt")) kernels in all; $tiny/inspect.txt lists them)"
echo "memory plan: $(grep '^arena' "$tiny/inspect.txt"); parameters by role:"
sed -n '/^buffers/,$p' "$tiny/inspect.txt" | awk '$3 ~ /^(frozen|trainable|optimizer_state|input)$/ {n[$3]++} END {for (r in n) printf "  %s: %d buffers\n", r, n[r]}'
corpus="$tiny/fortunes.txt"
cat /usr/share/games/fortunes/fortunes /usr/share/games/fortunes/literature \
  /usr/share/games/fortunes/riddles > "$corpus"
if [ $gpu = 1 ]; then
  scripts/demo-train.sh "$build/bin/qtune-run" "$tiny/model.qtb" "$tiny/model.safetensors" \
    "$corpus" "$tiny" "${1:-300}"
else
  echo
  echo "No CUDA GPU answers here: the model is compiled ($tiny/model.qtb, params"
  echo "$tiny/model.safetensors); training it needs a GPU:"
  echo "  scripts/demo-train.sh QTUNE_RUN $tiny/model.qtb $tiny/model.safetensors $corpus OUT"
fi
