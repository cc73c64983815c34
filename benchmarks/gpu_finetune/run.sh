#!/usr/bin/env bash
# On the GPU machine, from what prepare.sh made: full fine-tuning of SmolLM2-135M-Instruct with its heads
# (benchmarks/real_data.py without --cpu, bf16 mixed precision): full annotation, uncertainty selection and
# random selection at its rate, paired by seed, plus the untrained ensemble. Results go to $OUT (runs.json is
# rewritten after every run, so a run cut short keeps what it finished). Extra arguments go to real_data.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
model=gpu-carry/shared/models/smollm2-135m-instruct
mkdir -p "$model"
cat gpu-carry/first/model.part-* gpu-carry/second/model.part-* > "$model/SmolLM2-135M-Instruct.Q4_1.gguf"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  gpu-carry/second/wheels/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
output=${OUT:-bench-real-finetune}
mkdir -p "$output"
python3 benchmarks/real_data.py --shared_dir gpu-carry/shared --splits_dir gpu-carry/second/splits \
  --output_dir "$output" --seeds 0 1 --selection_thresholds 0.9/0.01 --layers -1 --selection_layer -1 \
  --num_train_epochs 2 --batch_size 16 "$@" 2>&1 | tee "$output/log.txt"
