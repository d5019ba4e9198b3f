#!/usr/bin/env bash
# Builds qtune and runs every test (lit + GoogleTest + doc checks) through ctest.
# GPU tests are reported UNSUPPORTED where no CUDA device answers.
#   scripts/test.sh            (build dir: build/, or $QTUNE_BUILD_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
build="${QTUNE_BUILD_DIR:-build}"
jobs="${QTUNE_JOBS:-$(nproc)}"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$jobs"
ctest --test-dir "$build" --output-on-failure -j "$jobs"
