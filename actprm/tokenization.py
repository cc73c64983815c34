"""Turn step records into model inputs: a separator token after every step, labels at separators.

The separator is appended as a token id, never by joining strings, and text is tokenised with
``split_special_tokens=True`` so a separator written inside a problem or a step cannot create a
fake step boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, Mapping

import torch
from transformers import DataCollatorForTokenClassification, PreTrainedTokenizerBase

from .constants import DEFAULT_SEPARATOR, IGNORE_INDEX  # DEFAULT_SEPARATOR: re-exported, the step separator's home

_CONTENT_MARKER = "\u0000actprm-problem\u0000"
_SYSTEM_MARKER = "\u0000actprm-system\u0000"


def add_separator_token(tokenizer: PreTrainedTokenizerBase, separator: str) -> int:
    """Make ``separator`` a special token of ``tokenizer`` (added if missing) and return its id."""
    if separator not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [separator]}, replace_extra_special_tokens=False)
    return tokenizer.convert_tokens_to_ids(separator)


def separator_token_id(tokenizer: PreTrainedTokenizerBase, separator: str) -> int:
    """The id of ``separator`` in ``tokenizer``; a clear error if the tokenizer does not have it."""
    if separator not in tokenizer.get_vocab():
        raise ValueError(
            f"the tokenizer has no separator token {separator!r}; "
            "add it with actprm.tokenization.add_separator_token(tokenizer, separator) "
            "and resize the model's embeddings (EnsemblePRMModel.from_backbone does both)"
        )
    return tokenizer.convert_tokens_to_ids(separator)


def step_labels_for_training(
    record: Mapping[str, Any], mode: Literal["first_error", "per_step"] = "first_error"
) -> list[int]:
    """One training label per step: 1 good, 0 wrong, ``-100`` for no label.

    ``first_error`` mode uses ``label``: steps before the first error are good, the first error is
    wrong, later steps carry no label. ``per_step`` mode uses ``step_labels`` as given.
    """
    num_steps = len(record["steps"])
    if mode == "per_step":
        values = record.get("step_labels") or [None] * num_steps
        return [IGNORE_INDEX if v is None else int(v) for v in values]
    label = record.get("label")
    if label is None:
        return [IGNORE_INDEX] * num_steps
    if not -1 <= label < num_steps:
        raise ValueError(
            f"record {record.get('id')!r}, field 'label': {label} is outside [-1, {num_steps - 1}] for {num_steps} steps"
        )
    if label == -1:
        return [1] * num_steps
    return [1] * label + [0] + [IGNORE_INDEX] * (num_steps - label - 1)


@dataclass
class StepTokenizer:
    """Tokenise ``{"problem", "steps", ...}`` records for an ensemble PRM.

    Args:
        tokenizer: the backbone's tokenizer; it must contain ``separator``.
        separator: the step separator token.
        max_length: when a solution is longer, whole trailing steps are dropped (never half a
            step and its separator); each record reports its count in ``num_dropped_steps``.
        label_mode: ``"first_error"`` (ProcessBench labels, -100 after the first error) or
            ``"per_step"`` (the record's ``step_labels``).
        use_chat_template: put the problem in a user turn and the steps in the assistant turn of
            the tokenizer's chat template.
        system_prompt: with ``use_chat_template``, a system turn before the problem (by default, what
            the template puts there).
    """

    tokenizer: PreTrainedTokenizerBase
    separator: str
    max_length: int | None = None
    label_mode: Literal["first_error", "per_step"] = "first_error"
    use_chat_template: bool = False
    system_prompt: str | None = None

    def __post_init__(self) -> None:
        self.separator_id = separator_token_id(self.tokenizer, self.separator)
        if self.system_prompt is not None and not self.use_chat_template:
            raise ValueError("a system prompt needs use_chat_template=True")

    def _text_ids(self, text: str) -> list[int]:
        return self._texts_ids([text])[0]

    def _texts_ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's ids in one batched call (special-token text stays text)."""
        return self.tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def _template_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @cached_property
    def _chat_template_ids(self) -> tuple[list[int], list[int]]:
        """Token ids of the chat template before and after the problem, rendered once.

        The template's own text is tokenised as it is; the system prompt as plain text, so separator
        text in it never becomes a separator token.
        """
        system = [] if self.system_prompt is None else [{"role": "system", "content": _SYSTEM_MARKER}]
        rendered = self.tokenizer.apply_chat_template(
            [*system, {"role": "user", "content": _CONTENT_MARKER}], tokenize=False, add_generation_prompt=True
        )
        before_system, _, rest = rendered.rpartition(_SYSTEM_MARKER)
        head, tail = rest.split(_CONTENT_MARKER)
        head_ids = self._template_ids(head)
        if self.system_prompt is not None:
            head_ids = self._template_ids(before_system) + self._text_ids(self.system_prompt) + head_ids
        return head_ids, self._template_ids(tail)

    def prompt_ids(self, problem: str) -> list[int]:
        """Token ids of everything before the first step (the problem as plain text)."""
        if not self.use_chat_template:
            return self._text_ids(problem + "\n\n")
        head_ids, tail_ids = self._chat_template_ids
        return head_ids + self._text_ids(problem) + tail_ids

    def __call__(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """``input_ids``, ``attention_mask``, ``labels`` and ``num_dropped_steps`` for one record."""
        step_labels = step_labels_for_training(record, self.label_mode)
        input_ids = self.prompt_ids(record["problem"])
        labels = [IGNORE_INDEX] * len(input_ids)
        kept = 0
        steps = list(record["steps"])
        for step_ids, step_label in zip(self._texts_ids(steps) if steps else [], step_labels):
            step_ids = step_ids + [self.separator_id]
            if self.max_length is not None and len(input_ids) + len(step_ids) > self.max_length:
                break
            input_ids += step_ids
            labels += [IGNORE_INDEX] * (len(step_ids) - 1) + [step_label]
            kept += 1
        return {
            "input_ids": input_ids,
            "attention_mask": [1] * len(input_ids),
            "labels": labels,
            "num_dropped_steps": len(record["steps"]) - kept,
        }


@dataclass
class StepDataCollator(DataCollatorForTokenClassification):
    """Pads ``input_ids``/``attention_mask`` with the tokenizer and ``labels`` with -100.

    Integer columns named in ``keep_columns`` (e.g. a row index) are batched as tensors when the
    features have them; every other column is left out of the batch.
    """

    keep_columns: tuple[str, ...] = ()

    def torch_call(self, features):
        model_inputs = [{k: f[k] for k in ("input_ids", "attention_mask", "labels") if k in f} for f in features]
        batch = super().torch_call(model_inputs)
        for column in (c for c in self.keep_columns if c in features[0]):
            batch[column] = torch.tensor([f[column] for f in features])
        return batch
