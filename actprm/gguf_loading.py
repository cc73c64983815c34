"""GGUF checkpoints as backbones: checked before anything loads, de-quantised on load, saved as safetensors.

transformers reads a GGUF file (``from_pretrained(..., gguf_file=...)``) into an ordinary float model
but leaves a quantisation marker on it that makes ``save_pretrained`` refuse. A backbone loaded
here has every weight de-quantised and the marker removed, so the PRM built on it saves, reloads
and pushes as ordinary safetensors. Reading a GGUF file needs the ``gguf`` package
(``pip install 'actprm[gguf]'``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from transformers import AutoModel, AutoTokenizer, GgufConfig, PreTrainedModel, PreTrainedTokenizerBase
from transformers.models.auto.auto_factory import _BaseAutoModelClass
from transformers.utils import cached_file

from .hub_utils import download_options

__all__ = ["GGUFCheckpoint", "check_gguf_file", "load_backbone_tokenizer", "load_gguf_backbone", "resolve_gguf_file"]

CHAT_TEMPLATE_KEY = "tokenizer.chat_template"


@dataclass(frozen=True)
class GGUFCheckpoint:
    """What `check_gguf_file` read from a GGUF file's header."""

    path: str
    architecture: str
    has_chat_template: bool


def _require_gguf(path: str) -> None:
    try:
        import gguf  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"reading the GGUF file {path} needs the `gguf` package: pip install 'actprm[gguf]'"
        ) from error


def _transformers_can_load(architecture: str) -> bool:
    """Whether transformers de-quantises GGUF files of ``architecture`` (llama.cpp's name for it).

    llama.cpp writes some names differently from transformers (``qwen2moe``, ``gpt-oss``,
    ``t5encoder``); transformers maps those, and so does this check.
    """
    from transformers.integrations.gguf.utils import is_gguf_arch_supported
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    candidates = {architecture, architecture.replace("-", "_"), re.sub("moe$", "_moe", architecture)}
    candidates.add(architecture.removesuffix("encoder"))
    return is_gguf_arch_supported(architecture) or bool(candidates & set(GGUF_SUPPORTED_ARCHITECTURES))


def resolve_gguf_file(name_or_path: str | os.PathLike, gguf_file: str | os.PathLike, **hub_kwargs: Any) -> str:
    """The absolute local path of ``gguf_file``: a path as it is, or a file of the folder or Hub repo ``name_or_path``
    (absolute, because `from_pretrained` joins a relative ``gguf_file`` to ``name_or_path`` again)."""
    if os.path.isfile(gguf_file):
        return os.path.abspath(gguf_file)
    hub_kwargs = download_options(hub_kwargs)
    return os.path.abspath(cached_file(str(name_or_path), str(gguf_file), **hub_kwargs))


def check_gguf_file(path: str | os.PathLike, *, needs_chat_template: bool = False) -> GGUFCheckpoint:
    """Read a GGUF file's header (no tensor data) and check that transformers can load it whole.

    Raises:
        ImportError: if the ``gguf`` package is not installed.
        ValueError: naming the file, if it is not a GGUF file, is cut short, holds an architecture
            transformers cannot de-quantise, or has no chat template while ``needs_chat_template``.
    """
    from transformers.integrations.gguf.reader import GgufHeader, read_gguf_metadata

    path = str(path)
    _require_gguf(path)
    try:
        metadata, _ = read_gguf_metadata(path)
        header = GgufHeader.from_file(path)
    except Exception as error:
        raise ValueError(f"{path} is not a readable GGUF file: {error}") from error
    needed = header.data_start + max((info.offset + info.nbytes for info in header.tensors), default=0)
    size = os.path.getsize(path)
    if size < needed:
        raise ValueError(f"{path} is cut short: its tensor table needs {needed:,} bytes, the file has {size:,}")
    if not _transformers_can_load(header.architecture):
        raise ValueError(
            f"{path} holds a {header.architecture!r} model, an architecture transformers cannot de-quantise "
            "from GGUF; convert it to safetensors, or use a GGUF file of a supported architecture (llama, "
            "qwen2, mistral, gemma, phi3, ...)"
        )
    checkpoint = GGUFCheckpoint(path, header.architecture, bool(metadata.get(CHAT_TEMPLATE_KEY)))
    if needs_chat_template and not checkpoint.has_chat_template:
        raise ValueError(
            f"use_chat_template is set, but the tokenizer in {path} has no chat template "
            f"(no {CHAT_TEMPLATE_KEY!r} in its metadata): unset use_chat_template or use a file that has one"
        )
    return checkpoint


def load_backbone_tokenizer(
    name_or_path: str | os.PathLike, gguf_file: str | os.PathLike | None = None, **load_kwargs: Any
) -> PreTrainedTokenizerBase:
    """The tokenizer at ``name_or_path``, or the one stored in its ``gguf_file`` (checked first).

    Only the download options of ``load_kwargs`` (``revision``, ``token``, ...) and
    ``trust_remote_code`` are used.
    """
    hub_kwargs = download_options(load_kwargs, trust_remote_code=True)
    if gguf_file is None:
        return AutoTokenizer.from_pretrained(name_or_path, **hub_kwargs)
    path = resolve_gguf_file(name_or_path, gguf_file, **hub_kwargs)
    check_gguf_file(path)
    return AutoTokenizer.from_pretrained(name_or_path, gguf_file=path, **hub_kwargs)


def load_gguf_backbone(
    name_or_path: str | os.PathLike,
    gguf_file: str | os.PathLike,
    *,
    auto_class: type[_BaseAutoModelClass] = AutoModel,
    **load_kwargs: Any,
) -> PreTrainedModel:
    """`auto_class.from_pretrained(name_or_path, gguf_file=...)`, every weight de-quantised, saveable as safetensors.

    The file is checked first (`check_gguf_file`); `load_kwargs` (`dtype`, `device_map`, ...) go to
    `from_pretrained`. `auto_class` is `AutoModel` (the bare backbone) by default; pass
    `AutoModelForCausalLM` for the model with its language-model head.

    Example:
        ```py
        >>> from transformers import AutoModelForCausalLM
        >>> from actprm import load_gguf_backbone
        >>> backbone = load_gguf_backbone("smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf")
        >>> backbone.save_pretrained("smollm2-135m")  # plain safetensors
        >>> lm = load_gguf_backbone("smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf", auto_class=AutoModelForCausalLM)
        ```
    """
    path = resolve_gguf_file(name_or_path, gguf_file, **load_kwargs)
    check_gguf_file(path)
    backbone = auto_class.from_pretrained(
        name_or_path, gguf_file=path, quantization_config=GgufConfig(dequantize=True), **load_kwargs
    )
    quantizer = getattr(backbone, "hf_quantizer", None)
    if quantizer is not None:  # de-quantised by the legacy loader, which keeps the marker
        quantizer.remove_quantization_config(backbone)
    return backbone
