"""The names of the selection strategies and the checks of their options (no torch: the CLI's help reads them).

Each strategy's formula is in `actprm.selection.trajectory_scores`.
"""

from __future__ import annotations

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
