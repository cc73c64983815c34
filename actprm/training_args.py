"""`ActivePRMConfig`: training arguments of `ActivePRMTrainer`, in the style of TRL's configs."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from transformers import TrainingArguments

from .selection import SelectionSettings
from .training_options import PARAMETER_GROUPS, ActivePRMOptions, parameters_section


@dataclass
class ActivePRMConfig(ActivePRMOptions, TrainingArguments):
    r"""Configuration of [`ActivePRMTrainer`].

    Its own fields, specific to active PRM training, are those of [`ActivePRMOptions`]; every other field is a
    [`~transformers.TrainingArguments`] field. Defaults may differ from `TrainingArguments`
    (`remove_unused_columns=False`: the trainer needs each row's index). Parse it from the command
    line with [`~transformers.HfArgumentParser`]: dict fields take a JSON string there, and
    ``--resume_from_checkpoint true`` resumes from the last complete checkpoint in `output_dir`.

    Pickled (as in every checkpoint's ``training_args.bin``), it leaves `hub_token` out.

    Example:
        ```py
        >>> from actprm import ActivePRMConfig
        >>> args = ActivePRMConfig(output_dir="prm", num_ensemble=8, max_annotations=1000, judge_batch_size=32)
        >>> args.selection_settings.strategy
        'actprm'
        ```
    """

    _VALID_DICT_FIELDS = TrainingArguments._VALID_DICT_FIELDS + ["model_init_kwargs"]

    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the trainer tracks each row by its index."}
    )

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.resume_from_checkpoint, str) and self.resume_from_checkpoint.lower() in ("true", "1", "yes"):
            self.resume_from_checkpoint = True  # `ActivePRMTrainer.train` finds the last complete checkpoint
        self.selection_settings  # noqa: B018 -- validates the selection options
        if not 0 < self.random_selection_rate <= 1:
            raise ValueError(f"random_selection_rate must be in (0, 1], got {self.random_selection_rate}")
        for budget in ("max_annotations", "max_judge_tokens"):
            if getattr(self, budget) is not None and getattr(self, budget) < 1:
                raise ValueError(f"{budget} must be >= 1 (or unset: no budget), got {getattr(self, budget)}")
        if self.judge_batch_size < 1:
            raise ValueError(f"judge_batch_size must be >= 1, got {self.judge_batch_size}")
        if self.max_judge_batches_in_flight < 0:
            raise ValueError(f"max_judge_batches_in_flight must be >= 0, got {self.max_judge_batches_in_flight}")
        if self.judge_item_attempts < 1:
            raise ValueError(f"judge_item_attempts must be >= 1, got {self.judge_item_attempts}")

    @property
    def selection_settings(self) -> SelectionSettings:
        """The strategy and its options (validated: a bad one raises a ValueError naming it)."""
        return SelectionSettings(
            self.selection_strategy, self.pred_threshold, self.std_threshold, self.uncertainty_threshold,
            self.selection_rate, self.random_share, self.importance_weighting,
        )  # fmt: skip

    def __getstate__(self) -> dict[str, Any]:
        """The fields without `hub_token`: a pickled config (``training_args.bin``) never holds a secret."""
        return {**self.__dict__, "hub_token": None}


ActivePRMConfig.__doc__ += "\n" + parameters_section(
    [*fields(ActivePRMOptions), ActivePRMConfig.__dataclass_fields__["remove_unused_columns"]],
    {**PARAMETER_GROUPS, "remove_unused_columns": "Parameters whose default differs from `TrainingArguments`"},
) + "\n"
