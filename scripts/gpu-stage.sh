#!/usr/bin/env bash
# Prepares everything the GPU checks need, on a machine with the compiler (no GPU
# needed): builds qtune, generates the forward cases, compiles each into a bundle
# (checked with `qtune-run inspect`), produces reference-interpreter outputs for the small oracle cases, and copies
# qtune-run. scripts/gpu-check.sh then runs on a GPU machine from the same
# repository root.
#
#   scripts/gpu-stage.sh [STAGE_DIR] [--quick] [--no-build] [--jobs N]
#                        [--build-dir DIR] [--tools-dir DIR] [--target SM]
#
# STAGE_DIR defaults to .gpu-stage (inside the repository, ignored through
# .git/info/exclude, which this script updates). --quick stages only the smoke
# cases (1000 x 384, one LoRA rank, M in {1, 7}). The stage is kept under
# QTUNE_STAGE_MAX_MIB (128) MiB (cases/ ~45 MiB, attention/ ~30 MiB, the rest ~25 MiB: where a transfer
# to the GPU machine is smaller, carry cases/ for the forward and runtime steps
# and the other folders for the rest, skipping steps with QTUNE_SKIP): past QTUNE_STAGE_PACK_MIB (40) MiB the bundles are
# packed into cases/bundles.tar.gz and the .mlir files dropped.
#
# Layout: STAGE_DIR/qtune-run, STAGE_DIR/stage.json, STAGE_DIR/cases/{cases.json,
# NAME.mlir, NAME.qtb, oracle.json, oracle/NAME/*.safetensors},
# STAGE_DIR/logs/compile/NAME.log (failed compiles only), STAGE_DIR/gradients/,
# STAGE_DIR/attention/{cases.json, NAME.qtb, bench_bB_sS.qtb, oracle files},
# STAGE_DIR/train/{cases.txt, NAME/{model.qtb, inputs.safetensors,
# params.safetensors, ref_losses.json, ref_params.safetensors}}.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

stage=""
quick=0
build_step=1
jobs="$(nproc 2>/dev/null || echo 2)"
build="${QTUNE_BUILD_DIR:-build}"
tools=""
target="sm_90a"
max_mib="${QTUNE_STAGE_MAX_MIB:-128}"
pack_mib="${QTUNE_STAGE_PACK_MIB:-40}"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --no-build) build_step=0 ;;
    --jobs) jobs="$2"; shift ;;
    --jobs=*) jobs="${1#*=}" ;;
    --build-dir) build="$2"; shift ;;
    --build-dir=*) build="${1#*=}" ;;
    --tools-dir) tools="$2"; shift ;;
    --tools-dir=*) tools="${1#*=}" ;;
    --target) target="$2"; shift ;;
    --target=*) target="${1#*=}" ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    -*) echo "gpu-stage: unknown option $1" >&2; exit 2 ;;
    *) if [ -n "$stage" ]; then echo "gpu-stage: one STAGE_DIR only" >&2; exit 2; fi
       stage="$1" ;;
  esac
  shift
done
stage="${stage:-.gpu-stage}"
tools="${tools:-$build/bin}"
here="test/Integration/GPU"
t_start=$(date +%s)

say() { printf '\n== %s\n' "$*"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1048576 }'; }
bytes_of() {  # total bytes of the files given (none: 0)
  if [ $# -eq 0 ]; then echo 0; return; fi
  { du -cb "$@" 2>/dev/null || true; } | tail -n 1 | cut -f1
}

# --- the stage folder: inside the repository and ignored by git ---------------------
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  exclude="$(git rev-parse --git-path info/exclude)"
  mkdir -p "$(dirname "$exclude")"
  if ! git check-ignore -q .gpu-stage/; then
    echo '.gpu-stage/' >> "$exclude"
    echo "gpu-stage: added .gpu-stage/ to $exclude"
  fi
  mkdir -p "$stage"
  stage_abs="$(cd "$stage" && pwd)"
  case "$stage_abs/" in
    "$root"/*)
      if ! git check-ignore -q "$stage_abs/"; then
        echo "gpu-stage: error: $stage is inside the repository but not ignored by git;" \
             "use .gpu-stage (or add it to $exclude)" >&2
        exit 2
      fi ;;
    *) echo "gpu-stage: note: $stage is outside the repository: fine for a local run," \
            "but a GPU machine that gets a copy of the repository will not see it" ;;
  esac
else
  mkdir -p "$stage"
  stage_abs="$(cd "$stage" && pwd)"
fi
cases="$stage_abs/cases"

# --- build ------------------------------------------------------------------------------
if [ "$build_step" = 1 ]; then
  say "build ($build)"
  if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
  fi
  cmake --build "$build"
fi
for tool in qtune-compile qtune-interp qtune-opt qtune-import; do
  if [ ! -x "$tools/$tool" ]; then
    echo "gpu-stage: error: $tools/$tool is missing (build it, or give --tools-dir)" >&2
    exit 2
  fi
done
qtune_run="$tools/qtune-run"
if [ ! -x "$qtune_run" ]; then
  qtune_run="$(find "$build" -type f -name qtune-run -perm -u+x 2>/dev/null | head -n 1 || true)"
fi
if [ -z "$qtune_run" ] || [ ! -x "$qtune_run" ]; then
  echo "gpu-stage: error: no qtune-run executable in $tools or under $build" >&2
  exit 2
fi

# Work on a snapshot of the tools: a rebuild while staging cannot pull a binary
# away mid-run, and every case is compiled by the same compiler.
snap="$(mktemp -d)"
trap 'rm -rf "$snap"' EXIT
cp "$tools/qtune-compile" "$tools/qtune-interp" "$tools/qtune-opt" "$tools/qtune-import" \
  "$tools/qtune-export" "$tools/qtune-quantize" "$snap/"
cp "$qtune_run" "$snap/qtune-run"
rt_tests="$(find "$build" -type f -name qtune-rt-unittests -perm -u+x 2>/dev/null | head -n 1 || true)"
if [ -n "$rt_tests" ]; then cp "$rt_tests" "$snap/qtune-rt-unittests"; fi
tools="$snap"
qtune_run="$snap/qtune-run"

# --- cases --------------------------------------------------------------------------------
say "generate cases"
rm -rf "$cases" "$stage_abs/logs" "$stage_abs/qtune-run" "$stage_abs/stage.json"
mkdir -p "$cases" "$stage_abs/logs/compile"
gen_args=()
if [ "$quick" = 1 ]; then gen_args+=(--quick); fi
python3 "$here/forward_cases.py" gen "$cases" "${gen_args[@]}"

say "compile ($jobs at a time, --target $target)"
n_cases=$(find "$cases" -maxdepth 1 -name '*.mlir' | wc -l)
progress="$stage_abs/logs/.compile-progress"
: > "$progress"
# shellcheck disable=SC2317  # run by xargs through bash -c
compile_one() {
  local f="$1" name t0 t1 status n
  name="$(basename "$f" .mlir)"
  t0=$(date +%s.%N)
  if "$QTUNE_COMPILE" "$f" -o "${f%.mlir}.qtb" --target "$QTUNE_TARGET" \
       > "$QTUNE_LOGS/$name.log" 2>&1; then
    if "$QTUNE_RUN" inspect "${f%.mlir}.qtb" >> "$QTUNE_LOGS/$name.log" 2>&1; then
      status=ok
      rm -f "$QTUNE_LOGS/$name.log"
    else  # the runtime rejects the bundle (docs/bundle.md, Validation)
      status=FAILED
      rm -f "${f%.mlir}.qtb"
    fi
  else
    status=FAILED
    rm -f "${f%.mlir}.qtb"
  fi
  t1=$(date +%s.%N)
  echo "$name $status" >> "$QTUNE_PROGRESS"
  n=$(wc -l < "$QTUNE_PROGRESS")
  printf '[%d/%d] %-40s %s (%.1f s)\n' "$n" "$QTUNE_NCASES" "$name" "$status" \
    "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')"
}
export -f compile_one
export QTUNE_COMPILE="$tools/qtune-compile" QTUNE_RUN="$qtune_run" QTUNE_TARGET="$target" \
       QTUNE_LOGS="$stage_abs/logs/compile" QTUNE_PROGRESS="$progress" QTUNE_NCASES="$n_cases"
t_compile=$(date +%s)
# shellcheck disable=SC2016  # $0 expands in the bash that xargs starts
find "$cases" -maxdepth 1 -name '*.mlir' -print0 | sort -z |
  xargs -0 -P "$jobs" -n 1 bash -c 'compile_one "$0"'
t_compile=$(( $(date +%s) - t_compile ))
failed_compiles=$(grep -c ' FAILED$' "$progress" || true)
echo "compiled $((n_cases - failed_compiles))/$n_cases cases in ${t_compile} s"
if [ "$failed_compiles" -gt 0 ]; then
  echo "compile failures (logs in $stage/logs/compile):"
  grep ' FAILED$' "$progress" | cut -d' ' -f1 | while read -r name; do
    echo "--- $name"
    tail -n 15 "$stage_abs/logs/compile/$name.log" | sed 's/^/    /'
  done
fi

say "reference interpreter outputs for the oracle cases"
oracle_rc=0
python3 "$here/forward_cases.py" oracle "$cases" --interp "$tools/qtune-interp" --jobs "$jobs" ||
  oracle_rc=$?

say "gradient kernels: bundle and reference interpreter outputs"
grads="$stage_abs/gradients"
mkdir -p "$grads"
grad_model="$here/Inputs/gradients.mlir"
"$tools/qtune-compile" "$grad_model" -o "$grads/gradients.qtb" --target "$target"
: > "$grads/entries.txt"
for entry in $(grep -o 'func\.func @[A-Za-z0-9_]*' "$grad_model" | sed 's/func\.func @//'); do
  "$tools/qtune-interp" "$grad_model" --entry "$entry" --random-inputs 9 \
    --dump-inputs "$grads/$entry.in.safetensors" --out "$grads/$entry.ref.safetensors"
  echo "$entry" >> "$grads/entries.txt"
done

say "train steps: bundles, data and the reference interpreter's runs"
train="$stage_abs/train"
rm -rf "$train"
mkdir -p "$train"
: > "$train/cases.txt"
grep -v '^#' "$here/train_cases.txt" | while read -r name model data lr steps opts; do
  [ -n "$name" ] || continue
  d="$train/$name"
  mkdir -p "$d"
  python3 "$here/make_train_data.py" "$data" "$d"
  "$tools/qtune-compile" "$here/Inputs/$model" --train --optimizer-options "$opts" \
    -o "$d/model.qtb" --target "$target"
  "$tools/qtune-opt" "$here/Inputs/$model" -qtune-autodiff -qtune-optimizer="$opts" \
    -o "$d/train.mlir"
  "$tools/qtune-interp" "$d/train.mlir" --entry layer_train_step \
    --inputs "$d/all.safetensors" --steps "$steps" --lr "$lr" \
    --losses "$d/ref_losses.json" --out "$d/ref_params.safetensors"
  rm -f "$d/all.safetensors" "$d/train.mlir"
  echo "$name $lr $steps" >> "$train/cases.txt"
done

say "train cases on a tiny imported LLaMA: LREC (2-bit student with LoftQ adapters against its full-precision teacher, plus 0.1 x cross entropy), full-parameter training, and a task adapter stacked on the LREC adapters"
# import_case NAME LR STEPS qtune-import options...: a train case in $train
# whose reference is the interpreter's run of the same steps.
import_case() {
  local name="$1" lr="$2" steps="$3"
  shift 3
  local d="$train/$name"
  mkdir -p "$d"
  python3 examples/tiny_llama.py "$d/m" --layers 2 --hidden 64 --heads 4 --kv-heads 2 \
    --ffn 128 --vocab 64 --seed 3 > /dev/null
  python3 test/Import/Inputs/make_batch.py "$d/inputs.safetensors" 2 8 64
  "$tools/qtune-import" "$d/m" -o "$d/g.mlir" --params "$d/params.safetensors" \
    --seq-len 8 --batch 2 "$@" > /dev/null
  "$tools/qtune-compile" "$d/g.mlir" --train -o "$d/model.qtb" --target "$target"
  "$tools/qtune-opt" "$d/g.mlir" -qtune-autodiff -qtune-optimizer -o "$d/train.mlir"
  python3 - "$d" <<'PY'
import os, sys
sys.path.insert(0, "scripts")
from qtune_tensors import st_read, st_write
d = sys.argv[1]
tensors = st_read(os.path.join(d, "inputs.safetensors"))
tensors.update(st_read(os.path.join(d, "params.safetensors")))
st_write(os.path.join(d, "all.safetensors"), tensors)
PY
  "$tools/qtune-interp" "$d/train.mlir" --entry model_train_step --inputs "$d/all.safetensors" \
    --steps "$steps" --lr "$lr" --losses "$d/ref_losses.json" --out "$d/ref_params.safetensors"
  rm -rf "$d/m" "$d/all.safetensors" "$d/train.mlir" "$d/g.mlir"
  echo "$name $lr $steps" >> "$train/cases.txt"
}
import_case lrec_tiny 0.003 30 --lrec --lrec-ce-weight 0.1 \
  --format 'uniform<bits = 2, group = 32>' --lora-r 4 --lora-init loftq
import_case full_tiny 0.003 20 --method full --format none
# A task adapter stacked on the LREC adapters the interpreter trained above
# (frozen; qtune-import --base-adapter): the second adapter of each layer runs
# through the standalone qtune.lora lowering.
python3 test/Import/Inputs/make_peft_adapter.py "$train/lrec_tiny/ref_params.safetensors" \
  "$train/lrec_adapter" 4 32
import_case stack_tiny 0.003 20 --format 'uniform<bits = 2, group = 32>' --lora-r 2 \
  --lora-alpha 4 --base-adapter "$train/lrec_adapter"

say "peer check data (LoRA gradients against PEFT)"
mkdir -p "$stage_abs/peft"
python3 "$here/make_train_data.py" lora "$stage_abs/peft" --random-b --seed 5
rm -f "$stage_abs/peft/all.safetensors"
cp "$train/lora_adamw/model.qtb" "$stage_abs/peft/model.qtb"

say "decoder: a tiny LLaMA (GQA, head_dim 48, S = 40) with INT4 + LoRA, and the interpreter's outputs; its GPTQ calibration entry"
dec="$stage_abs/decoder"
rm -rf "$dec"
mkdir -p "$dec"
python3 examples/tiny_llama.py "$dec/hf" --layers 2 --hidden 192 --heads 4 --kv-heads 2 \
  --ffn 256 --vocab 256 --seed 7
"$tools/qtune-import" "$dec/hf" -o "$dec/model.mlir" --params "$dec/imported.safetensors" \
  --format 'uniform<bits = 4, group = 64>' --lora-r 8 --lora-alpha 16 --seq-len 40 --batch 2
python3 "$here/make_decoder_data.py" "$dec/imported.safetensors" "$dec" --batch 2 --seq 40 \
  --vocab 256 --seed 11 --guard
# The same model (random adapters) exported as a Hugging Face bf16 directory.
"$tools/qtune-export" "$dec/model.mlir" --params "$dec/params.safetensors" -o "$dec/exported" \
  --config "$dec/hf/config.json" > /dev/null
"$tools/qtune-compile" "$dec/model.mlir" --train -o "$dec/model.qtb" --target "$target"
# Batch 4, for gradient accumulation: 2 micro-batches of 2 must step as one of 4.
"$tools/qtune-import" "$dec/hf" -o "$dec/model_b4.mlir" --params "$dec/unused.safetensors" \
  --format 'uniform<bits = 4, group = 64>' --lora-r 8 --lora-alpha 16 --seq-len 40 --batch 4 --no-logits
"$tools/qtune-compile" "$dec/model_b4.mlir" --train -o "$dec/model_b4.qtb" --target "$target"
rm -f "$dec/model_b4.mlir" "$dec/unused.safetensors"
cp docs/import.md "$dec/text.txt"   # token data (bytes) for the accumulation run
# The same with the lm head and its loss computed 16 rows at a time.
"$tools/qtune-compile" "$dec/model.mlir" --train -o "$dec/model_chunked.qtb" --target "$target" \
  --logits-chunk-bytes 16384
"$tools/qtune-opt" "$dec/model.mlir" -qtune-autodiff -qtune-optimizer -o "$dec/train.mlir"
"$tools/qtune-interp" "$dec/train.mlir" --entry model_logits --inputs "$dec/batch.safetensors" \
  --params "$dec/params.safetensors" --out "$dec/ref_logits.safetensors"
"$tools/qtune-interp" "$dec/train.mlir" --entry model_grad --inputs "$dec/batch.safetensors" \
  --params "$dec/params.safetensors" --out "$dec/ref_grads.safetensors"
"$tools/qtune-interp" "$dec/train.mlir" --entry model_train_step --inputs "$dec/batch.safetensors" \
  --params "$dec/params.safetensors" --steps 30 --lr 2e-3 --losses "$dec/ref_losses.json" \
  --out "$dec/ref_trained.safetensors"
rm -f "$dec/train.mlir" "$dec/imported.safetensors"
# PEQA on the same model: the scale gradients of every projection.
"$tools/qtune-import" "$dec/hf" -o "$dec/peqa.mlir" --params "$dec/peqa_params.safetensors" \
  --method peqa --format 'uniform<bits = 4, group = 64>' --seq-len 40 --batch 2 --no-logits
"$tools/qtune-opt" "$dec/peqa.mlir" -qtune-autodiff -o "$dec/peqa_grad.mlir"
"$tools/qtune-compile" "$dec/peqa_grad.mlir" -o "$dec/peqa.qtb" --target "$target"
"$tools/qtune-interp" "$dec/peqa_grad.mlir" --entry model_grad --inputs "$dec/batch.safetensors" \
  --params "$dec/peqa_params.safetensors" --out "$dec/ref_peqa_grads.safetensors"
rm -f "$dec/peqa.mlir" "$dec/peqa_grad.mlir"
# GPTQ calibration: the compiled Hessian entry, and the interpreter's Hessians.
python3 test/Import/Inputs/make_batch.py "$dec/calib_ids.safetensors" 4 40 256
"$tools/qtune-quantize" "$dec/hf" --calib "$dec/calib_ids.safetensors" \
  --emit-calibration "$dec/calibration.mlir" > /dev/null
"$tools/qtune-compile" "$dec/calibration.mlir" -o "$dec/calibration.qtb" --target "$target"
"$tools/qtune-quantize" "$dec/hf" --calib "$dec/calib_ids.safetensors" -o "$dec/unused.safetensors" \
  --format 'uniform<bits = 4, group = 64>' --dump-hessians "$dec/ref_hessians.safetensors" > /dev/null
rm -f "$dec/calibration.mlir" "$dec/calib_ids.safetensors" "$dec/unused.safetensors"

say "benchmark bundles (bench/: forward+backward of the INT4 + LoRA layer)"
mkdir -p "$stage_abs/bench"
python3 bench/layer_model.py "$stage_abs/bench/train_layer.mlir" --loss --m 16,2048,8192
"$tools/qtune-opt" "$stage_abs/bench/train_layer.mlir" -qtune-autodiff \
  -o "$stage_abs/bench/train_layer.grad.mlir"
"$tools/qtune-compile" "$stage_abs/bench/train_layer.grad.mlir" -o "$stage_abs/bench/train_layer.qtb" \
  --target "$target"
# PEQA (dx and the scale gradient) and QFT (one Lion int8 train step) on the same layer shape.
python3 bench/layer_model.py "$stage_abs/bench/peqa_layer.mlir" --loss --m 16,2048,8192 --method peqa
"$tools/qtune-opt" "$stage_abs/bench/peqa_layer.mlir" -qtune-autodiff \
  -o "$stage_abs/bench/peqa_layer.grad.mlir"
"$tools/qtune-compile" "$stage_abs/bench/peqa_layer.grad.mlir" -o "$stage_abs/bench/peqa_layer.qtb" \
  --target "$target"
python3 bench/layer_model.py "$stage_abs/bench/qft_layer.mlir" --loss --m 16,2048,8192 --method qft
"$tools/qtune-compile" "$stage_abs/bench/qft_layer.mlir" --train \
  --optimizer-options "optimizer=lion momentum=int8" -o "$stage_abs/bench/qft_layer.qtb" \
  --target "$target"
rm -f "$stage_abs/bench/"*.mlir

say "decoder benchmark bundles (LLaMA-7B shapes, seq 2048, from the config alone: LoRA at 2 layers batch 1 and 4 and at 32 layers batch 1; PEQA and QFT at 2 layers)"
fig="$stage_abs/bench/decoder"
rm -rf "$fig"
mkdir -p "$fig"
shapes="$(mktemp -d)"
for layers in 2 32; do
  mkdir -p "$shapes/l$layers"
  python3 - "$shapes/l$layers/config.json" "$layers" <<'PY'
import json, sys
json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
           "intermediate_size": 11008, "num_hidden_layers": int(sys.argv[2]),
           "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
           "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 4096,
           "tie_word_embeddings": False, "torch_dtype": "bfloat16"}, open(sys.argv[1], "w"))
PY
done
for run in lora:2:1 lora:2:4 lora:32:1 peqa:2:1 qft:2:1; do
  IFS=: read -r method layers batch <<< "$run"
  "$tools/qtune-import" "$shapes/l$layers" -o "$shapes/$method.mlir" --shapes-only \
    --method "$method" --seq-len 2048 --batch "$batch" --no-logits > /dev/null
  opts=""
  [ "$method" = qft ] && opts="optimizer=lion momentum=int8"
  "$tools/qtune-compile" "$shapes/$method.mlir" --train --optimizer-options "$opts" \
    -o "$fig/${method}_l${layers}_b${batch}.qtb" --target "$target"
done
rm -rf "$shapes"

say "attention kernels: cases (sequence 128 to 4096, grouped KV heads, head dimensions 16 to 128, packed documents) and the benchmark bundles"
attention_args=("$stage_abs/attention" --tools "$tools" --target "$target" --bench)
if [ "$quick" = 1 ]; then attention_args+=(--quick); fi
python3 "$here/attention_cases.py" "${attention_args[@]}" > "$stage_abs/logs/attention.log" 2>&1 ||
  { tail -20 "$stage_abs/logs/attention.log"; exit 1; }
rm -f "$stage_abs/attention/"*.mlir

cp "$qtune_run" "$stage_abs/qtune-run"
# The runtime's own tests: on a GPU they also launch kernels and check the
# out-of-memory and bad-launch errors.
if [ -x "$snap/qtune-rt-unittests" ]; then
  cp "$snap/qtune-rt-unittests" "$stage_abs/qtune-rt-unittests"
else
  echo "gpu-stage: warning: no qtune-rt-unittests under $build (the runtime step will fail)"
fi
say "qtune-run's shared libraries"
if command -v ldd >/dev/null; then
  ldd "$stage_abs/qtune-run" | sed 's/^/    /' || true
  if ldd "$stage_abs/qtune-run" | grep -v 'libcuda\.so' | grep -q 'not found'; then
    echo "gpu-stage: warning: qtune-run needs libraries that are not found here"
  fi
fi

# --- size -------------------------------------------------------------------------------------
sizes() {
  shopt -s nullglob
  b_bundles=$(bytes_of "$cases"/*.qtb "$cases"/bundles.tar.g[z])
  b_mlir=$(bytes_of "$cases"/*.mlir)
  b_oracle=$(bytes_of "$cases"/oracle)
  b_run=$(bytes_of "$stage_abs/qtune-run")
  b_total=$(bytes_of "$stage_abs")
  shopt -u nullglob
}
sizes
packed=0
if [ "$b_total" -gt $((pack_mib * 1048576)) ]; then
  say "stage is $(mib "$b_total") MiB > $pack_mib MiB: packing bundles, dropping .mlir files"
  (cd "$cases" && shopt -s nullglob && files=(*.qtb) &&
     if [ ${#files[@]} -gt 0 ]; then tar -czf bundles.tar.gz "${files[@]}" && rm -f "${files[@]}"; fi)
  rm -f "$cases"/*.mlir
  packed=1
  sizes
fi

head_commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
dirty="$(git status --porcelain 2>/dev/null | grep -qv '^??' && echo true || echo false)"
cat > "$stage_abs/stage.json" <<EOF
{
  "commit": "$head_commit",
  "uncommitted_changes": $dirty,
  "quick": $([ "$quick" = 1 ] && echo true || echo false),
  "target": "$target",
  "cases": $n_cases,
  "compile_failures": $failed_compiles,
  "oracle_ok": $([ "$oracle_rc" = 0 ] && echo true || echo false),
  "bundles_packed": $([ "$packed" = 1 ] && echo true || echo false),
  "bytes": {"bundles": $b_bundles, "mlir": $b_mlir, "oracle": $b_oracle,
            "qtune_run": $b_run, "total": $b_total}
}
EOF
sizes

say "stage $stage ($(( $(date +%s) - t_start )) s)"
printf '  %-28s %10s MiB\n' "bundles$([ "$packed" = 1 ] && echo ' (tar.gz)')" "$(mib "$b_bundles")" \
  "case .mlir files" "$(mib "$b_mlir")" "oracle inputs + outputs" "$(mib "$b_oracle")" \
  "qtune-run" "$(mib "$b_run")" "total" "$(mib "$b_total")"
echo "  cases: $n_cases, compile failures: $failed_compiles, oracle: $([ "$oracle_rc" = 0 ] && echo ok || echo FAILED)"

status=0
if [ "$b_total" -gt $((max_mib * 1048576)) ]; then
  echo "gpu-stage: error: the stage is $(mib "$b_total") MiB, over $max_mib MiB" >&2
  status=1
fi
if [ "$failed_compiles" -gt 0 ] || [ "$oracle_rc" != 0 ]; then
  echo "gpu-stage: staged with failures (see above); gpu-check reports those cases as failed" >&2
  status=1
fi
exit "$status"
