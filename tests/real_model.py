"""Session fixtures for the real pretrained LM in ``../shared/models``: SmolLM2-135M-Instruct (GGUF).

Import the fixtures a test module needs (``from real_model import smollm2_gguf, ...``). The GGUF
file is de-quantised once per session into an ordinary causal-LM folder (safetensors and tokenizer)
that every other fixture and test reuses. Without ``../shared/models`` (or ``ACTPRM_SHARED_MODELS``)
or the ``gguf`` package, the tests that use them are skipped with one line saying what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import missing
from test_judges import transformers_serve
from transformers import PreTrainedModel

SMOLLM2_GGUF = Path("smollm2-135m-instruct") / "SmolLM2-135M-Instruct.Q4_1.gguf"
"""Where SmolLM2-135M-Instruct lies in the shared models folder."""


@pytest.fixture(scope="session")
def smollm2_gguf(shared_models) -> Path:
    """The SmolLM2-135M-Instruct GGUF file (Llama architecture, ChatML template, Q4_1)."""
    path = shared_models / SMOLLM2_GGUF
    if not path.is_file():
        missing(f"real model not found: {path} (set ACTPRM_SHARED_MODELS)")
    pytest.importorskip("gguf", reason="the `gguf` package is not installed (pip install 'actprm[gguf]')")
    return path


@dataclass
class ConvertedModel:
    """A GGUF checkpoint de-quantised once: the model in memory and the folder it was saved to."""

    model: PreTrainedModel
    path: str


@pytest.fixture(scope="session")
def smollm2_converted(smollm2_gguf, tmp_path_factory) -> ConvertedModel:
    """SmolLM2 loaded from its GGUF file with its LM head, saved as a safetensors folder with its tokenizer."""
    from transformers import AutoModelForCausalLM

    from actprm.gguf_loading import load_backbone_tokenizer, load_gguf_backbone

    path = tmp_path_factory.mktemp("smollm2-135m-instruct")
    model = load_gguf_backbone(smollm2_gguf.parent, smollm2_gguf.name, auto_class=AutoModelForCausalLM)
    model.save_pretrained(path)
    load_backbone_tokenizer(smollm2_gguf.parent, smollm2_gguf.name).save_pretrained(path)
    return ConvertedModel(model.eval(), str(path))


@pytest.fixture(scope="session")
def smollm2_backbone(smollm2_converted) -> str:
    """Folder of SmolLM2-135M-Instruct as an ordinary causal LM (safetensors + tokenizer with chat template)."""
    return smollm2_converted.path


@pytest.fixture(scope="session")
def served_smollm2(smollm2_backbone, tmp_path_factory) -> str:
    """Base URL (``.../v1``) of a real ``transformers serve`` running SmolLM2-135M-Instruct on CPU.

    The served model's name is the folder `smollm2_backbone` gives.
    """
    log_path = tmp_path_factory.mktemp("serve-smollm2") / "serve.log"
    with transformers_serve(smollm2_backbone, log_path) as (base_url, _):
        yield base_url
