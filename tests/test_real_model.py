"""The real path: SmolLM2-135M-Instruct from its GGUF file, on real PRM800K and ProcessBench rows.

The GGUF file is de-quantised once per session (`real_model.smollm2_converted`); sequences are kept
short (at most 192 tokens, batches of 2) so the whole module runs in a few minutes on 2 cores.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from real_model import served_smollm2, smollm2_backbone, smollm2_converted, smollm2_gguf  # noqa: F401

from actprm.gguf_loading import check_gguf_file
from actprm.modeling import EnsemblePRMModel
from actprm.trainer import ActivePRMTrainer
from actprm.training_args import ActivePRMConfig

MAX_LENGTH = 192


def patched_copy(source, target, old: bytes, new: bytes):
    """A byte-for-byte copy of ``source`` with the first ``old`` in its header replaced by ``new`` (same length)."""
    assert len(old) == len(new)
    data = bytearray(source.read_bytes())
    position = data.index(old, 0, 4_000_000)
    data[position : position + len(old)] = new
    target.write_bytes(bytes(data))
    return target


# ---------------------------------------------------------------------------------------------
# GGUF backbones load de-quantised and save as ordinary safetensors


def test_gguf_backbone_saves_and_reloads_as_ordinary_safetensors(smollm2_converted, smollm2_gguf):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = smollm2_converted.model
    assert getattr(loaded, "hf_quantizer", None) is None and not hasattr(loaded.config, "quantization_config")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    saved = json.loads((Path(smollm2_converted.path) / "config.json").read_text())
    assert "quantization_config" not in saved and saved["model_type"] == "llama"
    assert (Path(smollm2_converted.path) / "model.safetensors").is_file()
    reloaded = AutoModelForCausalLM.from_pretrained(smollm2_converted.path).eval()
    tokenizer = AutoTokenizer.from_pretrained(smollm2_converted.path)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    ids = tokenizer("Natalia sold clips to 48 of her friends.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, loaded(ids).logits, rtol=0, atol=1e-5)
    assert check_gguf_file(smollm2_gguf).architecture == "llama"


# ---------------------------------------------------------------------------------------------
# Bad GGUF input: one clear error naming the file, before anything loads


def test_gguf_of_an_architecture_transformers_cannot_dequantise(smollm2_gguf, tmp_path):
    key = b"general.architecture\x08\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00"  # a string of 5 bytes
    bad = patched_copy(smollm2_gguf, tmp_path / "rwkv.gguf", key + b"llama", key + b"rwkv6")
    with pytest.raises(ValueError, match=rf"{bad} holds a 'rwkv6' model, an architecture transformers cannot de-quantise"):
        EnsemblePRMModel.from_backbone(tmp_path, gguf_file=bad.name)


def test_corrupt_gguf_files(smollm2_gguf, tmp_path):
    not_gguf = tmp_path / "noise.gguf"
    not_gguf.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(ValueError, match=rf"{not_gguf} is not a readable GGUF file: .*magic"):
        EnsemblePRMModel.from_backbone(tmp_path, gguf_file=not_gguf)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(smollm2_gguf.read_bytes()[:3_000_000])
    with pytest.raises(ValueError, match=rf"{cut} is cut short: its tensor table needs 98,362,432 bytes, the file has 3,000,000"):
        EnsemblePRMModel.from_backbone(tmp_path, gguf_file=cut)


def test_gguf_without_chat_template_refused_when_use_chat_template(smollm2_gguf, tmp_path):
    bad = patched_copy(smollm2_gguf, tmp_path / "no-template.gguf", b"tokenizer.chat_template", b"tokenizer.chat_templatX")
    assert not check_gguf_file(bad).has_chat_template
    args = ActivePRMConfig(
        output_dir=str(tmp_path / "run"), use_chat_template=True, model_init_kwargs={"gguf_file": str(bad)},
        report_to="none", use_cpu=True,
    )
    with pytest.raises(ValueError, match=rf"use_chat_template is set, but the tokenizer in {bad} has no chat template"):
        ActivePRMTrainer(str(tmp_path), args=args)
    assert not (tmp_path / "run").exists()


def test_gguf_needs_the_gguf_package(smollm2_gguf, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(ImportError, match=rf"reading the GGUF file {smollm2_gguf} needs the `gguf` package: pip install 'actprm\[gguf\]'"):
        EnsemblePRMModel.from_backbone(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
