"""The ActPRM selection rule: which trajectories the ensemble is confident about.

Per step, ``p`` is the mean over heads of P(step correct) and ``s`` the standard deviation over
heads (torch's default, unbiased). The predicted first error is the first step with ``p < 0.5``.
A trajectory is *confident* when every step up to and including that one (every step when none
is predicted wrong) has ``s <= std_threshold`` and ``p >= pred_threshold`` or
``p <= 1 - pred_threshold``. Confident trajectories are skipped; the rest are labelled and trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
    step_mask = step_mask.bool()
    num_steps = step_mask.shape[1]
    wrong = (mean < 0.5) & step_mask
    positions = torch.arange(num_steps, device=mean.device).expand_as(wrong)
    first_wrong = torch.where(wrong, positions, num_steps).min(dim=1).values
    predicted_first_error = torch.where(first_wrong == num_steps, -1, first_wrong)

    decided = (std <= std_threshold) & ((mean >= pred_threshold) | (mean <= 1 - pred_threshold))
    considered = step_mask & (positions <= first_wrong.unsqueeze(1))
    confident = (decided | ~considered).all(dim=1)
    return Selection(confident=confident, predicted_first_error=predicted_first_error)


def pad_step_statistics(
    per_row: list[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack ragged per-row ``(mean, std)`` step statistics into padded ``mean, std, step_mask``."""
    means = torch.nn.utils.rnn.pad_sequence([m for m, _ in per_row], batch_first=True, padding_value=1.0)
    stds = torch.nn.utils.rnn.pad_sequence([s for _, s in per_row], batch_first=True)
    lengths = torch.tensor([len(m) for m, _ in per_row], device=means.device)
    step_mask = torch.arange(means.shape[1], device=means.device) < lengths.unsqueeze(1)
    return means, stds, step_mask
