#!/usr/bin/env bash
# Evaluate released PRMs on ProcessBench and PRMBench (GPU recommended).
set -euo pipefail
for model in sail/ActPRM sail/ActPRM-X; do
  actprm eval --model "$model" --benchmark processbench --calibrate gsm8k --dtype bfloat16 --output_dir "outputs/eval/${model#*/}-processbench"
  actprm eval --model "$model" --benchmark prmbench --dtype bfloat16 --output_dir "outputs/eval/${model#*/}-prmbench"
done
# Qwen2.5-Math-PRM ships its own modelling code: it runs only with --trust_remote_code.
actprm eval --model Qwen/Qwen2.5-Math-PRM-7B --trust_remote_code --benchmark processbench --threshold 0.5 \
  --dtype bfloat16 --output_dir outputs/eval/Qwen2.5-Math-PRM-7B-processbench
actprm eval --model Qwen/Qwen2.5-Math-PRM-7B --trust_remote_code --benchmark prmbench \
  --dtype bfloat16 --output_dir outputs/eval/Qwen2.5-Math-PRM-7B-prmbench
