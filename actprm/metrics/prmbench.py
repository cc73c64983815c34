"""PRMBench (Song et al., 2025, arXiv:2501.03124): step-level validity F1, negative F1 and PRMScore.

Reproduces the official evaluation of the default task ``prmtest_classified`` in
https://github.com/ssmisya/PRMBench: ``evaluate_function`` and ``eval_on_hallucination_step`` in
``mr_eval/tasks/prmtest_classified/task.py`` (the confusion counts, F1 and negative F1) and
``get_prmscore_from_current_res_dict`` in ``mr_visualize/eval_res_view/draw_tabs/form_latex_strs.ipynb``
(the PRMScore of the leaderboard):

- Every step gets a validity label (1 valid, 0 invalid; a PRM's label is ``score > 0.5``, see
  `validity_labels`). The positive class is "valid": a valid-labelled step is a true positive when it
  is not among the sample's 1-based ``error_steps`` and a false positive when it is; an
  invalid-labelled step is a true negative on an error step and a false negative elsewhere.
- Only the steps that have a label count: the official loop runs over the predicted labels, so a
  shorter prediction leaves the remaining steps out, a longer one counts its extra steps as correct
  steps, and error steps beyond the prediction are ignored (100 PRMBench records list such steps).
- Counts are summed over the steps of all samples (micro), per classification and overall. The
  all-correct control samples (classification ``"correct"``, one per ``redundency`` record) count in
  their own classification only, never in the overall numbers.
- ``f1`` and ``negative_f1`` (F1 of the invalid class) use the official arithmetic, including its
  sentinel: a precision or recall with a zero denominator is -1, and an F1 whose precision and recall
  sum to 0 is -1. In effect F1 is the usual one when it has a true positive (negative) and otherwise 0
  or -1.
- ``prm_score`` is ``(f1 + negative_f1) / 2``, or ``f1`` alone where the counted steps hold no error
  step (officially ``multi_solutions``; here also the ``correct`` controls, which the official tables
  leave out), floored at 0 as the official tables do.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from ..strategies import check_threshold
from ._checks import as_int, check_same_length, is_list_like

CORRECT_CLASSIFICATION = "correct"
"""Classification of the all-correct control samples, kept out of the overall numbers."""

VALIDITY_THRESHOLD = 0.5
"""A step is valid when its score is strictly above this (the official ``validity_threshold``)."""


def validity_labels(scores: Sequence[float], threshold: float = VALIDITY_THRESHOLD) -> list[int]:
    """Per-step validity labels from step scores: 1 where ``score > threshold``, else 0.

    Raises:
        ValueError: if ``threshold`` is not strictly between 0 and 1.

    Example:
        ```py
        >>> from actprm.metrics import validity_labels
        >>> validity_labels([0.9, 0.3, 0.7], threshold=0.5)
        [1, 0, 1]
        ```
    """
    threshold = check_threshold(threshold)
    return [int(score > threshold) for score in scores]


def _checked_labels(predictions: Sequence[Sequence[int]]) -> list[list[int]]:
    checked = []
    for item, labels in enumerate(predictions):
        if not is_list_like(labels):
            raise ValueError(f"predictions[{item}] must be a list of per-step validity labels, got {labels!r}")
        checked.append([as_int(label) for label in labels])
        for step, (value, label) in enumerate(zip(checked[-1], labels)):
            if value not in (0, 1):
                raise ValueError(
                    f"predictions[{item}][{step}] = {label!r} is not a validity label (1 valid, 0 invalid); "
                    "turn step scores into labels with validity_labels(scores)"
                )
    return checked


def _checked_error_steps(references: Sequence[Sequence[int]]) -> list[set[int]]:
    checked = []
    for item, error_steps in enumerate(references):
        if not is_list_like(error_steps):
            raise ValueError(f"references[{item}] must be a list of 1-based error steps, got {error_steps!r}")
        steps = [as_int(step) for step in error_steps]
        if any(step is None or step < 1 for step in steps):
            raise ValueError(f"references[{item}] = {error_steps!r}: error steps are 1-based ints")
        checked.append({step - 1 for step in steps})
    return checked


def _confusion(labels: list[int], error_steps: set[int]) -> Counter:
    """Step-level counts of one sample with positive class "valid" (``eval_on_hallucination_step``)."""
    return Counter(
        ("fp" if step in error_steps else "tp") if label == 1 else ("tn" if step in error_steps else "fn")
        for step, label in enumerate(labels)
    )


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator != 0 else -1


def _official_f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall != 0 else -1


def _scores(counts: Counter) -> dict[str, float]:
    tp, fp, tn, fn = (counts[key] for key in ("tp", "fp", "tn", "fn"))
    f1 = _official_f1(_ratio(tp, tp + fp), _ratio(tp, tp + fn))
    negative_f1 = _official_f1(_ratio(tn, tn + fn), _ratio(tn, tn + fp))
    prm_score = f1 if tn + fp == 0 else (f1 + negative_f1) / 2
    return {"f1": float(f1), "negative_f1": float(negative_f1), "prm_score": float(max(prm_score, 0))}


def prmbench_scores(
    predictions: Sequence[Sequence[int]],
    references: Sequence[Sequence[int]],
    classifications: Sequence[str],
) -> dict:
    """PRMBench ``f1``, ``negative_f1`` and ``prm_score``, overall and per classification.

    Args:
        predictions: per sample, one validity label per step (1 valid, 0 invalid; booleans work).
        references: per sample, its 1-based ``error_steps`` (empty for an all-correct sample).
        classifications: per sample, its classification; ``"correct"`` for the all-correct controls.

    Returns:
        ``{"f1", "negative_f1", "prm_score", "per_classification": {name: {"f1", "negative_f1",
        "prm_score"}}}`` with the classifications in sorted order; see the module docstring.

    Raises:
        ValueError: if the lengths differ, or an item is malformed (naming the item and step).

    Example:
        ```py
        >>> from actprm.metrics import prmbench_scores
        >>> scores = prmbench_scores(predictions=[[1, 0], [1, 1]], references=[[2], []], classifications=["circular", "correct"])
        >>> scores["prm_score"]
        1.0
        ```
    """
    check_same_length(predictions=predictions, references=references, classifications=classifications)
    for item, classification in enumerate(classifications):
        if not isinstance(classification, str):
            raise ValueError(f"classifications[{item}] = {classification!r} is not a string")
    per_classification: dict[str, Counter] = {name: Counter() for name in sorted(set(classifications))}
    overall = Counter()
    for labels, error_steps, classification in zip(
        _checked_labels(predictions), _checked_error_steps(references), classifications
    ):
        counts = _confusion(labels, error_steps)
        per_classification[classification].update(counts)
        if classification != CORRECT_CLASSIFICATION:
            overall.update(counts)
    return {
        **_scores(overall),
        "per_classification": {name: _scores(counts) for name, counts in per_classification.items()},
    }
