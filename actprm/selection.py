"""Which trajectories to label: the ActPRM rule and other acquisition strategies.

Per step, ``p`` is the mean over heads of P(step correct) and ``s`` the standard deviation over
heads (torch's default, unbiased). The predicted first error is the first step with ``p < 0.5``
(`first_error_from_scores`; `considered_steps` on a batch).
A trajectory is *confident* when every step up to and including that one (every step when none
is predicted wrong) has ``s <= std_threshold`` and ``p >= pred_threshold`` or
``p <= 1 - pred_threshold``. Confident trajectories are skipped; the rest are labelled and trained on.

`select` generalises the rule: a strategy scores each trajectory (`trajectory_scores`, one formula
per strategy in `STRATEGIES`), and a batch is selected by a threshold on that score or at a fixed
rate (the most uncertain ``k`` of each batch), with an optional epsilon-greedy random share and the
selection probability each trajectory had (for importance weighting).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .strategies import (
    DEFAULT_THRESHOLD,
    PER_HEAD_STRATEGIES,
    SINGLE_HEAD_STRATEGIES,
    STRATEGIES,
    check_budget,
    check_confidence_thresholds,
    check_strategy,
    check_threshold,
    first_error_from_scores,
)


__all__ = [
    "DEFAULT_THRESHOLD", "PER_HEAD_STRATEGIES", "SINGLE_HEAD_STRATEGIES", "STRATEGIES", "Acquisition", "Selection",
    "SelectionSettings", "acquire", "binary_entropy", "check_budget", "check_confidence_thresholds", "check_strategy",
    "check_threshold", "considered_steps", "ensemble_statistics", "first_error_from_scores", "pad_step_probabilities",
    "pad_step_statistics", "select", "select_confident", "step_uncertainty", "trajectory_scores",
]  # fmt: skip


@dataclass
class Selection:
    """Result of the rule for a batch of trajectories.

    Attributes:
        confident: ``[batch]`` bool, True for trajectories the ensemble is sure about.
        predicted_first_error: ``[batch]`` long, first step with mean probability below 0.5, -1 if none.
    """

    confident: torch.Tensor
    predicted_first_error: torch.Tensor


def ensemble_statistics(probabilities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) standard deviation over heads of ``[E, ...]`` probabilities."""
    return probabilities.mean(dim=0), probabilities.std(dim=0)


def considered_steps(mean: torch.Tensor, step_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(considered, predicted_first_error)``: the steps up to and including the first with mean < 0.5 (all
    real steps when none is), ``[batch, max_steps]`` bool, and that step's index (-1 when none), ``[batch]``:
    `first_error_from_scores` on a padded batch."""
    step_mask = step_mask.bool()
    num_steps = step_mask.shape[1]
    wrong = (mean < DEFAULT_THRESHOLD) & step_mask
    positions = torch.arange(num_steps, device=mean.device).expand_as(wrong)
    first_wrong = torch.where(wrong, positions, num_steps).min(dim=1).values
    considered = step_mask & (positions <= first_wrong.unsqueeze(1))
    return considered, torch.where(first_wrong == num_steps, -1, first_wrong)


def select_confident(
    mean: torch.Tensor,
    std: torch.Tensor,
    step_mask: torch.Tensor,
    *,
    pred_threshold: float = 0.9,
    std_threshold: float = 0.01,
) -> Selection:
    """Apply the rule to per-step statistics padded to ``[batch, max_steps]``.

    Args:
        mean: mean probability of each step being correct.
        std: standard deviation of that probability across heads.
        step_mask: True where a real step is (False on padding).
        pred_threshold: a step is decided when ``p >= pred_threshold`` or ``p <= 1 - pred_threshold``.
        std_threshold: and when the heads agree within this standard deviation.
    """
    considered, predicted_first_error = considered_steps(mean, step_mask)
    decided = (std <= std_threshold) & ((mean >= pred_threshold) | (mean <= 1 - pred_threshold))
    confident = (decided | ~considered).all(dim=1)
    return Selection(confident=confident, predicted_first_error=predicted_first_error)


def _step_mask(lengths: list[int], max_steps: int, device: torch.device) -> torch.Tensor:
    return torch.arange(max_steps, device=device) < torch.tensor(lengths, device=device).unsqueeze(1)


def pad_step_probabilities(per_row: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ragged per-row ``[E, steps]`` head probabilities into padded ``[E, batch, max_steps]`` and ``step_mask``."""
    heads = torch.nn.utils.rnn.pad_sequence([p.T for p in per_row], batch_first=True, padding_value=1.0)
    return heads.permute(2, 0, 1), _step_mask([p.shape[1] for p in per_row], heads.shape[1], heads.device)


def pad_step_statistics(
    per_row: list[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack ragged per-row ``(mean, std)`` step statistics into padded ``mean, std, step_mask``."""
    means = torch.nn.utils.rnn.pad_sequence([m for m, _ in per_row], batch_first=True, padding_value=1.0)
    stds = torch.nn.utils.rnn.pad_sequence([s for _, s in per_row], batch_first=True)
    return means, stds, _step_mask([len(m) for m, _ in per_row], means.shape[1], means.device)


# ----- acquisition strategies -----

@dataclass
class Acquisition:
    """Which trajectories of a batch a strategy selects, and with what probability.

    Attributes:
        selected: ``[batch]`` bool, True for trajectories to label and train on.
        probability: ``[batch]`` float, the probability each trajectory had of being selected: 1 for
            one the strategy itself picks, the random share's for the others. A selected
            trajectory's importance weight is its inverse.
        predicted_first_error: ``[batch]`` long, first step with mean probability below 0.5, -1 if none.
    """

    selected: torch.Tensor
    probability: torch.Tensor
    predicted_first_error: torch.Tensor


def binary_entropy(probability: torch.Tensor) -> torch.Tensor:
    """``-p log p - (1 - p) log(1 - p)`` in nats, 0 at ``p`` = 0 or 1."""
    p = probability.clamp(0, 1)
    return -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p))


def _ratio(value: torch.Tensor, limit: float) -> torch.Tensor:
    """``value / limit``, with a zero ``limit`` giving infinity for positive values and 0 for zero."""
    if limit > 0:
        return value / limit
    return torch.where(value > 0, torch.inf, 0.0)


def step_uncertainty(
    strategy: str,
    mean: torch.Tensor,
    std: torch.Tensor | None,
    heads: torch.Tensor | None = None,
    *,
    pred_threshold: float = 0.9,
    std_threshold: float = 0.01,
) -> torch.Tensor:
    """The per-step score a strategy aggregates, ``[batch, max_steps]``; see `trajectory_scores`."""
    family = strategy.rsplit("_", 1)[0]
    if family == "actprm":
        confidence = torch.maximum(mean, 1 - mean)
        return torch.maximum(_ratio(std, std_threshold), _ratio(1 - confidence, 1 - pred_threshold))
    if family == "disagreement":
        return std
    if family == "entropy":
        return binary_entropy(mean)
    if heads is None:
        raise ValueError(f"selection strategy {strategy!r} needs every head's probability, not only mean and spread")
    return binary_entropy(heads.mean(dim=0)) - binary_entropy(heads).mean(dim=0)


def trajectory_scores(
    strategy: str,
    mean: torch.Tensor,
    std: torch.Tensor | None,
    step_mask: torch.Tensor,
    heads: torch.Tensor | None = None,
    *,
    pred_threshold: float = 0.9,
    std_threshold: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""One uncertainty score per trajectory (higher: more worth labelling), and the predicted first error.

    With ``p_{e,t}`` head ``e``'s probability that step ``t`` is correct, ``\bar p_t`` their mean,
    ``s_t`` their unbiased standard deviation and ``H(p) = -p \log p - (1-p) \log(1-p)``, each
    strategy scores a step, and a trajectory by the steps ``t <= f`` up to and including the
    predicted first error ``f`` (the first ``\bar p_t < 0.5``; every step when there is none):

    - ``actprm``: ``max_t max(s_t / std_threshold, (1 - max(\bar p_t, 1 - \bar p_t)) / (1 - pred_threshold))``;
      above 1 exactly when `select_confident` finds the trajectory not confident.
    - ``disagreement_max`` / ``disagreement_mean``: ``max_t s_t`` / ``mean_t s_t``.
    - ``bald_max`` / ``bald_sum``: BALD, the mutual information between a step's label and the
      ensemble member, ``I_t = H(\bar p_t) - (1/E) \sum_e H(p_{e,t})``: ``max_t I_t`` / ``\sum_t I_t``.
    - ``entropy_max`` / ``entropy_sum``: predictive entropy ``H(\bar p_t)``: ``max_t`` / ``\sum_t``
      (the sum is the entropy of the labels up to ``f`` when the steps are independent).

    A trajectory without steps scores 0.

    Args:
        strategy: one of `STRATEGIES`.
        mean: ``[batch, max_steps]`` mean over heads of P(step correct).
        std: same shape, unbiased standard deviation over heads (unused by ``entropy_*``).
        step_mask: True where a real step is (False on padding).
        heads: ``[E, batch, max_steps]`` every head's probability; needed by ``bald_*`` only.
        pred_threshold, std_threshold: the ``actprm`` rule's thresholds.
    """
    considered, predicted_first_error = considered_steps(mean, step_mask)
    per_step = step_uncertainty(
        strategy, mean, std, heads, pred_threshold=pred_threshold, std_threshold=std_threshold
    ).masked_fill(~considered, 0.0)
    aggregate = strategy.rsplit("_", 1)[-1]
    if aggregate == "sum":
        score = per_step.sum(dim=1)
    elif aggregate == "mean":
        score = per_step.sum(dim=1) / considered.sum(dim=1).clamp(min=1)
    else:  # max, and the actprm rule
        score = per_step.max(dim=1).values if per_step.shape[1] else per_step.sum(dim=1)
    return score, predicted_first_error


def _floor(value: float) -> int:
    return math.floor(value + 1e-9)  # 0.6 * 10 is 5.999...: count it as 6


def _probability(picked: torch.Tensor, others: float) -> torch.Tensor:
    """1 where the strategy picked, ``others`` elsewhere, in float64 (its inverse is a loss weight)."""
    return torch.full(picked.shape, others, dtype=torch.float64, device=picked.device).masked_fill(picked, 1.0)


def acquire(
    score: torch.Tensor,
    *,
    threshold: float | None = None,
    rate: float | None = None,
    seen_before: int = 0,
    random_share: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(selected, probability)`` for one batch's trajectory scores: by threshold or at a fixed rate.

    - Threshold: the strategy picks every trajectory with ``score > threshold``; each other one is
      selected with probability ``random_share`` (epsilon-greedy).
    - Fixed rate ``r`` (the batch comes after ``seen_before`` trajectories): ``k = floor(r (n + B)) -
      floor(r n)`` are selected, so that exactly ``floor(r n)`` of the first ``n`` trajectories are.
      Of these, ``m = floor(random_share K') - floor(random_share K)`` (``K``, ``K'`` the selected
      counts before and after the batch) are drawn uniformly from the trajectories outside the
      ``k - m`` highest scores (ties in random order), which the strategy picks; each of those
      ``B - k + m`` trajectories thus has probability ``m / (B - k + m)``.

    A trajectory the strategy picks has probability 1; the importance weight of a selected one is
    ``1 / probability``.
    """
    if (threshold is None) == (rate is None):
        raise ValueError("give exactly one of threshold and rate")
    batch = score.shape[0]
    uniform = torch.rand(batch, generator=generator).to(score.device)
    if rate is None:
        picked = score > threshold
        return picked | (uniform < random_share), _probability(picked, random_share)
    before, after = _floor(rate * seen_before), _floor(rate * (seen_before + batch))
    quota = after - before
    explore = _floor(random_share * after) - _floor(random_share * before)
    order = sorted(range(batch), key=lambda i: (-float(score[i]), float(uniform[i])))
    picked = torch.zeros(batch, dtype=torch.bool, device=score.device)
    picked[order[: quota - explore]] = True
    rest = order[quota - explore :]
    selected = picked.clone()
    chosen = torch.randperm(len(rest), generator=generator)[:explore].tolist()
    selected[[rest[i] for i in chosen]] = True
    return selected, _probability(picked, explore / max(len(rest), 1))


def select(
    mean: torch.Tensor,
    std: torch.Tensor | None,
    step_mask: torch.Tensor,
    heads: torch.Tensor | None = None,
    *,
    strategy: str = "actprm",
    pred_threshold: float = 0.9,
    std_threshold: float = 0.01,
    uncertainty_threshold: float | None = None,
    rate: float | None = None,
    seen_before: int = 0,
    random_share: float = 0.0,
    generator: torch.Generator | None = None,
) -> Acquisition:
    """Select from one batch of trajectories with ``strategy``: by its threshold, or at a fixed ``rate``.

    Without ``rate``, ``actprm`` selects what `select_confident` finds not confident, and every other
    strategy selects the trajectories whose `trajectory_scores` exceed ``uncertainty_threshold``.
    With ``rate``, every strategy selects the most uncertain trajectories by its score (see `acquire`).
    ``random_share`` mixes in random trajectories (epsilon-greedy, see `acquire`).

    Args:
        mean, std, step_mask, heads: as for `trajectory_scores`.
        strategy: one of `STRATEGIES`.
        pred_threshold, std_threshold: the ``actprm`` rule's thresholds.
        uncertainty_threshold: the score above which a non-``actprm`` strategy selects (no ``rate``).
        rate: the share of trajectories to select, in (0, 1].
        seen_before: trajectories seen before this batch (fixed rate: the budget is exact over the run).
        random_share: share of the selections made at random, in [0, 1).
        generator: random numbers for ties and the random share.
    """
    check_strategy(strategy)
    score, predicted_first_error = trajectory_scores(
        strategy, mean, std, step_mask, heads, pred_threshold=pred_threshold, std_threshold=std_threshold
    )
    threshold = uncertainty_threshold
    if rate is None and strategy == "actprm":  # the rule itself, not its score (no rounding at the thresholds)
        confident = select_confident(mean, std, step_mask, pred_threshold=pred_threshold, std_threshold=std_threshold)
        score, threshold = (~confident.confident).float(), 0.5
    elif rate is None and threshold is None:
        raise ValueError(f"selection strategy {strategy!r} needs uncertainty_threshold or a fixed rate")
    selected, probability = acquire(
        score, threshold=threshold, rate=rate, seen_before=seen_before, random_share=random_share, generator=generator
    )
    return Acquisition(selected, probability, predicted_first_error)


@dataclass
class SelectionSettings:
    """A strategy and its options, as the trainer's config and ``actprm filter`` take them; see `select`.

    Raises a ValueError naming the option for an unknown strategy, a rate outside (0, 1], a random
    share outside [0, 1), importance weighting without a random share, or a missing or unused
    ``uncertainty_threshold``.

    Example:
        ```py
        >>> from actprm import SelectionSettings
        >>> settings = SelectionSettings("bald_max", uncertainty_threshold=0.05, random_share=0.1)
        >>> settings.strategy
        'bald_max'
        >>> SelectionSettings("bald_max")
        Traceback (most recent call last):
        ValueError: selection strategy 'bald_max' needs uncertainty_threshold (or selection_rate for a fixed rate)
        ```
    """

    strategy: str = "actprm"
    pred_threshold: float = 0.9
    std_threshold: float = 0.01
    uncertainty_threshold: float | None = None
    selection_rate: float | None = None
    random_share: float = 0.0
    importance_weighting: bool = False

    def __post_init__(self):
        check_strategy(self.strategy)
        check_confidence_thresholds(self.pred_threshold, self.std_threshold)
        check_budget(self.selection_rate, "selection_rate")
        if not 0 <= self.random_share < 1:
            raise ValueError(f"random_share must be in [0, 1), got {self.random_share}")
        if self.importance_weighting and self.random_share == 0:
            raise ValueError(
                "importance_weighting needs random_share > 0: otherwise every selected trajectory has "
                "probability 1 and the weights change nothing"
            )
        thresholded = self.selection_rate is None
        if thresholded and self.strategy != "actprm" and self.uncertainty_threshold is None:
            raise ValueError(
                f"selection strategy {self.strategy!r} needs uncertainty_threshold (or selection_rate for a fixed rate)"
            )
        if self.uncertainty_threshold is not None and (self.strategy == "actprm" or not thresholded):
            raise ValueError(
                "uncertainty_threshold applies to a strategy other than `actprm` without selection_rate; "
                "`actprm` uses pred_threshold and std_threshold"
            )

    def select(
        self,
        mean: torch.Tensor,
        std: torch.Tensor | None,
        step_mask: torch.Tensor,
        heads: torch.Tensor | None = None,
        *,
        seen_before: int = 0,
        generator: torch.Generator | None = None,
    ) -> Acquisition:
        """`select` with these settings."""
        return select(
            mean, std, step_mask, heads,
            strategy=self.strategy, pred_threshold=self.pred_threshold, std_threshold=self.std_threshold,
            uncertainty_threshold=self.uncertainty_threshold, rate=self.selection_rate, seen_before=seen_before,
            random_share=self.random_share, generator=generator,
        )  # fmt: skip
