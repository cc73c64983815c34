"""`StepScorer`: every step of a solution scored in one forward pass, read at the step separators.

A causal model's output at a step's separator depends only on the text up to it, so one pass over
the whole solution gives the same per-step scores as one pass per prefix, for a fraction of the
cost. Three kinds of PRM are supported, each with the input layout it was trained on:

- ``"ensemble"``: actprm's `EnsemblePRMModel` (and the ActPRM release format), laid out by
  `StepTokenizer`; per step the mean and std over heads of the sigmoid of the logits.
- ``"token_classification"``: TRL-style PRMs (an ``AutoModelForTokenClassification`` with 2 labels)
  laid out as TRL's ``PRMTrainer.tokenize_row`` did: ``[bos] + prompt + (step + separator)*``, each
  piece tokenised on its own, read at the last token of each separator; P(label 1 = good).
- ``"process_reward"``: Qwen2.5-Math-PRM-style models (custom code, loaded only with
  ``trust_remote_code=True``): system prompt, problem and ``<extra_0>``-separated steps in the chat
  template, read at every ``<extra_0>``; class 1 of the 2-way softmax of the reward head.

A solution longer than the context is cut after the last separator that fits: the steps beyond are
not scored and the result says so (``truncated``, ``num_scored_steps``); nothing is dropped silently.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import (
    AutoModel,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from .data.schema import validate_record
from .default_backbone import DEFAULT_SEPARATOR
from .metrics import DEFAULT_THRESHOLD, first_error_from_scores
from .metrics import check_threshold
from .modeling import MODEL_TYPE, EnsemblePRMModel
from .tokenization import StepTokenizer, separator_token_id

ModelKind = Literal["ensemble", "token_classification", "process_reward"]
MODEL_KINDS: tuple[ModelKind, ...] = ("ensemble", "token_classification", "process_reward")

TRL_STEP_SEPARATOR = "\n"
"""Default ``step_separator`` of TRL's ``PRMConfig``."""
PROCESS_REWARD_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
"""System prompt of the Qwen2.5-Math-PRM usage example."""
HUB_OPTIONS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")


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
    if any("ProcessRewardModel" in name for name in architectures) or "AutoModel" in (config.get("auto_map") or {}):
        return "process_reward"
    raise ValueError(
        f"cannot tell what kind of PRM this is (model_type {config.get('model_type')!r}, architectures "
        f"{architectures}); expected an actprm ensemble, a token-classification PRM with 2 labels "
        "or a Qwen2.5-Math-PRM-style model"
    )


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
    """TRL PRMs: ``[bos] + prompt + (step + separator)*``, piece by piece; P(label 1) at each separator's end."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, separator: str):
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
        positions = [position for position, token in enumerate(input_ids) if token == self.separator_id]
        if len(positions) != len(steps):
            raise ValueError(
                f"found {len(positions)} {self.separator!r} tokens for {len(steps)} steps: the problem or a step "
                f"contains the separator text {self.separator!r}"
            )
        return EncodedSolution(input_ids, positions, len(steps))

    @staticmethod
    def probabilities(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        outputs = model(input_ids=input_ids, attention_mask=attention_mask)
        logits = outputs.logits if hasattr(outputs, "logits") else outputs[0]
        return torch.softmax(logits.float(), dim=-1)[..., 1], None


class StepScorer:
    """Per-step probabilities of being correct, one forward pass per solution.

    Args:
        model: an `EnsemblePRMModel`, a 2-label token-classification PRM or a Qwen2.5-Math-PRM-style model.
        tokenizer: the model's tokenizer.
        separator: the step separator; by default the ensemble's own, ``"\\n"`` for token-classification
            PRMs (TRL's default) and ``"<extra_0>"`` for Qwen2.5-Math-PRM-style models.
        max_length: longest input in tokens; by default the smaller of the tokenizer's
            ``model_max_length`` and the model's ``max_position_embeddings``.
        kind: one of `MODEL_KINDS`; detected from the model's config when omitted.
        use_chat_template: ensembles only: the problem in a user turn and the steps in the assistant
            turn of the chat template; by default as the ensemble was trained (its config's).
        system_prompt: the system turn: for ensembles with a chat template, by default the one they were
            trained with; for Qwen2.5-Math-PRM-style models, by default theirs. Token-classification
            PRMs have none.

    Raises:
        ValueError: for a model of no supported kind, a tokenizer without the model's separator
            token, a token-classification model without exactly 2 labels, or a system prompt for a
            model that reads plain text.
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
    ):
        self.kind: ModelKind = kind or detect_model_kind(model.config.to_dict(), type(model).__name__)
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"unknown model kind {self.kind!r}; choose one of {', '.join(MODEL_KINDS)}")
        self.model, self.tokenizer = model.eval(), tokenizer
        if self.kind == "ensemble":
            self.separator = separator or model.config.separator
            use_chat_template = model.config.use_chat_template if use_chat_template is None else use_chat_template
            if system_prompt is None and use_chat_template:
                system_prompt = model.config.system_prompt
            self.format = _EnsembleFormat(model, tokenizer, self.separator, use_chat_template, system_prompt)
        elif self.kind == "token_classification":
            if system_prompt is not None or use_chat_template:
                raise ValueError("a token-classification PRM reads plain text: no chat template or system prompt")
            self.separator = TRL_STEP_SEPARATOR if separator is None else separator
            self.format = _TokenClassificationFormat(model, tokenizer, self.separator)
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
        **load_options: Any,
    ) -> StepScorer:
        """Load a PRM of any supported kind and its tokenizer from a folder or the Hub.

        The kind is read from ``config.json``. ``load_options`` (``dtype``, ``device_map``,
        ``attn_implementation``, ``revision``, ...) go to the model's ``from_pretrained``.

        Raises:
            FileNotFoundError: if ``name_or_path`` is neither a model folder nor a reachable Hub model.
            ValueError: for a Qwen2.5-Math-PRM-style model without ``trust_remote_code=True``, or a
                model of no supported kind.
        """
        hub_options = {key: load_options[key] for key in HUB_OPTIONS if key in load_options}
        try:
            config, _ = PreTrainedConfig.get_config_dict(name_or_path, **hub_options)
        except OSError as error:
            raise FileNotFoundError(f"{name_or_path}: no model folder or reachable Hub model ({error})") from None
        kind = detect_model_kind(config)
        if kind == "ensemble":
            model = EnsemblePRMModel.from_pretrained(name_or_path, **load_options)
        elif kind == "token_classification":
            model = AutoModelForTokenClassification.from_pretrained(
                name_or_path, trust_remote_code=trust_remote_code, **load_options
            )
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
