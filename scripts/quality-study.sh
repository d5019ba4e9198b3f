#!/usr/bin/env bash
# The quality study of docs/quality.md: a small byte-level LLaMA trained from
# scratch on the fortunes corpus, then quantized (round-to-nearest, GPTQ),
# error-corrected (LREC), initialized from the residual (LoftQ) and
# scale-tuned (PEQA), every variant's held-out perplexity measured by
# `qtune-run eval`, and samples of INT2 before and after LREC.
#
#   scripts/quality-study.sh prepare  DIR   compiler side: corpus, initial model, base bundle
#   scripts/quality-study.sh base     DIR   GPU side: trains the base model
#   scripts/quality-study.sh variants DIR   compiler side: quantizes, imports and compiles every variant
#   scripts/quality-study.sh tune     DIR   GPU side: LREC / PEQA runs, evals, samples
#   scripts/quality-study.sh stack    DIR   compiler side: a task LoRA over the trained LREC adapters
#   scripts/quality-study.sh stack-tune DIR GPU side: task runs and evals
#   scripts/quality-study.sh report   DIR   the tables (DIR/table.md, DIR/task-table.md)
#   scripts/quality-study.sh all      DIR   every stage, on a machine with both the tools and a GPU
#
# The compiler side needs the qtune tools ($QTUNE_BIN, default build/bin) and
# Debian's `fortunes` package; the GPU side only qtune-run ($QTUNE_RUN, default
# $QTUNE_BIN/qtune-run) and python3, so DIR can be carried between machines.
# $QTUNE_TARGET (default sm_90a) is the GPU the bundles are compiled for.
# $QTUNE_STUDY_SCALE (default 1) multiplies every step count (0.1 for a smoke run).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
[ $# -eq 2 ] || { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
stage="$1" dir="$2"
bin="${QTUNE_BIN:-$root/build/bin}"
run="${QTUNE_RUN:-$bin/qtune-run}"
target="${QTUNE_TARGET:-sm_90a}"
scale="${QTUNE_STUDY_SCALE:-1}"
fortunes="${QTUNE_FORTUNES:-/usr/share/games/fortunes}"

# The model and the runs. Byte vocabulary; 3.5 M parameters.
model_args=(--layers 4 --hidden 256 --heads 8 --kv-heads 4 --ffn 768 --vocab 256 --seed 1)
shape=(--seq-len 256 --batch 16)
group=64
lora=(--lora-r 8 --lora-alpha 16)
steps() { awk -v n="$1" -v s="$scale" 'BEGIN { v = int(n * s); print (v < 1 ? 1 : v) }'; }
base_steps=$(steps 8000)
lrec_steps=$(steps 1500)
peqa_steps=$(steps 500)
task_steps=$(steps 300)
# The token files runs train on and evals read (the task stages switch them).
train_data=data/train.txt
valid_data=data/valid.txt
fmt() { echo "#qtune.uniform<bits = $1, group = $group>"; }

say() { printf '\n== %s\n' "$*"; }
need() { [ -e "$1" ] || { echo "quality-study: error: $1 is missing: run the '$2' stage first" >&2; exit 1; }; }

prepare() {
  say "corpus: Debian's fortunes, 5 % of the fortunes held out"
  python3 "$here/quality_study.py" corpus "$fortunes" "$dir/data"
  say "the initial model (random, std 0.02) and its full-parameter training bundle"
  python3 "$root/examples/tiny_llama.py" "$dir/init" "${model_args[@]}" > /dev/null
  mkdir -p "$dir/base"
  "$bin/qtune-import" "$dir/init" -o "$dir/base/model.mlir" --params "$dir/base/init.safetensors" \
    "${shape[@]}" --method full --format none
  "$bin/qtune-compile" "$dir/base/model.mlir" --train --target "$target" -o "$dir/base/model.qtb" \
    --optimizer-options "optimizer=adamw beta2=0.95 weight-decay=0.1 max-grad-norm=1"
}

base() {
  need "$dir/base/model.qtb" prepare
  say "base model: $base_steps steps of AdamW on $(wc -c < "$dir/data/train.txt") bytes"
  rm -rf "$dir/base/run"
  "$run" train "$dir/base/model.qtb" --params "$dir/base/init.safetensors" \
    --data "$dir/data/train.txt" --steps "$base_steps" --lr 3e-3 --warmup 200 \
    --schedule cosine --min-lr 3e-4 --save-dir "$dir/base/run" \
    --save-every "$(( (base_steps + 3) / 4 ))" --metrics "$dir/base/metrics.jsonl" --log-every 500
  say "held-out loss along the run (convergence)"
  : > "$dir/base/evals.jsonl"
  for ck in "$dir"/base/run/checkpoint-*; do
    "$run" eval "$dir/base/model.qtb" --params "$ck" --data "$dir/data/valid.txt" --json |
      sed "s/^{/{\"checkpoint\":\"$(basename "$ck")\",/" | tee -a "$dir/base/evals.jsonl"
  done
  # The trained weights alone (the checkpoint also holds AdamW's moments).
  python3 "$here/quality_study.py" subset "$(last_checkpoint "$dir/base/run")/qtune_state.safetensors" \
    "$dir/base/init.safetensors" "$dir/base/trained.safetensors"
}

# import KEY OPTIONS...: graph and params of a variant under $dir/v/KEY.
import() {
  local key="$1"; shift
  mkdir -p "$dir/v"
  "$bin/qtune-import" "$dir/fp" -o "$dir/v/$key.mlir" --params "$dir/v/$key.safetensors" \
    "${shape[@]}" "$@" > "$dir/logs/import-$key.log"
}
# compile KEY [--train]: the bundle of $dir/v/KEY.mlir.
compile() {
  local key="$1"; shift
  "$bin/qtune-compile" "$dir/v/$key.mlir" --target "$target" -o "$dir/v/$key.qtb" "$@"
}
# same_graph A B: variants A and B differ only in their params (one bundle serves both).
same_graph() {
  cmp -s "$dir/v/$1.mlir" "$dir/v/$2.mlir" ||
    { echo "quality-study: error: $1 and $2 should have the same graph" >&2; exit 1; }
  rm -f "$dir/v/$2.mlir"
}

variants() {
  need "$dir/base/trained.safetensors" base
  mkdir -p "$dir/logs"
  say "the trained base model as a Hugging Face directory"
  "$bin/qtune-export" "$dir/base/model.mlir" --params "$dir/base/init.safetensors" \
    --params "$dir/base/trained.safetensors" --to hf --config "$dir/init/config.json" -o "$dir/fp"
  say "GPTQ: Hessians from 32 calibration sequences of the training text"
  python3 "$here/quality_study.py" calib "$dir/data/train.txt" "$dir/calib.safetensors" 32 256
  for b in 4 3 2; do
    "$bin/qtune-quantize" "$dir/fp" --method gptq --format "$(fmt $b)" --act-order \
      --calib "$dir/calib.safetensors" -o "$dir/gptq$b.safetensors" | tee "$dir/logs/gptq$b.log" | tail -n 3
  done
  say "imports (the base quantized by round-to-nearest unless --quantized) and bundles"
  import fp --method none --format none
  compile fp
  for b in 8 4 3 2; do
    import "int${b}_rtn" --method none --format "$(fmt $b)"
    compile "int${b}_rtn"
  done
  for b in 4 3 2; do
    import "int${b}_gptq" --method none --format "$(fmt $b)" --quantized "$dir/gptq$b.safetensors"
    same_graph "int${b}_rtn" "int${b}_gptq"
  done
  for b in 3 2; do
    # The student with adapters: evaluates whatever trained them; at 2 bits
    # it also trains them on cross entropy alone (the control without a teacher).
    import "int${b}_lora" --method lora --format "$(fmt $b)" "${lora[@]}"
    compile "int${b}_lora" --train
    # LREC: KL(teacher || student), the teacher the bf16 base in the same step.
    import "int${b}_rtn_lrec" --method lora --lrec --format "$(fmt $b)" "${lora[@]}"
    compile "int${b}_rtn_lrec" --train
  done
  import int2_gptq_lrec --method lora --lrec --format "$(fmt 2)" "${lora[@]}" \
    --quantized "$dir/gptq2.safetensors"
  same_graph int2_rtn_lrec int2_gptq_lrec
  import int2_loftq --method lora --format "$(fmt 2)" "${lora[@]}" --lora-init loftq --loftq-rounds 4
  same_graph int2_lora int2_loftq
  import int2_loftq_lrec --method lora --lrec --format "$(fmt 2)" "${lora[@]}" \
    --lora-init loftq --loftq-rounds 4
  same_graph int2_rtn_lrec int2_loftq_lrec
  import int4_peqa --method peqa --format "$(fmt 4)"
  compile int4_peqa --train
  for k in int2_rtn_lrec int2_gptq_lrec int2_loftq_lrec int3_rtn_lrec; do
    python3 "$here/quality_study.py" minus "$dir/v/$k.safetensors" "$dir/v/fp.safetensors"
  done
  rm -f "$dir/v/int3_lora.safetensors"  # its adapters come from the tuning run
  echo "the tune stage reads $dir/data and $dir/v ($(du -sh "$dir/v" | cut -f1))"
}

# train_run KEY BUNDLE_KEY STEPS LR PARAMS...: a tuning run into runs/KEY.
train_run() {
  local key="$1" bundle="$2" n="$3" lr="$4"; shift 4
  local p=()
  for f in "$@"; do p+=(--params "$f"); done
  say "$key: $n steps, lr $lr"
  rm -rf "$dir/runs/$key"
  "$run" train "$dir/v/$bundle.qtb" "${p[@]}" \
    --data "$dir/$train_data" --steps "$n" --lr "$lr" --warmup 50 --schedule cosine \
    --min-lr "$(awk -v x="$lr" 'BEGIN { print x / 10 }')" --save-dir "$dir/runs/$key" \
    --metrics "$dir/runs/$key.metrics.jsonl" --log-every 250
}
# evaluate KEY BUNDLE_KEY PARAMS...: held-out loss and perplexity into results/KEY.json.
evaluate() {
  local key="$1" bundle="$2"; shift 2
  local p=()
  for f in "$@"; do p+=(--params "$f"); done
  "$run" eval "$dir/v/$bundle.qtb" "${p[@]}" --data "$dir/$valid_data" --json \
    > "$dir/results/$key.json"
  echo "$key: $(cat "$dir/results/$key.json")"
}
# sample KEY BUNDLE_KEY PARAMS...: continuations of the fixed prompts into samples/KEY.txt.
sample() {
  local key="$1" bundle="$2"; shift 2
  local p=()
  for f in "$@"; do p+=(--params "$f"); done
  : > "$dir/samples/$key.txt"
  for prompt in "The meaning of life is " "A programmer " "Q:	What is "; do
    "$run" generate "$dir/v/$bundle.qtb" "${p[@]}" --prompt "$prompt" --max-new-tokens 160 \
      --temperature 0.7 --top-p 0.9 --seed 1 >> "$dir/samples/$key.txt" 2>/dev/null
    printf '\n----\n' >> "$dir/samples/$key.txt"
  done
}

tune() {
  need "$dir/v/int4_peqa.qtb" variants
  mkdir -p "$dir/runs" "$dir/results" "$dir/samples"
  local fp="$dir/v/fp.safetensors"
  for k in int2_rtn_lrec int2_gptq_lrec int2_loftq_lrec int3_rtn_lrec; do
    train_run "$k" "int${k:3:1}_rtn_lrec" "$lrec_steps" 2e-3 "$fp" "$dir/v/$k.safetensors"
  done
  train_run int2_rtn_ce int2_lora "$lrec_steps" 2e-3 "$dir/v/int2_lora.safetensors"
  train_run int4_peqa int4_peqa "$peqa_steps" 1e-4 "$dir/v/int4_peqa.safetensors"
  say "held-out evaluation"
  evaluate fp fp "$fp"
  for k in int8_rtn int4_rtn int3_rtn int2_rtn; do evaluate "$k" "$k" "$dir/v/$k.safetensors"; done
  for b in 4 3 2; do evaluate "int${b}_gptq" "int${b}_rtn" "$dir/v/int${b}_gptq.safetensors"; done
  evaluate int2_loftq int2_lora "$dir/v/int2_loftq.safetensors"
  # An LREC run's checkpoint holds the trained adapters; the student's frozen
  # params are the variant's and the base's (the teacher's, which the
  # student's eval bundle does not read, come along).
  for k in int2_rtn_lrec int2_gptq_lrec int2_loftq_lrec int3_rtn_lrec; do
    evaluate "$k" "int${k:3:1}_lora" "$fp" "$dir/v/$k.safetensors" "$dir/runs/$k"
  done
  evaluate int2_rtn_ce int2_lora "$dir/v/int2_lora.safetensors" "$dir/runs/int2_rtn_ce"
  evaluate int4_peqa int4_peqa "$dir/v/int4_peqa.safetensors" "$dir/runs/int4_peqa"
  say "samples"
  sample fp fp "$fp"
  sample int2_rtn int2_rtn "$dir/v/int2_rtn.safetensors"
  sample int2_rtn_lrec int2_lora "$fp" "$dir/v/int2_rtn_lrec.safetensors" "$dir/runs/int2_rtn_lrec"
}

# last_checkpoint RUN_DIR: its checkpoint-<step> with the highest step.
last_checkpoint() {
  echo "$1/checkpoint-$(ls -d "$1"/checkpoint-* | sed 's/.*checkpoint-//' | sort -n | tail -n 1)"
}

stack() {
  need "$dir/runs/int2_rtn_lrec" tune
  local lrec
  lrec=$(last_checkpoint "$dir/runs/int2_rtn_lrec")
  say "INT2 + LREC adapters (frozen, from $lrec) + a task LoRA that trains"
  import int2_stack --method lora --format "$(fmt 2)" "${lora[@]}" --base-adapter "$lrec"
  compile int2_stack --train
  python3 "$here/quality_study.py" minus "$dir/v/int2_stack.safetensors" "$dir/v/fp.safetensors"
}

stack_tune() {
  need "$dir/v/int2_stack.qtb" stack
  mkdir -p "$dir/runs" "$dir/results"
  local fp="$dir/v/fp.safetensors"
  train_data=data/task_train.txt valid_data=data/task_valid.txt
  train_run task_int2_stack int2_stack "$task_steps" 1e-3 "$fp" "$dir/v/int2_stack.safetensors"
  train_run task_int2_rtn int2_lora "$task_steps" 1e-3 "$dir/v/int2_lora.safetensors"
  say "held-out evaluation on the task's fortunes"
  evaluate task_fp fp "$fp"
  evaluate task_int2_rtn_base int2_rtn "$dir/v/int2_rtn.safetensors"
  evaluate task_int2_rtn_lrec int2_lora "$fp" "$dir/v/int2_rtn_lrec.safetensors" "$dir/runs/int2_rtn_lrec"
  evaluate task_int2_rtn int2_lora "$dir/v/int2_lora.safetensors" "$dir/runs/task_int2_rtn"
  evaluate task_int2_stack int2_stack "$fp" "$dir/v/int2_stack.safetensors" "$dir/runs/task_int2_stack"
}

report() {
  need "$dir/results/fp.json" tune
  cat > "$dir/rows.txt" <<'ROWS'
fp full precision (bf16)
int8_rtn INT8, round-to-nearest
int4_rtn INT4, round-to-nearest
int3_rtn INT3, round-to-nearest
int2_rtn INT2, round-to-nearest
int4_gptq INT4, GPTQ
int3_gptq INT3, GPTQ
int2_gptq INT2, GPTQ
int3_rtn_lrec INT3 round-to-nearest + LREC
int2_rtn_lrec INT2 round-to-nearest + LREC
int2_gptq_lrec INT2 GPTQ + LREC
int2_rtn_ce INT2 round-to-nearest + LoRA on cross entropy alone (no teacher; control)
int2_loftq INT2 + SVD (LoftQ) init, no training
int2_loftq_lrec INT2 + SVD (LoftQ) init + LREC
int4_peqa INT4 + PEQA (scales tuned on the training text)
ROWS
  python3 "$here/quality_study.py" report "$dir" rows.txt table.md
  if [ -e "$dir/results/task_fp.json" ]; then
    cat > "$dir/task-rows.txt" <<'ROWS'
task_fp full precision (bf16), no task tuning
task_int2_rtn_base INT2, round-to-nearest, no task tuning
task_int2_rtn_lrec INT2 round-to-nearest + LREC, no task tuning
task_int2_rtn INT2 round-to-nearest + task LoRA
task_int2_stack INT2 round-to-nearest + LREC (frozen) + task LoRA
ROWS
    python3 "$here/quality_study.py" report "$dir" task-rows.txt task-table.md
  fi
}

case "$stage" in
  prepare) prepare ;;
  base) base ;;
  variants) variants ;;
  tune) tune ;;
  stack) stack ;;
  stack-tune) stack_tune ;;
  report) report ;;
  all) prepare; base; variants; tune; stack; stack_tune; report ;;
  *) echo "quality-study: error: unknown stage '$stage' (prepare|base|variants|tune|stack|stack-tune|report|all)" >&2
     exit 2 ;;
esac
