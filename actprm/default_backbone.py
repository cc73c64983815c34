"""The embedded default backbone: a tiny Qwen2 causal LM pretrained on the synthetic arithmetic problems.

The model and its tokenizer ship in ``actprm/resources/default_backbone`` (safetensors, under 1 MB)
and load with ``from_pretrained`` like any Hub checkpoint. `build_default_backbone` rebuilds them
from a seed, on CPU, from correct solutions of `actprm.data.synthetic`'s pool split (never a test
problem) laid out exactly as `actprm.tokenization.StepTokenizer` lays out a PRM's input:

1. a byte-level BPE tokenizer, digits split one by one, trained on synthetic problems;
2. causal language modelling;
3. language modelling plus replaced-token detection, as in ELECTRA: in some solutions one thing is
   changed (a result, or any whole number, becomes a nearby different number, or one token becomes
   a sample of the stage-2 model) and a linear head, discarded afterwards, learns at every position
   whether anything so far was changed.

Stage 3 gives what a math LLM gives a real PRM: hidden states that notice an implausible step.
Language modelling alone does not put that at the step separators, and a few minutes of PRM training
on a CPU cannot find it on their own.
"""

from __future__ import annotations

import copy
import math
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING

from .constants import DEFAULT_SEPARATOR

if TYPE_CHECKING:  # the building code imports them when it runs: `default_backbone()` is only a path
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen2ForCausalLM

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", DEFAULT_SEPARATOR]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SHIPPED_BACKBONE = Path(__file__).parent / "resources" / "default_backbone"


def default_backbone() -> str:
    """Local path of the embedded default backbone and tokenizer (shipped inside the package).

    Example:
        ```py
        >>> from actprm import EnsemblePRMModel, default_backbone
        >>> model = EnsemblePRMModel.from_backbone(default_backbone())
        ```
    """
    return str(SHIPPED_BACKBONE)


def build_default_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (digits split one by one) trained on synthetic problems."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from .data.synthetic import make_arithmetic_dataset

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
    rows = make_arithmetic_dataset(2000, seed=12345, split="pool")
    tokenizer.train_from_iterator((row["problem"] + "\n" + "\n".join(row["steps"]) for row in rows), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[DEFAULT_SEPARATOR],
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
    )


class _Solutions:
    """Correct synthetic solutions as token ids, laid out as `StepTokenizer` lays out PRM inputs."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast, seed: int):
        from .data.synthetic import iter_arithmetic_examples
        from .tokenization import StepTokenizer

        self.step_tokenizer = StepTokenizer(tokenizer, DEFAULT_SEPARATOR)
        self.rows = iter_arithmetic_examples(seed, split="pool", error_rate=0.0)
        self.eos_token_id = tokenizer.eos_token_id

    def sample(self, count: int) -> list[tuple[list[int], int]]:
        """``count`` pairs ``(ids ending with EOS, length of the problem part)``."""
        encoded = []
        for row in (next(self.rows) for _ in range(count)):
            prompt_length = len(self.step_tokenizer.prompt_ids(row["problem"]))
            ids = self.step_tokenizer({**row, "label": None})["input_ids"] + [self.eos_token_id]
            encoded.append((ids, prompt_length))
        return encoded


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    import torch

    width = max(len(row) for row in rows)
    return torch.tensor([row + [value] * (width - len(row)) for row in rows])


class _Corruptor:
    """Changes one thing in a correct solution, as replaced-token detection needs.

    Half the time the result of a calculation becomes a different number within 9 of it (a slip in
    the arithmetic), a quarter of the time any whole number does; otherwise one token becomes
    a sample of the generator (never the original token). Nothing after the change is rewritten, so
    it stays consistent with the original solution.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerFast, rng: random.Random):
        self.rng = rng
        self.special_ids = tokenizer.all_special_ids
        self.digit_ids = [tokenizer.convert_tokens_to_ids(str(digit)) for digit in range(10)]
        self.equals_id = tokenizer.convert_tokens_to_ids("Ġ=")  # a result reads "Ġ=", "Ġ", digits

    def __call__(self, ids: list[int], prompt_length: int, logits: torch.Tensor) -> tuple[list[int], int, int]:
        """``(new ids, first changed position, end of the new tokens)`` for ``ids`` and the generator's
        next-token ``logits`` over them."""
        import torch

        numbers = self._numbers(ids, prompt_length)
        results = [(start, end) for start, end in numbers if start >= 2 and ids[start - 2] == self.equals_id]
        draw = self.rng.random()
        spans = results if results and draw < 0.5 else numbers if draw < 0.75 else []
        if spans:
            start, end = self.rng.choice(spans)
            value = int("".join(str(self.digit_ids.index(token)) for token in ids[start:end]))
            new_value = self.rng.choice([v for v in range(max(0, value - 9), value + 10) if v != value])
            digits = [self.digit_ids[int(digit)] for digit in str(new_value)]
            changed = next((i for i, (a, b) in enumerate(zip(digits, ids[start:end])) if a != b), min(len(digits), end - start))
            return ids[:start] + digits + ids[end:], start + changed, start + len(digits)
        position = self.rng.choice([i for i in range(prompt_length, len(ids)) if ids[i] not in self.special_ids])
        candidates = logits[position - 1].float().clone()
        candidates[[ids[position], *self.special_ids]] = -math.inf
        replacement = int(torch.multinomial(candidates.softmax(-1), 1))
        return ids[:position] + [replacement] + ids[position + 1 :], position, position + 1

    def _numbers(self, ids: list[int], start: int) -> list[tuple[int, int]]:
        spans, position = [], start
        while position < len(ids):
            end = position
            while end < len(ids) and ids[end] in self.digit_ids:
                end += 1
            if end > position:
                spans.append((position, end))
            position = end + 1
        return spans


def _pretrain(
    model: Qwen2ForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    solutions: _Solutions,
    rng: random.Random,
    *,
    steps: int,
    learning_rate: float,
    batch_size: int,
    replaced_fraction: float = 0.0,
) -> None:
    """AdamW with linear warm-up and cosine decay on language modelling, plus replaced-token detection
    on ``replaced_fraction`` of the solutions when it is above 0."""
    import torch
    import torch.nn.functional as F

    from .tokenization import IGNORE_INDEX

    generator = copy.deepcopy(model).eval() if replaced_fraction else None
    detector = torch.nn.Linear(model.config.hidden_size, 1).to(model.device) if replaced_fraction else None
    corrupt = _Corruptor(tokenizer, rng)
    parameters = list(model.parameters()) + (list(detector.parameters()) if detector else [])
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
    )
    unscored = torch.tensor([i for i in tokenizer.all_special_ids if i != solutions.step_tokenizer.separator_id])
    model.train()
    for _ in range(steps):
        originals = solutions.sample(batch_size)
        # (ids, prompt length, first changed position or None, end of the changed tokens)
        batch = [(ids, prompt_length, None, None) for ids, prompt_length in originals]
        if generator is not None:
            with torch.no_grad():
                logits = generator(input_ids=_pad([ids for ids, _ in originals], tokenizer.pad_token_id).to(model.device)).logits
            for row, (ids, prompt_length) in enumerate(originals):
                if rng.random() < replaced_fraction:
                    changed_ids, changed, end = corrupt(ids, prompt_length, logits[row])
                    batch[row] = (changed_ids, prompt_length, changed, end)
        input_ids = _pad([ids for ids, *_ in batch], tokenizer.pad_token_id)
        attention_mask = _pad([[1] * len(ids) for ids, *_ in batch], 0)
        # Language modelling everywhere but on the changed tokens themselves.
        lm_labels = _pad(
            [ids if changed is None else ids[:changed] + [IGNORE_INDEX] * (end - changed) + ids[end:] for ids, _, changed, end in batch],
            IGNORE_INDEX,
        )
        outputs = model(
            input_ids=input_ids.to(model.device),
            attention_mask=attention_mask.to(model.device),
            labels=lm_labels.to(model.device),
            output_hidden_states=detector is not None,
        )
        loss = outputs.loss
        if detector is not None:
            # At every solution position (separators included): has anything so far been changed?
            replaced = _pad(
                [[int(changed is not None and i >= changed) for i in range(len(ids))] for ids, _, changed, _ in batch],
                IGNORE_INDEX,
            )
            for row, (_, prompt_length, _, _) in enumerate(batch):
                replaced[row, :prompt_length] = IGNORE_INDEX
            replaced[torch.isin(input_ids, unscored)] = IGNORE_INDEX
            replaced = replaced.to(model.device)
            scored = replaced != IGNORE_INDEX
            logits = detector(outputs.hidden_states[-1]).squeeze(-1)
            loss = loss + F.binary_cross_entropy_with_logits(logits[scored], replaced[scored].float())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
    model.eval()


def build_default_backbone(
    path: str | os.PathLike,
    *,
    seed: int = 0,
    language_modeling_steps: int = 3000,
    detection_steps: int = 3000,
    batch_size: int = 32,
    hidden_size: int = 64,
    num_hidden_layers: int = 4,
    device: str = "cpu",
) -> Path:
    """Build the tokenizer, pretrain the tiny backbone and save both into ``path`` (overwritten).

    The shipped backbone is this with the defaults: about 30 minutes on one CPU thread (set
    ``torch.set_num_threads(1)`` to reproduce it bit for bit). ``device="cuda"`` builds it on a GPU.
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    rng = random.Random(f"actprm-default-backbone-{seed}")
    tokenizer = build_default_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=3 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config).to(device)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    solutions = _Solutions(tokenizer, seed=1_000_000 + seed)
    common = {"tokenizer": tokenizer, "solutions": solutions, "rng": rng, "batch_size": batch_size}
    _pretrain(model, steps=language_modeling_steps, learning_rate=3e-3, **common)
    if detection_steps:
        _pretrain(model, steps=detection_steps, learning_rate=1e-3, replaced_fraction=0.6, **common)
    path = Path(path)
    model.cpu().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
