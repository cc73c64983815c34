"""`TransformersJudge`: a local causal LM through `generate`, with the critique prompt and parser."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .base import Emit
from .prompt import CritiqueJudge, UnparseableOutputError, build_critique_messages, parse_first_error


class TransformersJudge(CritiqueJudge):
    """A judge run in-process by a `transformers` causal LM, in left-padded batches.

    With ``temperature > 0`` an unparseable answer is sampled again up to ``parse_retries`` times;
    greedy decoding would repeat it, so it is recorded as a failure at once.

    Args:
        model: a model id or local path, or a loaded `PreTrainedModel`.
        tokenizer: defaults to the one saved with ``model``; it needs a chat template.
        max_new_tokens: length limit of each answer.
        batch_size: prompts generated together.
        temperature: ``0`` for greedy decoding.
        parse_retries: new samples for an unparseable answer when sampling.
        generation_kwargs: more `generate` arguments (e.g. ``prefix_allowed_tokens_fn`` to constrain
            the answer); their names and values (callables by name) enter the judge identity.
        cache_path: sqlite cache file (see `JudgeCache`).

    Example:
        ```py
        >>> from actprm import TransformersJudge, make_arithmetic_dataset
        >>> judge = TransformersJudge("Qwen/Qwen2.5-Math-7B-Instruct", max_new_tokens=2048, cache_path="judge_cache.sqlite")
        >>> results = judge.annotate(make_arithmetic_dataset(4).to_list())
        ```
    """

    def __init__(
        self,
        model: str | os.PathLike | PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase | None = None,
        *,
        max_new_tokens: int = 1024,
        batch_size: int = 8,
        temperature: float = 0.0,
        parse_retries: int = 2,
        generation_kwargs: Mapping[str, Any] | None = None,
        cache_path: str | os.PathLike | None = None,
    ):
        super().__init__(cache_path=cache_path)
        if isinstance(model, (str, os.PathLike)):
            model = AutoModelForCausalLM.from_pretrained(model)
        self.model = model.eval()
        self.tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(model.name_or_path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.temperature = temperature
        self.parse_retries = parse_retries if temperature > 0 else 0
        self.generation_kwargs = dict(generation_kwargs or {})

    @property
    def identity(self) -> str:
        extra = json.dumps(
            self.generation_kwargs, sort_keys=True, default=lambda v: getattr(v, "__qualname__", repr(v))
        )
        return self._make_identity(
            "transformers",
            self.model.name_or_path,
            temperature=self.temperature,
            max_new_tokens=self.max_new_tokens,
            **({"generation_kwargs": extra} if self.generation_kwargs else {}),
        )

    def _annotate(self, items: Sequence[dict[str, Any]], emit: Emit) -> None:
        for start in range(0, len(items), self.batch_size):
            batch = range(start, min(start + self.batch_size, len(items)))
            tokens = dict.fromkeys(batch, 0)
            pending, last_output, reason = list(batch), {}, {}
            for _ in range(self.parse_retries + 1):
                outputs, spent = self._generate([items[i] for i in pending])
                still_pending = []
                for position, output, spent_tokens in zip(pending, outputs, spent):
                    item = items[position]
                    tokens[position] += spent_tokens
                    try:
                        first_error = parse_first_error(output, len(item["steps"]))
                    except UnparseableOutputError as error:
                        last_output[position], reason[position] = output, f"unparseable answer: {error}"
                        still_pending.append(position)
                        continue
                    emit(position, self._annotation(item, first_error, tokens=tokens[position], raw_output=output))
                pending = still_pending
                if not pending:
                    break
            for position in pending:
                emit(
                    position,
                    self._failure(
                        reason[position],
                        raw_output=last_output[position],
                        attempts=self.parse_retries + 1,
                        tokens=tokens[position],
                    ),
                )

    @torch.inference_mode()
    def _generate(self, items: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[int]]:
        """Answers to ``items`` and the tokens each one spent (prompt + completion)."""
        prompts = [
            self.tokenizer.apply_chat_template(
                build_critique_messages(item["problem"], item["steps"]), tokenize=False, add_generation_prompt=True
            )
            for item in items
        ]
        inputs = self.tokenizer(
            prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False
        ).to(self.model.device)
        sampling = (
            {"do_sample": True, "temperature": self.temperature} if self.temperature > 0 else {"do_sample": False}
        )
        generated = self.model.generate(
            **inputs,
            max_new_tokens=self.max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            **sampling,
            **self.generation_kwargs,
        )[:, inputs["input_ids"].shape[1] :]
        self.stats.add(requests=len(items))
        eos_token_id = self.model.generation_config.eos_token_id
        spent = [
            prompt_length + _completion_length(completion, eos_token_id)
            for prompt_length, completion in zip(inputs["attention_mask"].sum(dim=1).tolist(), generated)
        ]
        return self.tokenizer.batch_decode(generated, skip_special_tokens=True), spent


def _completion_length(completion: torch.Tensor, eos_token_id: int | list[int] | None) -> int:
    """Tokens generated up to and including the first end-of-sequence token (padding excluded)."""
    if eos_token_id is None:
        return len(completion)
    eos_ids = torch.tensor(eos_token_id if isinstance(eos_token_id, list) else [eos_token_id])
    ends = torch.isin(completion.cpu(), eos_ids).nonzero()
    return int(ends[0, 0]) + 1 if len(ends) else len(completion)
