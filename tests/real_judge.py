"""A real LLM judge for tests: SmolLM2-135M-Instruct from ``../shared/models``, served by `transformers serve`.

The shared copy is GGUF, which `transformers serve` cannot pin (its GGUF config names no architecture),
so it is de-quantised once per test session into ordinary safetensors and served from there.
Run as a script (``python tests/real_judge.py OUT_DIR``) it only writes that folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SMOLLM2_DIR = REPO_ROOT.parent / "shared" / "models" / "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def save_smollm2(output_dir: str | Path) -> Path:
    """De-quantise the shared SmolLM2 GGUF into a safetensors model folder with its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(SMOLLM2_DIR, gguf_file=SMOLLM2_GGUF)
    tokenizer = AutoTokenizer.from_pretrained(SMOLLM2_DIR, gguf_file=SMOLLM2_GGUF)
    del model.config.quantization_config  # the GGUF marker that makes save_pretrained refuse
    model.hf_quantizer = None
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return Path(output_dir)


if __name__ == "__main__":
    print(save_smollm2(sys.argv[1]))
