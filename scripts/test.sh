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
status=0
ctest --test-dir "$build" --output-on-failure -j "$jobs" || status=$?
# lit runs as one ctest test: say which of its tests did not run, and why.
log="$build/Testing/Temporary/LastTest.log"
if [ -f "$log" ]; then
  grep -hE "^(UNSUPPORTED|note):|lit.cfg.py:[0-9]+: note:" "$log" | sort -u || true
fi
exit $status
