#!/usr/bin/env bash
# The main job on the embedded examples: builds the tools, then for every
# function of examples/*.mlir: parses and verifies it, interprets it on the CPU
# reference interpreter (deterministic pseudo-random inputs) and prints what it
# computes, compiles it to a GPU bundle, and — where a CUDA GPU answers — runs
# the bundle and compares its outputs with the interpreter's.
#   scripts/demo.sh            (build dir: build/, or $QTUNE_BUILD_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
build="${QTUNE_BUILD_DIR:-build}"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target qtune-opt qtune-interp qtune-compile qtune-run
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
