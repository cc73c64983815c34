"""The selection rule's torch-free part: the strategies' names, the predicted first error and the option checks.

No torch here: the CLI's help, the configs and the metrics read them. `actprm.selection` re-exports every
name and applies the rule to batches of tensors; each strategy's formula is in
`actprm.selection.trajectory_scores`.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

DEFAULT_THRESHOLD = 0.5
"""Step score below which a step counts as wrong (Qwen2.5-Math-PRM and ActPRM use 0.5)."""

STRATEGIES = (
    "actprm", "disagreement_max", "disagreement_mean", "bald_max", "bald_sum", "entropy_max", "entropy_sum",
)  # fmt: skip
"""Names of the acquisition strategies; see `trajectory_scores` for each one's formula."""

SINGLE_HEAD_STRATEGIES = ("entropy_max", "entropy_sum")
"""Strategies that read only the heads' mean, so that a model with one head can use them."""

PER_HEAD_STRATEGIES = ("bald_max", "bald_sum")
"""Strategies that need every head's probability, not only the mean and spread over heads."""


def check_strategy(strategy: str, *, option: str = "selection_strategy", num_heads: int | None = None) -> None:
    """Raise a ValueError naming ``option`` for an unknown strategy, or one needing an ensemble on ``num_heads`` < 2."""
    if strategy not in STRATEGIES:
        raise ValueError(f"{option}={strategy!r} is not a selection strategy; choose one of {', '.join(STRATEGIES)}")
    if num_heads is not None and num_heads < 2 and strategy not in SINGLE_HEAD_STRATEGIES:
        raise ValueError(
            f"{option}={strategy!r} reads the heads' disagreement and needs an ensemble of at least 2 heads; "
            f"the model has {num_heads}: use one of {', '.join(SINGLE_HEAD_STRATEGIES)} or more heads"
        )


def check_budget(value: float | None, option: str) -> None:
    """Raise a ValueError naming ``option`` unless ``value`` is None or in (0, 1]."""
    if value is not None and not 0 < value <= 1:
        raise ValueError(f"{option} must be in (0, 1], got {value}")


def check_threshold(threshold: float) -> float:
    """Return ``threshold`` as a float, or raise unless it lies strictly between 0 and 1.

    Example:
        ```py
        >>> from actprm.metrics import check_threshold
        >>> check_threshold(0.5)
        0.5
        ```
    """
    if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, numbers.Real):
        raise ValueError(f"threshold must be a number in (0, 1), got {threshold!r}")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
    return float(threshold)


def first_error_from_scores(scores: Sequence[float], threshold: float = DEFAULT_THRESHOLD) -> int:
    """Predicted first error: the index of the first step scored strictly below ``threshold``, else -1.

    This is ActPRM's ``predict_with_threshold`` (sail-sg/ActivePRM, ``eval/processbench.py``); a
    score equal to the threshold counts as correct. On 0/1 step labels it gives the labelled first error.
    `actprm.selection.considered_steps` applies the same rule to a padded batch of tensors.

    Raises:
        ValueError: if ``threshold`` is not strictly between 0 and 1.

    Example:
        ```py
        >>> from actprm.selection import first_error_from_scores
        >>> first_error_from_scores([0.9, 0.7, 0.2, 0.8])
        2
        >>> first_error_from_scores([1, 1, 1])
        -1
        ```
    """
    threshold = check_threshold(threshold)
    return next((index for index, score in enumerate(scores) if score < threshold), -1)


def check_confidence_thresholds(pred_threshold: float, std_threshold: float, *, flag: str = "") -> None:
    """Raise a ValueError naming the option (``flag`` its prefix, e.g. ``--``) unless ``pred_threshold`` is in
    (0.5, 1] and ``std_threshold`` >= 0: the confidence rule's thresholds (`actprm.selection.select_confident`)."""
    if not 0.5 < pred_threshold <= 1:
        raise ValueError(f"{flag}pred_threshold must be in (0.5, 1], got {pred_threshold}")
    if std_threshold < 0:
        raise ValueError(f"{flag}std_threshold must be >= 0, got {std_threshold}")
