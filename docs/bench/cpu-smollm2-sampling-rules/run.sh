#!/usr/bin/env bash
# Sampled accepted length of the shipped SmolLM2 head under the two lossless sampling rules of the
# reference decoder (walk = the server's rule, rrs = recursive rejection sampling over redrawn
# sibling groups), temperatures 0.7 and 1.0, budgets 8 and 32, the first 10 held-out prompts a set.
# Run from the repository root: bash docs/bench/cpu-smollm2-sampling-rules/run.sh
set -euo pipefail
out=docs/bench/cpu-smollm2-sampling-rules
for t in 0.7 1.0; do
  for rule in walk rrs; do
    OMP_NUM_THREADS=1 python -m launch.eval_head --head models/smollm2-135m-jetspec \
      --prompts data/prompts/code.heldout.jsonl data/prompts/math.heldout.jsonl data/prompts/chat.heldout.jsonl \
      --budgets 8,32 --num-prompts 10 --threads 1 --temperature "$t" --seed 0 --sampling-rule "$rule" \
      > "$out/t${t}_${rule}.txt"
  done
done
