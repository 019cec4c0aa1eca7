#!/usr/bin/env bash
# Regenerate the SmolLM2 training data and train the shipped heads on ONE GPU, in one command.
#
#   launch/gpu_train_heads.sh OUT_DIR
#
# What it does (the recipe of models/smollm2-135m-jetspec/README.md):
#   1. prepares the embedded SmolLM2-135M-Instruct (python -m launch.models path smollm2);
#   2. answers every training prompt (data/prompts/*.train.jsonl, then data/prompts-more/*.train.jsonl:
#      the further code and chat prompts of launch.build_prompts --beyond) with the target itself, greedy,
#      fp32, batched transformers on the GPU, resuming from the answers already in data/regen
#      (data/regen/smollm2, plus any committed data/regen/smollm2-* extension, also trained on);
#   3. trains the causal head and, in lockstep on the same batches, the bidirectional baseline
#      (launch.train_head --also-bidirectional), within TRAIN_MINUTES of wall clock;
#   4. exports both heads in bf16 and packs the regenerated answers into OUT_DIR.
# Knobs (environment): DEVICE (cuda), REGEN_BATCH (512), REGEN_LIMIT (all prompts), REGEN_SECONDS
# (no limit; the answers written before it stop are kept and used),
# TRAIN_MINUTES (4), TRAIN_STEPS (upper bound, 4000), SEQS_PER_STEP (16), ANCHORS (64), LR (1e-3),
# INIT_HEAD + INIT_TWIN (continue an existing causal/bidirectional pair instead of starting
# fresh; for the shipped pair: INIT_HEAD=models/smollm2-135m-jetspec
# INIT_TWIN=models/smollm2-135m-jetspec-bidir, with a lower LR such as 4e-4).
set -euo pipefail
out=${1:?usage: launch/gpu_train_heads.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export JETSPEC_CACHE_DIR=${JETSPEC_CACHE_DIR:-/tmp/jetspec_cache}
work=${WORK_DIR:-/tmp/jetspec_gpu_work}
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
t0=$(date +%s)
stamp() { echo "[gpu_train_heads +$(( $(date +%s) - t0 ))s] $*"; }

stamp "preparing the target"
model=$($py -m launch.models path smollm2)
stamp "target at $model"

mkdir -p "$work"
# resume: answers left in the work folder by an earlier try, else the ones committed in data/regen
[ -d "$work/regen" ] || cp -r data/regen/smollm2 "$work/regen"
# committed extensions of that set (data/regen/smollm2-*, e.g. answers made on a CPU with
# launch.regenerate --skip-answered): their prompts are not answered again, their answers are trained on
extra=()
for d in data/regen/smollm2-*/; do [ -f "$d/meta.json" ] && extra+=("${d%/}"); done
skip=()
[ ${#extra[@]} -gt 0 ] && skip=(--skip-answered "${extra[@]}") && stamp "also using ${extra[*]}"
limit=()
[ -n "${REGEN_LIMIT:-}" ] && limit=(--limit "$REGEN_LIMIT")
prompts=(data/prompts/code.train.jsonl data/prompts/math.train.jsonl data/prompts/chat.train.jsonl)
for f in data/prompts-more/*.train.jsonl; do [ -f "$f" ] && prompts+=("$f"); done
stamp "regenerating"
regen_timeout=()
[ -n "${REGEN_SECONDS:-}" ] && regen_timeout=(timeout "$REGEN_SECONDS")  # answers so far are kept
"${regen_timeout[@]}" $py -m launch.regenerate --model "$model" --backend hf --device "$device" \
  --prompts "${prompts[@]}" \
  --out "$work/regen" --max-new-tokens 160 --batch-size "${REGEN_BATCH:-512}" "${limit[@]}" "${skip[@]}" 2>&1 \
  | grep -v "it/s\]$" || true
stamp "regeneration done"

rm -rf "$work/causal" "$work/bidirectional"
init=()
if [ -n "${INIT_HEAD:-}${INIT_TWIN:-}" ]; then
  init=(--init-head "${INIT_HEAD:?INIT_TWIN needs INIT_HEAD}" --init-twin "${INIT_TWIN:?INIT_HEAD needs INIT_TWIN}")
  stamp "continuing the pair $INIT_HEAD / $INIT_TWIN"
fi
$py -m launch.train_head --model "$model" --data "$work/regen" "${extra[@]}" --out "$work/causal" \
  --also-bidirectional "$work/bidirectional" "${init[@]}" --num-layers 2 --block-size 16 \
  --steps "${TRAIN_STEPS:-4000}" --time-budget-min "${TRAIN_MINUTES:-4}" \
  --seqs-per-step "${SEQS_PER_STEP:-16}" --anchors-per-seq "${ANCHORS:-64}" --lr "${LR:-1e-3}" \
  --gamma 0 --val-seqs 32 --eval-every "${EVAL_EVERY:-200}" --seed 0 --no-progress
stamp "training done"

for h in causal bidirectional; do
  $py -m launch.export_head --head "$work/$h" --out "$work/export_$h" --dtype bfloat16
  cp "$work/export_$h/model.safetensors" "$out/$h.safetensors"
  cp "$work/export_$h/config.json" "$out/$h.config.json"
  cp "$work/$h/train_log.jsonl" "$out/$h.train_log.jsonl"
done
tar -C "$work" -czf "$out/regen.tar.gz" regen
stamp "done; outputs:"
ls -la "$out"
