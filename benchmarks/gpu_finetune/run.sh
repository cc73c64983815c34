#!/usr/bin/env bash
# On the GPU machine, from what prepare.sh made: full fine-tuning of SmolLM2-135M-Instruct with its heads
# (benchmarks/real_data.py without --cpu, bf16 mixed precision): full annotation, uncertainty selection and
# random selection at its rate, paired by seed, plus the untrained ensemble. The table, runs.json, plot and log go
# to $OUT, also when the runs stop at RUN_SECONDS (480 by default): runs.json holds every run finished by then.
# Extra arguments go to real_data.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
model=gpu-carry/shared/models/smollm2-135m-instruct
mkdir -p "$model"
cat gpu-carry/first/model.part-* gpu-carry/second/model.part-* > "$model/SmolLM2-135M-Instruct.Q4_1.gguf"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  gpu-carry/second/wheels/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
work=/tmp/bench-real-finetune  # the runs' own folders stay here; the summary goes to $OUT (8 files at most)
results=${OUT:-bench-real-finetune}
mkdir -p "$work" "$results"
trap 'cp "$work"/runs.json "$work"/results.md "$work"/real_data.png "$work"/log.txt "$results"/ 2>/dev/null || true' EXIT
timeout "${RUN_SECONDS:-480}" python3 benchmarks/real_data.py --shared_dir gpu-carry/shared \
  --splits_dir gpu-carry/second/splits --output_dir "$work" --seeds 0 1 --selection_thresholds 0.9/0.01 \
  --layers -1 --selection_layer -1 --num_train_epochs 2 --batch_size 16 "$@" 2>&1 | tee "$work/log.txt"
