#!/usr/bin/env bash
# The paper's recipe on one 8-GPU machine. Stage 1 (pool mode) uses all 8 GPUs; stage 2 (online
# mode) serves the judge with vLLM on GPUs 4-7 and trains on GPUs 0-3.
set -euo pipefail
here=$(dirname "$0")

# 1. Pool mode on labelled trajectories.
accelerate launch --config_file "$here/accelerate_zero3.yaml" \
  -m actprm.cli train --config "$here/pool_mode.yaml"

# 2. Online mode: start the judge, wait until it answers, then train on unlabelled trajectories.
CUDA_VISIBLE_DEVICES=4,5,6,7 vllm serve Qwen/QwQ-32B --tensor-parallel-size 4 --port 8000 \
  --max-model-len 20000 --enable-prefix-caching &
judge_pid=$!
trap 'kill $judge_pid' EXIT
until curl -sf http://localhost:8000/v1/models >/dev/null; do sleep 10; done
CUDA_VISIBLE_DEVICES=0,1,2,3 accelerate launch --config_file "$here/accelerate_zero3.yaml" --num_processes 4 \
  -m actprm.cli train --config "$here/online_mode.yaml"

# 3. Evaluate and publish.
actprm eval --model outputs/actprm-7b-online --benchmark processbench --calibrate gsm8k --output_dir outputs/eval-pb
actprm eval --model outputs/actprm-7b-online --benchmark prmbench --output_dir outputs/eval-prmbench
actprm push --model-dir outputs/actprm-7b-online --repo-id my-org/actprm-7b \
  --eval-summary outputs/eval-pb outputs/eval-prmbench
actprm push --dataset outputs/actprm-7b-online --repo-id my-org/actprm-7b-labels
