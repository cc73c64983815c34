#!/usr/bin/env bash
# Prepare the fine-tuning setting of benchmarks/real_data.py for the GPU machine of the `device` tool, which
# has PyTorch but no ../shared, no network, and other versions of the HF libraries. Everything it lacks goes
# into gpu-carry/ (git-ignored), in two parts that each fit the tool's 64 MiB carry limit:
#   gpu-carry/first   the first 56 MiB of the SmolLM2 GGUF file (with the 5 MB checkout: under 64 MiB)
#   gpu-carry/second  the rest of it, the wheels (Python 3.12) and the splits (a few MB instead of the data)
# Then, on a warm machine, two calls back to back (see run.sh):
#   run(command="true", carry=["gpu-carry/first"])
#   run(command="bash benchmarks/gpu_finetune/run.sh", carry=["gpu-carry/second"], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/../.."
shared=${1:-../shared}
rm -rf gpu-carry && mkdir -p gpu-carry/first gpu-carry/second/wheels
split -b 56M "$shared/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf" gpu-carry/model.part-
mv gpu-carry/model.part-aa gpu-carry/first/ && mv gpu-carry/model.part-* gpu-carry/second/
packages=$(python -m pip freeze | grep -iE '^(transformers|huggingface[-_]hub|trl|datasets|evaluate|accelerate|gguf|dill|multiprocess)==')
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d gpu-carry/second/wheels $packages
python - "$shared" <<'PY'
import sys
from pathlib import Path

sys.path.insert(0, "benchmarks")
from transformers import AutoTokenizer

from actprm.tokenization import add_separator_token
from real_data import RealDataConfig, build_step_tokenizer, saved_splits

config = RealDataConfig(shared_dir=sys.argv[1], splits_dir="gpu-carry/second/splits")
tokenizer = AutoTokenizer.from_pretrained(Path(config.shared_dir) / config.model_dir, gguf_file=config.gguf_file)
add_separator_token(tokenizer, "<extra_0>")  # as EnsemblePRMModel.from_backbone does
print({name: len(split) for name, split in saved_splits(config, build_step_tokenizer(config, tokenizer)).items()})
PY
du -sh gpu-carry/first gpu-carry/second
