"""`ActivePRMOptions`: the options of active PRM training that `ActivePRMConfig` adds to transformers'
`TrainingArguments`, in a dataclass of their own that loads neither torch nor transformers (so that
``actprm train --help`` answers at once)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Literal

from .constants import DEFAULT_SEPARATOR
from .strategies import STRATEGIES

PARAMETER_GROUPS = {
    "model_init_kwargs": "Parameters that control the model",
    "max_length": "Parameters that control the data",
    "selection": "Parameters that control active learning",
}
"""The first `ActivePRMOptions` field of each group of the ``Parameters:`` section, with the group's heading."""


def parameters_section(config_fields: Iterable[Field], groups: Mapping[str, str]) -> str:
    """The ``Parameters:`` section of a config's docstring as TRL's configs write it, made from the fields' help so
    that the two cannot drift apart; ``groups`` maps the first field of each group to its heading."""
    lines = ["Parameters:"]
    for item in config_fields:
        if item.name in groups:
            lines += [""] * (len(lines) > 1) + [f"    > {groups[item.name]}", ""]
        default = item.default_factory() if item.default is MISSING else item.default
        shown = f'"{default}"' if isinstance(default, str) else f"{default}"
        kind = str(item.type).removesuffix(" | None")
        lines.append(f"    {item.name} (`{kind}`, *optional*{'' if default is None else f', defaults to `{shown}`'}):")
        lines += textwrap.wrap(item.metadata["help"], 110, initial_indent=" " * 8, subsequent_indent=" " * 8)
    return textwrap.indent("\n".join(lines), "    ")


@dataclass
class ActivePRMOptions:
    """The fields [`ActivePRMConfig`] adds to [`~transformers.TrainingArguments`], each with its help; validated
    by `ActivePRMConfig`."""

    # Model, used when `model` is given to the trainer as a name or path
    model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Keyword arguments for the backbone's `from_pretrained` when `model` is a name or path "
                  "(a JSON string on the command line, e.g. '{\"dtype\": \"bfloat16\"}')."},
    )
    num_ensemble: int = field(default=8, metadata={"help": "Number of heads E in the ensemble."})
    head_hidden_size: int = field(default=128, metadata={"help": "Hidden width of each head's two hidden layers."})
    learning_probability: float = field(
        default=1.0,
        metadata={"help": "Probability that a head trains on a given trajectory of a batch (bootstrap of the batch)."},
    )
    regularization_lambda: float = field(
        default=0.5,
        metadata={"help": "Weight of the L2 term anchoring each head to a frozen copy of its initial weights."},
    )
    hidden_layer: int | None = field(
        default=None,
        metadata={"help": "Backbone hidden state the heads read: an index into its `hidden_states` (0 the embeddings, "
                  "-1 the last layer). Unset: the model's own (the last for new heads)."},
    )
    step_features_dir: str | None = field(
        default=None,
        metadata={"help": "Train the heads only, on a frozen backbone: its hidden states at the step separators are "
                  "computed once into this folder (`actprm.features`, reused when there) and the heads train on them."},
    )
    separator: str = field(
        default=DEFAULT_SEPARATOR,
        metadata={"help": "Token placed after every step; added to the tokenizer when it lacks it."},
    )

    # Data
    max_length: int | None = field(
        default=2048,
        metadata={"help": "Longest tokenised solution; whole trailing steps beyond it are dropped and counted."},
    )
    label_mode: Literal["first_error", "per_step"] = field(
        default="first_error",
        metadata={
            "help": "`first_error`: steps before the first error are good, the first error is wrong, later steps "
            "are unlabelled (ProcessBench). `per_step`: the dataset's `step_labels` as given.",
            "choices": ["first_error", "per_step"],
        },
    )
    use_chat_template: bool = field(
        default=False,
        metadata={"help": "Put the problem in a user turn and the steps in the assistant turn of the chat template."},
    )
    system_prompt: str | None = field(
        default=None,
        metadata={"help": "With `use_chat_template`, a system turn before the problem (default: the template's own)."},
    )

    # Active learning
    selection: Literal["uncertainty", "random", "all"] = field(
        default="uncertainty",
        metadata={
            "help": "`uncertainty`: the ActPRM rule; `random`: each trajectory with probability "
            "`random_selection_rate`; `all`: every trajectory (full annotation).",
            "choices": ["uncertainty", "random", "all"],
        },
    )
    selection_strategy: str = field(
        default="actprm",
        metadata={
            "help": "With `selection='uncertainty'`, how trajectories are scored (formulas in "
            "`actprm.selection.trajectory_scores`): `actprm` (the paper's rule), `disagreement_max`/`_mean` (largest or "
            "mean spread over heads), `bald_max`/`_sum` (mutual information between a step's label and the head), "
            "`entropy_max`/`_sum` (predictive entropy), each over the steps up to the predicted first error.",
            "choices": list(STRATEGIES),
        },
    )
    selection_rate: float | None = field(
        default=None,
        metadata={
            "help": "Fixed-rate selection: the most uncertain share of each batch (in (0, 1], exact over the run) "
            "instead of a threshold."
        },
    )
    uncertainty_threshold: float | None = field(
        default=None,
        metadata={"help": "Without `selection_rate`, a non-`actprm` strategy selects trajectories scoring above this."},
    )
    random_share: float = field(
        default=0.0,
        metadata={
            "help": "Epsilon-greedy: with a threshold, each trajectory the strategy skips is selected with this "
            "probability; at a fixed rate, this share of the selections is drawn at random from the rest."
        },
    )
    importance_weighting: bool = field(
        default=False,
        metadata={
            "help": "Weigh each selected trajectory's loss by the inverse of its selection probability (importance-"
            "weighted active learning; needs `random_share` > 0)."
        },
    )
    random_selection_rate: float = field(
        default=0.5, metadata={"help": "Fraction of trajectories selected when `selection='random'`."}
    )
    pred_threshold: float = field(
        default=0.9,
        metadata={"help": "A step is decided when its mean probability is >= this or <= 1 - this."},
    )
    std_threshold: float = field(
        default=0.01,
        metadata={"help": "A step is decided only when the heads' standard deviation is <= this."},
    )
    active_warmup_steps: int = field(
        default=0,
        metadata={"help": "Number of first training steps that select every trajectory, before the rule applies."},
    )
    max_annotations: int | None = field(
        default=None,
        metadata={
            "help": "Budget: training stops once this many distinct trajectories have been annotated (one selected "
            "again in a later epoch trains on its labels without counting again)."
        },
    )
    max_judge_tokens: int | None = field(
        default=None,
        metadata={"help": "Budget: training stops once the judge has spent this many tokens."},
    )
    judge_batch_size: int = field(
        default=16, metadata={"help": "Number of trajectories sent to the judge together."}
    )
    max_judge_batches_in_flight: int = field(
        default=4,
        metadata={
            "help": "Online mode: judge batches sent in the background while training goes on from the buffer; "
            "sending one more waits for the oldest. `0` waits for every batch where it is sent (synchronous, for "
            "debugging). Each batch in flight makes up to the judge's own concurrency in requests."
        },
    )
    judge_item_attempts: int = field(
        default=3,
        metadata={"help": "Judge batches a trajectory whose requests keep failing (while the judge answers others) "
                  "is sent in before it is skipped and recorded; a judge that answers nothing stops the run instead."},
    )
    annotations_path: str | None = field(
        default=None,
        metadata={"help": "Labelled dataset (jsonl) every annotation is appended to; `<output_dir>/annotations.jsonl` "
                  "when unset."},
    )
    judge_cache_path: str | None = field(
        default=None,
        metadata={"help": "Persistent judge cache (sqlite); `<output_dir>/judge_cache.sqlite` when unset."},
    )
    push_judge_data: bool = field(
        default=False,
        metadata={"help": "With `push_to_hub`, let the checkpoint pushes upload the judge's data too: the annotations "
                  "and judge cache in `output_dir` and the checkpoints' active-learning state (labels waiting to be "
                  "trained on; needed to resume from a pushed checkpoint). Off: they stay local; push the labels "
                  "as a dataset with `actprm push --dataset`."},
    )


ActivePRMOptions.__doc__ += "\n\n" + parameters_section(fields(ActivePRMOptions), PARAMETER_GROUPS) + "\n"
