"""The embedded default backbone: a tiny Qwen2 causal LM and a byte-level BPE tokenizer built offline.

It is built in a few seconds from a fixed seed the first time it is asked for, saved with
``save_pretrained`` and afterwards loaded with ``from_pretrained`` like any Hub checkpoint.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

DEFAULT_SEPARATOR = "<extra_0>"
"""Step separator shared with Qwen2.5-Math-PRM and the ActPRM release."""

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", DEFAULT_SEPARATOR]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
BUILD_VERSION = "v1"


def _cache_root() -> Path:
    return Path(os.environ.get("ACTPRM_CACHE", Path.home() / ".cache" / "actprm"))


def _training_corpus() -> list[str]:
    from .data.synthetic import make_arithmetic_dataset

    rows = make_arithmetic_dataset(2000, seed=12345, split="pool")
    return [row["problem"] + "\n" + "\n".join(row["steps"]) for row in rows]


def build_default_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (digits split one by one) trained on synthetic problems."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_training_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[DEFAULT_SEPARATOR],
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
    )


def build_default_backbone(path: str | os.PathLike, seed: int = 0) -> Path:
    """Build the tiny backbone and tokenizer into ``path`` (overwritten) and return it."""
    tokenizer = build_default_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    path = Path(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def default_backbone() -> str:
    """Local path of the embedded default backbone and tokenizer, building it on first use.

    The folder lives under ``$ACTPRM_CACHE`` (default ``~/.cache/actprm``).
    """
    target = _cache_root() / f"default-backbone-{BUILD_VERSION}"
    if not (target / "config.json").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".building-"))
        build_default_backbone(staging)
        try:
            staging.rename(target)
        except OSError:  # another process finished first
            shutil.rmtree(staging, ignore_errors=True)
    return str(target)
