#!/usr/bin/env bash
# The main job on the embedded examples: builds the tools, then parses, verifies
# and interprets every function of examples/*.mlir on the CPU reference
# interpreter (deterministic pseudo-random inputs) and prints what it computes.
#   scripts/demo.sh            (build dir: build/, or $QTUNE_BUILD_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
build="${QTUNE_BUILD_DIR:-build}"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target qtune-opt qtune-interp

for model in examples/*.mlir; do
  echo
  echo "== $model"
  # Parse and verify (qtune-opt fails with the verifier's message otherwise).
  "$build/bin/qtune-opt" "$model" >/dev/null
  funcs=$(grep -o 'func\.func @[A-Za-z0-9_]*' "$model" | sed 's/func\.func @//')
  echo "verified: $(echo "$funcs" | wc -w) functions, $(grep -cE "= qtune\.[a-z_]+" "$model") qtune ops"
  for f in $funcs; do
    echo "-- @$f (inputs: --random-inputs 1)"
    "$build/bin/qtune-interp" "$model" --entry "$f" --random-inputs 1 --print
  done
done
echo
echo "GPU execution of these graphs arrives with the compiler's code generation; see README.md."
