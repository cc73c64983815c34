"""`StepScorer`: every step of a solution scored in one forward pass, read at the step separators.

A causal model's output at a step's separator depends only on the text up to it, so one pass over
the whole solution gives the same per-step scores as one pass per prefix, for a fraction of the
cost. Five kinds of PRM are supported, each with the input layout it was trained on:

- ``"ensemble"``: actprm's `EnsemblePRMModel` (and the ActPRM release format), laid out by
  `StepTokenizer`; per step the mean and std over heads of the sigmoid of the logits.
- ``"token_classification"``: TRL-style PRMs (an ``AutoModelForTokenClassification`` with 2 labels)
  laid out as TRL's ``PRMTrainer.tokenize_row`` did: ``[bos] + prompt + (step + separator)*``, each
  piece tokenised on its own, read at the last token of each separator; P(label 1 = good).
- ``"process_reward"``: Qwen2.5-Math-PRM-style models (custom code, loaded only with
  ``trust_remote_code=True``): system prompt, problem and ``<extra_0>``-separated steps in the chat
  template, read at every ``<extra_0>``; class 1 of the 2-way softmax of the reward head.
- ``"step_tag"``: language-model PRMs that answer a good or a bad token after each step (a
  `StepTagFormat`; presets `STEP_TAG_PRESETS`). ``"plain"`` layout (Math-Shepherd):
  ``problem + " " + "\n".join(step + " ки")``, encoded whole, read at every tag token. ``"chat"`` layout
  (RLHFlow): a user turn per step (the first one holds the problem too) answered by an assistant turn
  holding the good token, read at the position that predicts that answer. The score is the good
  token's share of the softmax over the good and bad tokens' logits.
- ``"value_head"``: Skywork-PRM-style models (a causal LM body and ``v_head.summary``, a linear layer to
  one value, saved as ``*ForPrmModel``): ``[bos] + problem + "\n"`` then each step followed by the
  ``"\n"`` token, each piece encoded on its own, read at each step's newline; sigmoid of the value.

To see a TRL-trained token-classification PRM exactly as it was trained, pass TRL's truncation:
``max_length`` and ``max_prompt_length`` of its ``PRMConfig`` (1024 and 512 by default): TRL kept the
last ``max_prompt_length`` tokens of ``[bos] + prompt`` and cut the whole input at ``max_length``.

A solution longer than the context is cut after the last separator that fits: the steps beyond are
not scored and the result says so (``truncated``, ``num_scored_steps``); nothing is dropped silently.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from datasets import Dataset
from safetensors import safe_open
from tqdm.auto import tqdm
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, cached_file

from .data.schema import validate_record
from .hub_utils import download_options
from .metrics import DEFAULT_THRESHOLD, first_error_from_scores
from .metrics import check_threshold
from .modeling import MODEL_TYPE, EnsemblePRMModel
from .tokenization import DEFAULT_SEPARATOR, StepTokenizer, separator_token_id

ModelKind = Literal["ensemble", "token_classification", "process_reward", "step_tag", "value_head"]
MODEL_KINDS: tuple[ModelKind, ...] = ("ensemble", "token_classification", "process_reward", "step_tag", "value_head")

TRL_STEP_SEPARATOR = "\n"
"""Default ``step_separator`` of TRL's ``PRMConfig``."""
PROCESS_REWARD_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
"""System prompt of the Qwen2.5-Math-PRM usage example."""
SKYWORK_STEP_SEPARATOR = "\n"
"""Step token of the Skywork PRMs' ``prepare_input``."""


def detect_model_kind(config: Mapping[str, Any], class_name: str | None = None) -> ModelKind:
    """The kind of PRM a ``config.json`` (as a dict) describes, or a loaded model of class ``class_name``.

    Raises:
        ValueError: if the config fits none of `MODEL_KINDS`.
    """
    architectures = [class_name] if class_name else list(config.get("architectures") or [])
    if config.get("model_type") == MODEL_TYPE or "num_ensemble" in config:
        return "ensemble"
    if any(name.endswith("ForTokenClassification") for name in architectures):
        return "token_classification"
    if any(name.endswith("ForPrmModel") or name == "ValueHeadPRM" for name in architectures):
        return "value_head"
    if any("ProcessRewardModel" in name for name in architectures) or "AutoModel" in (config.get("auto_map") or {}):
        return "process_reward"
    raise ValueError(
        f"cannot tell what kind of PRM this is (model_type {config.get('model_type')!r}, architectures "
        f"{architectures}); expected an actprm ensemble, a token-classification PRM with 2 labels, "
        "a Qwen2.5-Math-PRM-style or a Skywork-PRM-style model; for a step-tag language-model PRM "
        f"(Math-Shepherd, RLHFlow) pass kind='step_tag' and a step-tag format ({', '.join(STEP_TAG_PRESETS)})"
    )


@dataclass(frozen=True)
class StepTagFormat:
    r"""How a step-tag language-model PRM lays out a solution and answers for each step.

    Attributes:
        layout: ``"plain"``: ``problem + problem_separator + "\n".join(step + " " + step_tag)``, encoded
            whole, read at every ``step_tag`` token; ``"chat"``: the chat template, a user turn per step
            (``problem + problem_separator + first step``, then one step each) and an assistant turn
            holding ``good_token`` after each, read where the model predicts that assistant answer.
        good_token: the token that means "this step is correct" (one token of the tokenizer).
        bad_token: the token that means "this step is wrong" (one token of the tokenizer).
        step_tag: plain layout: the tag written after every step (its last token is where scores are read).
        problem_separator: text between the problem and the first step.

    Example:
        ```py
        >>> from actprm import StepScorer, StepTagFormat
        >>> math_shepherd = StepTagFormat(layout="plain", step_tag="ки")  # the "math_shepherd" preset
        >>> scorer = StepScorer.from_pretrained("peiyi9979/math-shepherd-mistral-7b-prm", step_tag_format=math_shepherd)
        ```
    """

    layout: Literal["plain", "chat"]
    good_token: str = "+"
    bad_token: str = "-"
    step_tag: str | None = None
    problem_separator: str = " "

    def __post_init__(self):
        if self.layout not in ("plain", "chat"):
            raise ValueError(f"unknown step-tag layout {self.layout!r}; choose 'plain' or 'chat'")
        if (self.layout == "plain") != (self.step_tag is not None):
            raise ValueError("the plain step-tag layout needs a step_tag, the chat layout takes none")


STEP_TAG_PRESETS: dict[str, StepTagFormat] = {
    "math_shepherd": StepTagFormat(layout="plain", step_tag="ки"),
    "rlhflow": StepTagFormat(layout="chat", problem_separator="\n\n"),
}
"""Math-Shepherd (``peiyi9979/math-shepherd-mistral-7b-prm``: tag ``ки``, ``+``/``-``) and RLHFlow
(``RLHFlow/Llama3.1-8B-PRM-*``: ``+``/``-`` answered in the assistant turns; the problem and first step
joined by a blank line, as in ProcessBench's ``run_eval_prm_rlhflow.py``)."""


def step_tag_format_named(value: str | StepTagFormat | None) -> StepTagFormat:
    """A `StepTagFormat`, or the preset of that name.

    Raises:
        ValueError: for an unknown preset name or none at all.
    """
    if isinstance(value, StepTagFormat):
        return value
    if value is None:
        raise ValueError(f"a step-tag PRM needs a step-tag format: a StepTagFormat or one of {', '.join(STEP_TAG_PRESETS)}")
    if value not in STEP_TAG_PRESETS:
        raise ValueError(f"unknown step-tag preset {value!r}; choose one of {', '.join(STEP_TAG_PRESETS)}")
    return STEP_TAG_PRESETS[value]


@dataclass
class EncodedSolution:
    """Token ids of one solution and, per scored step, the position whose output scores it."""

    input_ids: list[int]
    score_positions: list[int]
    num_steps: int

    def truncated_to(self, max_length: int | None) -> EncodedSolution:
        """Cut after the last score position inside ``max_length`` (tokens after it cannot change a causal score)."""
        positions = [p for p in self.score_positions if max_length is None or p < max_length]
        end = positions[-1] + 1 if positions else 0
        return EncodedSolution(self.input_ids[:end], positions, self.num_steps)


class _EnsembleFormat:
    """actprm ensembles: `StepTokenizer` layout, mean and std over heads of sigmoid(logits)."""

    def __init__(
        self,
        model: EnsemblePRMModel,
        tokenizer: PreTrainedTokenizerBase,
        separator: str,
        use_chat_template: bool,
        system_prompt: str | None,
    ):
        if model.config.separator_token_id is None:
            raise ValueError(
                "the ensemble model has no separator token (config.separator_token_id is None); "
                "build it with EnsemblePRMModel.from_backbone"
            )
        self.step_tokenizer = StepTokenizer(
            tokenizer, separator, use_chat_template=use_chat_template, system_prompt=system_prompt
        )
        if self.step_tokenizer.separator_id != model.config.separator_token_id:
            raise ValueError(
                f"the tokenizer gives separator {separator!r} id {self.step_tokenizer.separator_id} but the model "
                f"was trained with id {model.config.separator_token_id}: load the tokenizer saved with the model"
            )

    def encode(self, problem: str, steps: list[str]) -> EncodedSolution:
        input_ids = self.step_tokenizer({"problem": problem, "steps": steps})["input_ids"]
        separator_id = self.step_tokenizer.separator_id
        positions = [position for position, token in enumerate(input_ids) if token == separator_id]
        return EncodedSolution(input_ids, positions, len(steps))

    @staticmethod
    def probabilities(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        heads = torch.sigmoid(model(input_ids=input_ids, attention_mask=attention_mask).logits.float())
        return heads.mean(dim=0), heads.std(dim=0) if heads.shape[0] > 1 else None


class _TokenClassificationFormat:
    """TRL PRMs: ``[bos] + prompt + (step + separator)*``, piece by piece; P(label 1) at each separator's end.

    With ``max_prompt_length``, only the last that many tokens of ``[bos] + prompt`` are kept, as TRL did.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        separator: str,
        max_prompt_length: int | None = None,
    ):
        self.max_prompt_length = max_prompt_length
        if model.config.num_labels != 2:
            raise ValueError(
                "a token-classification PRM has 2 labels (0 wrong step, 1 good step); "
                f"this model has {model.config.num_labels}"
            )
        self.tokenizer = tokenizer
        self.separator_ids = tokenizer.encode(separator, add_special_tokens=False)
        if not self.separator_ids:
            raise ValueError(f"the step separator {separator!r} gives no token with this tokenizer")

    def encode(self, problem: str, steps: list[str]) -> EncodedSolution:
        bos = [] if self.tokenizer.bos_token_id is None else [self.tokenizer.bos_token_id]
        input_ids = bos + self.tokenizer(problem, add_special_tokens=False)["input_ids"]
        if self.max_prompt_length is not None:
            input_ids = input_ids[-self.max_prompt_length :]
        positions = []
        for step in steps:
            input_ids += self.tokenizer(step, add_special_tokens=False)["input_ids"] + self.separator_ids
            positions.append(len(input_ids) - 1)
        return EncodedSolution(input_ids, positions, len(steps))

    @staticmethod
    def probabilities(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        return torch.softmax(logits.float(), dim=-1)[..., 1], None


class _ProcessRewardFormat:
    """Qwen2.5-Math-PRM style: system, user problem and ``<extra_0>``-closed steps in the chat template."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, separator: str, system_prompt: str):
        if not tokenizer.chat_template:
            raise ValueError(
                "a Qwen2.5-Math-PRM-style model needs a tokenizer with a chat template; this one has none"
            )
        self.tokenizer, self.separator, self.system_prompt = tokenizer, separator, system_prompt
        self.separator_id = separator_token_id(tokenizer, separator)

    def encode(self, problem: str, steps: list[str]) -> EncodedSolution:
        messages = [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": problem},
            {"role": "assistant", "content": "".join(step + self.separator for step in steps)},
        ]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        input_ids = self.tokenizer(text)["input_ids"]
        return _read_at_marks(input_ids, self.separator_id, len(steps), f"{self.separator!r} tokens")

    @staticmethod
    def probabilities(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        outputs = model(input_ids=input_ids, attention_mask=attention_mask)
        logits = outputs.logits if hasattr(outputs, "logits") else outputs[0]
        return torch.softmax(logits.float(), dim=-1)[..., 1], None


def _read_at_marks(input_ids: list[int], mark_id: int, num_steps: int, marks: str) -> EncodedSolution:
    """Scores read at every ``mark_id`` token, which must close each step and appear nowhere else."""
    positions = [position for position, token in enumerate(input_ids) if token == mark_id]
    if len(positions) != num_steps:
        raise ValueError(
            f"found {len(positions)} {marks} for {num_steps} steps: the problem or a step contains that text"
        )
    return EncodedSolution(input_ids, positions, num_steps)


def _single_token_id(tokenizer: PreTrainedTokenizerBase, text: str, role: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise ValueError(f"the {role} {text!r} is not one token of this tokenizer (it encodes as {pieces})")
    return ids[0]


def _good_token_share(logits: torch.Tensor, good_id: int, bad_id: int) -> torch.Tensor:
    """Softmax over the good and bad tokens' logits, the good token's share, at every position."""
    return torch.softmax(logits[..., [good_id, bad_id]].float(), dim=-1)[..., 0]


class _StepTagFormat:
    """Step-tag LM PRMs (Math-Shepherd, RLHFlow): P(good token) among the good and bad tokens."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, step_format: StepTagFormat):
        self.tokenizer, self.step_format = tokenizer, step_format
        self.good_id = _single_token_id(tokenizer, step_format.good_token, "good token")
        self.bad_id = _single_token_id(tokenizer, step_format.bad_token, "bad token")
        if step_format.layout == "chat" and not tokenizer.chat_template:
            raise ValueError("the chat step-tag layout needs a tokenizer with a chat template; this one has none")
        if step_format.layout == "plain":
            tag_ids = tokenizer.encode(step_format.step_tag, add_special_tokens=False)
            self.tag_id = tag_ids[-1] if tag_ids else None
            if self.tag_id is None or tokenizer.decode([self.tag_id]).strip() != step_format.step_tag.strip():
                pieces = tokenizer.convert_ids_to_tokens(tag_ids)
                raise ValueError(
                    f"the step tag {step_format.step_tag!r} is not a token of this tokenizer (it encodes as {pieces}): "
                    "load the tokenizer saved with the PRM"
                )

    def encode(self, problem: str, steps: list[str]) -> EncodedSolution:
        if self.step_format.layout == "chat":
            return self._encode_chat(problem, steps)
        tag = self.step_format.step_tag
        text = problem + self.step_format.problem_separator + "\n".join(f"{step} {tag}" for step in steps)
        return _read_at_marks(self.tokenizer(text)["input_ids"], self.tag_id, len(steps), f"step tags {tag!r}")

    def _encode_chat(self, problem: str, steps: list[str]) -> EncodedSolution:
        """The whole conversation; each step is read where the prompt up to its user turn ends."""
        messages, positions = [], []
        for index, step in enumerate(steps):
            content = problem + self.step_format.problem_separator + step if index == 0 else step
            messages.append({"role": "user", "content": content})
            positions.append(len(self._chat_ids(messages, add_generation_prompt=True)) - 1)
            messages.append({"role": "assistant", "content": self.step_format.good_token})
        input_ids = self._chat_ids(messages, add_generation_prompt=False) if steps else []
        for step, position in enumerate(positions):
            prefix = self._chat_ids(messages[: 2 * step + 1], add_generation_prompt=True)
            if input_ids[: position + 1] != prefix:
                raise ValueError(
                    "the chat template renders a conversation's earlier turns differently once later turns "
                    "follow: a chat step-tag PRM cannot be read in one pass with this template"
                )
        return EncodedSolution(input_ids, positions, len(steps))

    def _chat_ids(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def probabilities(self, model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        return _good_token_share(logits, self.good_id, self.bad_id), None


class ValueHeadPRM(torch.nn.Module):
    """A Skywork-PRM-style model: a causal LM's body and ``v_head.summary`` (hidden size -> 1).

    Args:
        body: the base model (e.g. a ``Qwen2Model``), whose last hidden state feeds the head.
        value_head: the linear layer from the hidden size to one value.
    """

    def __init__(self, body: PreTrainedModel, value_head: torch.nn.Linear):
        super().__init__()
        self.body, self.value_head = body, value_head

    @property
    def config(self) -> PreTrainedConfig:
        return self.body.config

    @property
    def name_or_path(self) -> str:
        return self.body.name_or_path

    @property
    def device(self) -> torch.device:
        return self.body.device

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The value at every position (before the sigmoid)."""
        hidden_states = self.body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.value_head(hidden_states.to(self.value_head.weight.dtype)).squeeze(-1)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **load_options: Any) -> ValueHeadPRM:
        """The body through `AutoModel` and the head's ``v_head.summary.{weight,bias}`` from the safetensors files.

        Raises:
            ValueError: if the checkpoint holds no ``v_head.summary.weight``.
        """
        body = AutoModel.from_pretrained(name_or_path, **load_options)
        hub_options = download_options(load_options)
        tensors = _read_tensors(name_or_path, ("v_head.summary.weight", "v_head.summary.bias"), hub_options)
        weight = tensors["v_head.summary.weight"]
        head = torch.nn.Linear(weight.shape[1], weight.shape[0], bias="v_head.summary.bias" in tensors)
        head.load_state_dict({key.rsplit(".", 1)[1]: value for key, value in tensors.items()})
        return cls(body, head.to(device=body.device, dtype=body.dtype)).eval()


def _read_tensors(name_or_path: str | os.PathLike, names: tuple[str, ...], hub_options: dict[str, Any]):
    """The named tensors of a safetensors checkpoint (one file or an index of shards) that it holds."""
    index = cached_file(name_or_path, SAFE_WEIGHTS_INDEX_NAME, _raise_exceptions_for_missing_entries=False, **hub_options)
    if index is not None:
        weight_map = json.loads(Path(index).read_text(encoding="utf-8"))["weight_map"]
        files = {weight_map[name] for name in names if name in weight_map}
    else:
        files = {SAFE_WEIGHTS_NAME}
    tensors = {}
    for file in sorted(files):
        with safe_open(cached_file(name_or_path, file, **hub_options), framework="pt") as handle:
            tensors.update({name: handle.get_tensor(name) for name in names if name in handle.keys()})
    if names[0] not in tensors:
        raise ValueError(f"{name_or_path}: no {names[0]} in its safetensors weights: not a Skywork-PRM-style model")
    return tensors


class _ValueHeadFormat:
    """Skywork PRMs: ``[bos] + problem + "\\n"``, then each step and the newline token; sigmoid of the value there."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, separator: str):
        if not isinstance(model, ValueHeadPRM):
            raise ValueError(f"a value-head PRM is a ValueHeadPRM (ValueHeadPRM.from_pretrained), not {type(model).__name__}")
        self.tokenizer, self.separator = tokenizer, separator
        separator_ids = tokenizer.encode(separator)
        if not separator_ids:
            raise ValueError(f"the step separator {separator!r} gives no token with this tokenizer")
        self.separator_id = separator_ids[-1]

    def encode(self, problem: str, steps: list[str]) -> EncodedSolution:
        input_ids = self.tokenizer.encode((self.tokenizer.bos_token or "") + problem + self.separator)
        positions = []
        for step in steps:
            input_ids += (self.tokenizer.encode(step) if step else []) + [self.separator_id]
            positions.append(len(input_ids) - 1)
        return EncodedSolution(input_ids, positions, len(steps))

    @staticmethod
    def probabilities(model: ValueHeadPRM, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        return torch.sigmoid(model(input_ids=input_ids, attention_mask=attention_mask).float()), None


def _check_options(
    kind: ModelKind,
    use_chat_template: bool | None,
    system_prompt: str | None,
    step_tag_format: str | StepTagFormat | None,
    max_prompt_length: int | None,
    separator: str | None,
) -> None:
    """Refuse an option the kind of model does not take, naming it."""
    given = {
        "use_chat_template": bool(use_chat_template) and kind != "ensemble",
        "system_prompt": system_prompt is not None and kind not in ("ensemble", "process_reward"),
        "step_tag_format": step_tag_format is not None and kind != "step_tag",
        "max_prompt_length": max_prompt_length is not None and kind != "token_classification",
        "separator": separator is not None and kind == "step_tag",
    }
    refused = [name for name, wrong in given.items() if wrong]
    if refused:
        raise ValueError(f"a {kind!r} PRM takes no {', '.join(refused)} (see StepScorer for what each kind reads)")
    if max_prompt_length is not None and max_prompt_length < 1:
        raise ValueError(f"max_prompt_length must be >= 1, got {max_prompt_length}")


class StepScorer:
    """Per-step probabilities of being correct, one forward pass per solution.

    Args:
        model: an `EnsemblePRMModel`, a 2-label token-classification PRM, a Qwen2.5-Math-PRM-style model,
            a step-tag causal LM PRM or a `ValueHeadPRM`.
        tokenizer: the model's tokenizer.
        separator: the step separator; by default the ensemble's own, ``"\\n"`` for token-classification
            PRMs (TRL's default) and value-head PRMs (Skywork's), ``"<extra_0>"`` for
            Qwen2.5-Math-PRM-style models. Step-tag PRMs take theirs from ``step_tag_format``.
        max_length: longest input in tokens; by default the smaller of the tokenizer's
            ``model_max_length`` and the model's ``max_position_embeddings``.
        kind: one of `MODEL_KINDS`; detected from the model's config when omitted (``"step_tag"``
            cannot be: it is implied by ``step_tag_format``).
        use_chat_template: ensembles only: the problem in a user turn and the steps in the assistant
            turn of the chat template; by default as the ensemble was trained (its config's).
        system_prompt: the system turn: for ensembles with a chat template, by default the one they were
            trained with; for Qwen2.5-Math-PRM-style models, by default theirs. Other kinds have none.
        step_tag_format: step-tag PRMs: a `StepTagFormat` or the name of one of `STEP_TAG_PRESETS`.
        max_prompt_length: token-classification PRMs: keep only the last this many tokens of
            ``[bos] + problem``, as TRL's ``PRMConfig.max_prompt_length`` (512 by default) did in training.

    Raises:
        ValueError: for a model of no supported kind, an unknown step-tag preset, a tokenizer without
            the model's separator, tag, good or bad token, a token-classification model without exactly
            2 labels, or an option the model's kind does not take.

    Example:
        ```py
        >>> from actprm import StepScorer
        >>> scorer = StepScorer.from_pretrained("sail/ActPRM")  # or a folder saved by `ActivePRMTrainer`
        >>> [result] = scorer.score([{"problem": "What is 2 + 3 * 4?", "steps": ["3 * 4 = 12.", "2 + 12 = 14."]}])
        >>> result["first_error"]  # -1 when no step scores below the threshold
        ```
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        separator: str | None = None,
        max_length: int | None = None,
        kind: ModelKind | None = None,
        use_chat_template: bool | None = None,
        system_prompt: str | None = None,
        step_tag_format: str | StepTagFormat | None = None,
        max_prompt_length: int | None = None,
    ):
        if kind is None and step_tag_format is not None:
            kind = "step_tag"
        self.kind: ModelKind = kind or detect_model_kind(model.config.to_dict(), type(model).__name__)
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"unknown model kind {self.kind!r}; choose one of {', '.join(MODEL_KINDS)}")
        _check_options(self.kind, use_chat_template, system_prompt, step_tag_format, max_prompt_length, separator)
        self.model, self.tokenizer = model.eval(), tokenizer
        if self.kind == "ensemble":
            self.separator = separator or model.config.separator
            use_chat_template = model.config.use_chat_template if use_chat_template is None else use_chat_template
            if system_prompt is None and use_chat_template:
                system_prompt = model.config.system_prompt
            self.format = _EnsembleFormat(model, tokenizer, self.separator, use_chat_template, system_prompt)
        elif self.kind == "token_classification":
            self.separator = TRL_STEP_SEPARATOR if separator is None else separator
            self.format = _TokenClassificationFormat(model, tokenizer, self.separator, max_prompt_length)
        elif self.kind == "step_tag":
            step_tag_format = step_tag_format_named(step_tag_format)
            self.separator = step_tag_format.step_tag
            self.format = _StepTagFormat(tokenizer, step_tag_format)
        elif self.kind == "value_head":
            self.separator = SKYWORK_STEP_SEPARATOR if separator is None else separator
            self.format = _ValueHeadFormat(model, tokenizer, self.separator)
        else:
            self.separator = separator or DEFAULT_SEPARATOR
            system_prompt = system_prompt or PROCESS_REWARD_SYSTEM_PROMPT
            self.format = _ProcessRewardFormat(tokenizer, self.separator, system_prompt)
        self.max_length = max_length or _context_length(model.config, tokenizer)
        self.pad_token_id = next(
            (token for token in (tokenizer.pad_token_id, tokenizer.eos_token_id) if token is not None), 0
        )
        self.settings = {
            "model": model.name_or_path,
            "kind": self.kind,
            "separator": self.separator,
            "max_length": self.max_length,
            **({"use_chat_template": use_chat_template} if self.kind == "ensemble" else {}),
            **({"system_prompt": system_prompt} if system_prompt is not None else {}),
            **({"step_tag_format": asdict(step_tag_format)} if self.kind == "step_tag" else {}),
            **({"max_prompt_length": max_prompt_length} if max_prompt_length is not None else {}),
        }
        """What decides the scores: the model, its kind and the input layout (recorded with predictions)."""

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        trust_remote_code: bool = False,
        *,
        separator: str | None = None,
        max_length: int | None = None,
        use_chat_template: bool | None = None,
        system_prompt: str | None = None,
        step_tag_format: str | StepTagFormat | None = None,
        max_prompt_length: int | None = None,
        **load_options: Any,
    ) -> StepScorer:
        """Load a PRM of any supported kind and its tokenizer from a folder or the Hub.

        The kind is read from ``config.json``, except for step-tag PRMs (plain causal LMs), which
        ``step_tag_format`` names. ``load_options`` (``dtype``, ``device_map``, ``attn_implementation``,
        ``revision``, ...) go to the model's ``from_pretrained``.

        Raises:
            FileNotFoundError: if ``name_or_path`` is neither a model folder nor a reachable Hub model.
            ValueError: for a Qwen2.5-Math-PRM-style model without ``trust_remote_code=True``, a model
                of no supported kind, or an unknown step-tag preset.
        """
        hub_options = download_options(load_options)
        if step_tag_format is not None:
            step_tag_format = step_tag_format_named(step_tag_format)  # a bad preset fails before loading
        try:
            config, _ = PreTrainedConfig.get_config_dict(name_or_path, **hub_options)
        except OSError as error:
            raise FileNotFoundError(f"{name_or_path}: no model folder or reachable Hub model ({error})") from None
        kind = "step_tag" if step_tag_format is not None else detect_model_kind(config)
        if kind == "ensemble":
            model = EnsemblePRMModel.from_pretrained(name_or_path, **load_options)
        elif kind == "token_classification":
            model = AutoModelForTokenClassification.from_pretrained(
                name_or_path, trust_remote_code=trust_remote_code, **load_options
            )
        elif kind == "step_tag":
            model = AutoModelForCausalLM.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **load_options)
        elif kind == "value_head":
            model = ValueHeadPRM.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **load_options)
        elif not trust_remote_code:
            architectures = ", ".join(config.get("architectures") or ["custom code"])
            raise ValueError(
                f"{name_or_path} is a Qwen2.5-Math-PRM-style model ({architectures}) whose code lives in the "
                "checkpoint: read it, then pass trust_remote_code=True (--trust-remote-code) to run it"
            )
        else:
            model = AutoModel.from_pretrained(name_or_path, trust_remote_code=True, **load_options)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **hub_options)
        return cls(
            model,
            tokenizer,
            separator=separator,
            max_length=max_length,
            kind=kind,
            use_chat_template=use_chat_template,
            system_prompt=system_prompt,
            step_tag_format=step_tag_format,
            max_prompt_length=max_prompt_length,
        )

    def encode(self, problem: str, steps: list[str]) -> EncodedSolution:
        """The model input of one solution, cut at a step boundary to fit `max_length`."""
        return self.format.encode(problem, list(steps)).truncated_to(self.max_length)

    def score(
        self,
        items: Iterable[Mapping[str, Any]] | Dataset,
        threshold: float = DEFAULT_THRESHOLD,
        batch_size: int = 8,
        **options: bool,
    ) -> list[dict[str, Any]]:
        """Score every step of every item; results in the order of ``items``.

        Args:
            items: ``{"problem", "steps"}`` mappings or a canonical dataset (`actprm.load_steps`).
            threshold: a step scored below it is an error; the first such step is ``first_error``.
            batch_size: solutions per forward pass (on CPU 1 is usually fastest: PyTorch's CPU
                attention has no fast kernel for padded batches).
            options: ``group_by_length`` (default True: batch solutions of similar token length
                together, for less padding) and ``show_progress`` (default True: a progress bar).

        Returns:
            Per item: ``scores`` (P(correct) per scored step), ``stds`` (std over heads per scored
            step, ``None`` for a single model), ``first_error`` (-1 for none), ``num_steps``,
            ``num_scored_steps``, ``truncated`` (steps beyond the context were not scored) and
            ``empty`` (the solution has no step).

        Raises:
            ValueError: if ``threshold`` is outside (0, 1), ``batch_size`` < 1, or an item lacks a
                string ``problem`` or a list of string ``steps`` (naming the item and field).
        """
        results = dict(self.iter_scores(items, threshold, batch_size, **options))
        return [results[index] for index in range(len(results))]

    def iter_scores(
        self,
        items: Iterable[Mapping[str, Any]] | Dataset,
        threshold: float = DEFAULT_THRESHOLD,
        batch_size: int = 8,
        *,
        group_by_length: bool = True,
        show_progress: bool = True,
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """`score` as a stream of ``(index in items, result)``, batch by batch (longest first when grouping)."""
        threshold = check_threshold(threshold)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        encoded = []
        for index, item in enumerate(items):
            fields = {key: item[key] for key in ("problem", "steps") if key in item}
            record = validate_record(fields, source="items", index=index)
            encoded.append(self.encode(record["problem"], record["steps"]))
        order = list(range(len(encoded)))
        if group_by_length:
            order.sort(key=lambda index: len(encoded[index].input_ids), reverse=True)
        nothing_to_run = [index for index in order if not encoded[index].score_positions]
        to_run = [index for index in order if encoded[index].score_positions]
        with tqdm(total=len(encoded), desc="Scoring steps", unit="solution", disable=not show_progress) as progress:
            for index in nothing_to_run:
                progress.update()
                yield index, _result(encoded[index], [], None, threshold)
            for start in range(0, len(to_run), batch_size):
                batch = to_run[start : start + batch_size]
                for index, scores, stds in zip(batch, *self._score_batch([encoded[i] for i in batch])):
                    yield index, _result(encoded[index], scores, stds, threshold)
                progress.update(len(batch))

    @torch.inference_mode()
    def _score_batch(self, solutions: list[EncodedSolution]) -> tuple[list[list[float]], list[list[float] | None]]:
        longest = max(len(solution.input_ids) for solution in solutions)
        input_ids = torch.full((len(solutions), longest), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, solution in enumerate(solutions):
            input_ids[row, : len(solution.input_ids)] = torch.tensor(solution.input_ids)
            attention_mask[row, : len(solution.input_ids)] = 1
        device = self.model.device
        means, stds = self.format.probabilities(self.model, input_ids.to(device), attention_mask.to(device))
        means, stds = means.cpu(), None if stds is None else stds.cpu()
        scores = [means[row, solution.score_positions].tolist() for row, solution in enumerate(solutions)]
        spreads = [None if stds is None else stds[row, s.score_positions].tolist() for row, s in enumerate(solutions)]
        return scores, spreads


def _result(
    solution: EncodedSolution, scores: list[float], stds: list[float] | None, threshold: float
) -> dict[str, Any]:
    num_scored = len(solution.score_positions)
    return {
        "scores": scores,
        "stds": stds,
        "first_error": first_error_from_scores(scores, threshold),
        "num_steps": solution.num_steps,
        "num_scored_steps": num_scored,
        "truncated": num_scored < solution.num_steps,
        "empty": solution.num_steps == 0,
    }


def _context_length(config: PreTrainedConfig, tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The smaller of the tokenizer's ``model_max_length`` (when set) and the model's position limit."""
    limits = [getattr(config.get_text_config(), "max_position_embeddings", None)]
    if tokenizer.model_max_length and tokenizer.model_max_length < int(1e20):
        limits.append(tokenizer.model_max_length)
    limits = [limit for limit in limits if limit]
    return min(limits) if limits else None
