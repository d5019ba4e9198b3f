#!/usr/bin/env bash
# GPU checks of qtune, on a machine with an NVIDIA GPU, run from the repository
# root over a stage made by scripts/gpu-stage.sh (no compiler needed here: python3
# with torch, safetensors preferred).
#
#   scripts/gpu-check.sh OUT_DIR [STAGE_DIR] [-- extra check_forward.py options]
#
# STAGE_DIR defaults to .gpu-stage. Each step's full log goes to OUT_DIR/STEP.log;
# the forward check also writes OUT_DIR/forward/ (forward.jsonl, forward.csv,
# forward-summary.{txt,json}, failures/). A summary table is printed last. Exits
# non-zero when any step fails. Extra options (after --, or in
# QTUNE_FORWARD_ARGS) go to check_forward.py, e.g. --filter REGEX, --ms 1,7,
# --shard 0/2, --jobs 4, --timeout 300. PYTHON selects the interpreter (python3).
# QTUNE_SKIP="forward bench" skips the steps named (reported as skipped).
#
# Steps, in order (a failed step before `forward` skips the rest):
#   gpu      nvidia-smi answers and lists a GPU
#   stage    the stage is complete; python has torch with CUDA
#   forward  test/Integration/GPU/check_forward.py (random parameters + oracle)
#   gradients  gradient kernels against the reference interpreter
#   train    200-step layer regressions (LoRA, PEQA, ...) against the interpreter's runs
#   peft     LoRA gradients against PEFT over the dequantized weight (bf16)
#   attention  the attention kernels (forward, dQ, dK/dV; causal or not, grouped KV
#            heads, packed documents) against PyTorch in float32 and the
#            interpreter: relative L2 <= 2e-2
#   decoder  a tiny imported LLaMA (GQA, INT4 + LoRA): logits, loss and LoRA
#            gradients against the interpreter and transformers + PEFT; 30 steps
#   bench    bench/attention.py: attention TFLOP/s beside SDPA's flash backend;
#            bench/train_layer.py: forward+backward beside eager and torch.compile;
#            bench/peqa_qft_layer.py: PEQA and QFT on the same layer, same peers;
#            bench/decoder_train.py: a 7B-shaped decoder beside transformers + PEFT
#            (QTUNE_SKIP=bench skips it)
#   runtime  the runtime's unit tests (GPU cases: launches, OOM, bad launches)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  sed -n '2,33p' "$0"
  exit 2
fi
out="$1"; shift
stage=".gpu-stage"
if [ $# -gt 0 ] && [ "$1" != "--" ]; then stage="$1"; shift; fi
if [ $# -gt 0 ] && [ "$1" = "--" ]; then shift; fi
extra=("$@")
if [ -n "${QTUNE_FORWARD_ARGS:-}" ]; then
  read -r -a more <<< "$QTUNE_FORWARD_ARGS"
  extra+=("${more[@]}")
fi
python="${PYTHON:-python3}"
here="test/Integration/GPU"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
export PYTHONUNBUFFERED=1

names=(); results=(); secs=()
blocked=""

# run_step NAME CMD...: runs CMD, its output shown and kept in OUT_DIR/NAME.log.
run_step() {
  local name="$1"; shift
  local log="$out/$name.log" t0 rc
  if [ -n "$blocked" ]; then
    names+=("$name"); results+=("skipped (after $blocked failed)"); secs+=(0)
    return 0
  fi
  if [[ " ${QTUNE_SKIP:-} " == *" $name "* ]]; then
    names+=("$name"); results+=("skipped (QTUNE_SKIP)"); secs+=(0)
    return 0
  fi
  printf '\n===== step %s: %s\n' "$name" "$*"
  t0=$(date +%s)
  "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  names+=("$name"); secs+=($(( $(date +%s) - t0 )))
  if [ "$rc" = 0 ]; then results+=("ok"); else results+=("FAILED (exit $rc)"); fi
  return "$rc"
}

step_gpu() {
  if ! command -v nvidia-smi >/dev/null; then
    echo "nvidia-smi is not on PATH"
    return 1
  fi
  timeout 60 nvidia-smi -L || return 1
  nvidia-smi -L | grep -q GPU || { echo "nvidia-smi lists no GPU"; return 1; }
  timeout 60 nvidia-smi || true
}

step_stage() {
  local ok=0
  echo "stage: $stage"
  [ -f "$stage/stage.json" ] && cat "$stage/stage.json"
  if [ ! -x "$stage/qtune-run" ]; then
    echo "missing: $stage/qtune-run (run scripts/gpu-stage.sh first)"; ok=1
  fi
  if [ ! -f "$stage/cases/cases.json" ]; then
    echo "missing: $stage/cases/cases.json (run scripts/gpu-stage.sh first)"; ok=1
  fi
  if [ -x "$stage/qtune-run" ] && command -v ldd >/dev/null; then
    ldd "$stage/qtune-run" || true
  fi
  "$python" - <<'EOF' || ok=1
import sys
try:
    import torch
except ImportError as e:
    sys.exit("python has no torch: %s" % e)
print("python %s, torch %s (CUDA %s), cuda available: %s"
      % (sys.version.split()[0], torch.__version__, torch.version.cuda,
         torch.cuda.is_available()))
if torch.cuda.is_available():
    print("device:", torch.cuda.get_device_name(0))
try:
    import safetensors
    print("safetensors", safetensors.__version__)
except ImportError:
    print("safetensors: not installed (check_forward.py uses its own reader/writer)")
EOF
  return "$ok"
}

step_forward() {
  "$python" test/Integration/GPU/check_forward.py \
    --cases "$stage/cases" --qtune-run "$stage/qtune-run" --out "$out/forward" --no-table \
    "${extra[@]}"
}

# Gradient kernels (g · W through quantized weights, LoRA A/B gradients) against
# the reference interpreter's outputs made when staging.
step_gradients() {
  local g="$stage/gradients" rc=0 entry
  [ -f "$g/entries.txt" ] || { echo "no gradient cases staged in $g"; return 1; }
  while read -r entry; do
    echo "-- $entry"
    "$stage/qtune-run" forward "$g/gradients.qtb" --entry "$entry" \
      --inputs "$g/$entry.in.safetensors" --params "$g/$entry.in.safetensors" \
      --out "$out/$entry.gpu.safetensors" --poison || { rc=1; continue; }
    "$python" scripts/compare-outputs.py "$out/$entry.gpu.safetensors" \
      "$g/$entry.ref.safetensors" || rc=1
  done < "$g/entries.txt"
  return $rc
}

# Train steps: `qtune-run train` runs each staged layer_train_step entry and
# check_train.py compares its loss curve with the reference interpreter's.
step_train() {
  local t="$stage/train" rc=0 name lr steps
  [ -f "$t/cases.txt" ] || { echo "no train cases staged in $t"; return 1; }
  while read -r name lr steps; do
    echo "-- $name (lr $lr, $steps steps)"
    mkdir -p "$out/train/$name"
    "$stage/qtune-run" train "$t/$name/model.qtb" --inputs "$t/$name/inputs.safetensors" \
      --params "$t/$name/params.safetensors" --steps "$steps" --lr "$lr" \
      --metrics "$out/train/$name/metrics.jsonl" --out "$out/train/$name/trained.safetensors" ||
      { rc=1; continue; }
    "$python" "$here/check_train.py" --name "$name" --metrics "$out/train/$name/metrics.jsonl" \
      --ref-losses "$t/$name/ref_losses.json" --trained "$out/train/$name/trained.safetensors" \
      --ref-params "$t/$name/ref_params.safetensors" --summary "$out/train/summary.jsonl" || rc=1
  done < "$t/cases.txt"
  return $rc
}

# Peer check: LoRA gradients of the layer against PEFT over the dequantized weight.
step_peft() {
  local d="$stage/peft"
  "$python" "$here/check_peft.py" "$stage/qtune-run" "$d/model.qtb" "$d/inputs.safetensors" \
    "$d/params.safetensors" "$out/peft"
}

# The attention kernels against PyTorch (float32) and the interpreter.
step_attention() {
  [ -f "$stage/attention/cases.json" ] || { echo "not staged: $stage/attention"; return 1; }
  "$python" "$here/check_attention.py" "$stage/qtune-run" "$stage/attention" "$out/attention"
}

# A whole imported decoder: against the interpreter, in training, and against
# transformers + PEFT.
step_decoder() {
  [ -d "$stage/decoder" ] || { echo "not staged: $stage/decoder"; return 1; }
  "$python" "$here/check_decoder.py" "$stage/qtune-run" "$stage/decoder" "$out/decoder"
}

# Figures: forward+backward of the INT4 + LoRA layer beside PyTorch eager and
# torch.compile (bench/train_layer.py); not a pass/fail check of speed.
step_bench() {
  "$python" bench/attention.py "$stage/qtune-run" "$stage/attention" "$out/bench/attention" &&
    "$python" bench/train_layer.py "$stage/bench/train_layer.qtb" "$stage/qtune-run" "$out/bench" &&
    "$python" bench/peqa_qft_layer.py "$stage/bench/peqa_layer.qtb" "$stage/bench/qft_layer.qtb" \
      "$stage/qtune-run" "$out/bench" &&
    "$python" bench/decoder_train.py "$stage/qtune-run" "$stage/bench/decoder" "$out/bench/decoder"
}

# The runtime's unit tests on a GPU: kernels launched from PTX and cubin,
# dynamic shared memory, out of device memory and bad launches.
step_runtime() {
  [ -x "$stage/qtune-rt-unittests" ] || { echo "not staged: $stage/qtune-rt-unittests"; return 1; }
  QTUNE_RUN="$stage/qtune-run" "$stage/qtune-rt-unittests" --gtest_brief=1
}

run_step gpu step_gpu || blocked="gpu"
run_step stage step_stage || blocked="${blocked:-stage}"
run_step forward step_forward
run_step gradients step_gradients
run_step train step_train
run_step peft step_peft
run_step attention step_attention
run_step decoder step_decoder
run_step bench step_bench
run_step runtime step_runtime

# --- summary (printed last) --------------------------------------------------------------
{
  if [ -f "$out/forward/forward-summary.txt" ]; then
    echo
    cat "$out/forward/forward-summary.txt"
  fi
  echo
  echo "gpu-check ($stage -> $out)"
  printf '  %-10s %-32s %6s\n' step result seconds
  for i in "${!names[@]}"; do
    printf '  %-10s %-32s %6s\n' "${names[$i]}" "${results[$i]}" "${secs[$i]}"
  done
} | tee "$out/summary.txt"
n_ok=0; n_bad=0; n_skip=0
for r in "${results[@]}"; do
  case "$r" in
    ok) n_ok=$((n_ok + 1)) ;;
    skipped*) n_skip=$((n_skip + 1)) ;;
    *) n_bad=$((n_bad + 1)) ;;
  esac
done
echo "gpu-check: $n_ok passed, $n_bad failed, $n_skip skipped" | tee -a "$out/summary.txt"
[ "$n_bad" = 0 ] && [ "$n_skip" = 0 ]
