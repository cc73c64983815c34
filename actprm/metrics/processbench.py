"""ProcessBench (Zheng et al., 2024, arXiv:2412.06559): accuracy at finding the first wrong step.

Each solution is scored by the index of its earliest erroneous step (``-1``: every step correct).
The definitions follow the official evaluation scripts, ``code/run_eval_prm_trl.py`` and
``code/run_eval_prm_rlhflow.py`` in https://github.com/QwenLM/ProcessBench:

- ``error_acc``: share of the solutions with an error (reference ``!= -1``) whose predicted index
  equals the reference; ``correct_acc``: the same over the all-correct solutions (reference ``-1``);
- ``f1``: their harmonic mean, ``2 * error_acc * correct_acc / (error_acc + correct_acc)``;
- the benchmark's "Average F1" is the plain mean of the four subsets' F1 (`average_over_subsets`).

Edge cases as in the official code (NumPy means): an accuracy over no solutions is NaN, and F1 is
NaN when either accuracy is NaN or both are 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..constants import IGNORE_INDEX
from ..strategies import DEFAULT_THRESHOLD, first_error_from_scores
from ._checks import as_int, check_same_length

if TYPE_CHECKING:
    from transformers import EvalPrediction

DEFAULT_CANDIDATES = tuple(round(0.01 * i, 2) for i in range(1, 100))
"""Thresholds `calibrate_threshold` tries by default: 0.01, 0.02, ..., 0.99."""

__all__ = [
    "DEFAULT_CANDIDATES",
    "DEFAULT_THRESHOLD",
    "average_over_subsets",
    "calibrate_threshold",
    "first_error_from_scores",
    "processbench_metrics",
    "processbench_scores",
]


def _first_error_indices(values: Sequence[int | None], name: str, allow_none: bool = False) -> list[int | None]:
    indices = [as_int(value) for value in values]
    for item, (index, value) in enumerate(zip(indices, values)):
        if value is None and allow_none:
            continue
        if index is None or index < -1:
            raise ValueError(f"{name}[{item}] = {value!r} is not a first-error index (an int >= -1)")
    return indices


def _harmonic_mean(a: float, b: float) -> float:
    return 2 * a * b / (a + b) if a + b > 0 else math.nan


def processbench_scores(predictions: Sequence[int | None], references: Sequence[int]) -> dict[str, float]:
    """``error_acc``, ``correct_acc`` and ``f1`` (fractions in [0, 1]) of first-error predictions.

    Args:
        predictions: predicted first-error index per solution, ``-1`` for "no error", ``None`` for no
            answer (a critic's unparseable output), which matches no reference, as in ``run_eval.py``.
        references: the benchmark's ``label`` per solution, in the same order.

    Raises:
        ValueError: if the lengths differ, or an item is not an int >= -1 (naming the item).

    Example:
        ```py
        >>> from actprm.metrics import processbench_scores
        >>> processbench_scores(predictions=[1, -1, None], references=[1, -1, -1])  # None: no answer
        {'error_acc': 1.0, 'correct_acc': 0.5, 'f1': 0.6666666666666666}
        ```
    """
    check_same_length(predictions=predictions, references=references)
    predictions = _first_error_indices(predictions, "predictions", allow_none=True)
    references = _first_error_indices(references, "references")
    error_matches = [p == r for p, r in zip(predictions, references) if r != -1]
    correct_matches = [p == r for p, r in zip(predictions, references) if r == -1]
    error_acc = sum(error_matches) / len(error_matches) if error_matches else math.nan
    correct_acc = sum(correct_matches) / len(correct_matches) if correct_matches else math.nan
    return {"error_acc": error_acc, "correct_acc": correct_acc, "f1": _harmonic_mean(error_acc, correct_acc)}


def processbench_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """`processbench_scores` of a `transformers.Trainer` evaluation: the `compute_metrics` of `ActivePRMTrainer`.

    ``prediction.predictions`` holds the mean probability over heads at every position and
    ``prediction.label_ids`` the step labels at the separators (``-100`` elsewhere). On each row's
    labelled positions, `first_error_from_scores` gives the reference (from the 0/1 labels) and the
    prediction (from the probabilities): a prediction is right when the first step below 0.5 is the
    labelled first error.

    Example:
        ```py
        >>> import numpy as np
        >>> from transformers import EvalPrediction
        >>> from actprm.metrics import processbench_metrics
        >>> probabilities = np.array([[0.0, 0.9, 0.0, 0.3], [0.0, 0.8, 0.0, 0.7]])
        >>> labels = np.array([[-100, 1, -100, 0], [-100, 1, -100, 1]])
        >>> processbench_metrics(EvalPrediction(predictions=probabilities, label_ids=labels))
        {'error_acc': 1.0, 'correct_acc': 1.0, 'f1': 1.0}
        ```
    """
    predicted, references = [], []
    for row_probs, row_labels in zip(np.asarray(prediction.predictions), np.asarray(prediction.label_ids)):
        labelled = row_labels != IGNORE_INDEX
        references.append(first_error_from_scores(row_labels[labelled].tolist()))
        predicted.append(first_error_from_scores(row_probs[labelled].tolist()))
    return processbench_scores(predicted, references)


def average_over_subsets(
    per_subset: Mapping[str, Mapping[str, float]], weights: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Mean of every metric over subsets: plain (the paper's average) or weighted, e.g. by subset size.

    Args:
        per_subset: subset name -> metrics, e.g. ``{"gsm8k": processbench_scores(...), ...}``.
        weights: subset name -> weight (such as its number of solutions); ``None`` for the plain mean.

    Raises:
        ValueError: if there is no subset, the subsets report different metrics, or a weight is missing.

    Example:
        ```py
        >>> from actprm.metrics import average_over_subsets
        >>> per_subset = {"gsm8k": {"f1": 0.8}, "math": {"f1": 0.6}}
        >>> average_over_subsets(per_subset)["f1"], average_over_subsets(per_subset, weights={"gsm8k": 3, "math": 1})["f1"]
        (0.7, 0.75...)
        ```
    """
    if not per_subset:
        raise ValueError("no subset to average over")
    subsets = list(per_subset)
    metric_names = list(per_subset[subsets[0]])
    for subset in subsets:
        if sorted(per_subset[subset]) != sorted(metric_names):
            raise ValueError(
                f"subset {subset!r} reports {sorted(per_subset[subset])}, {subsets[0]!r} {sorted(metric_names)}"
            )
    if weights is not None:
        missing = [subset for subset in subsets if subset not in weights]
        if missing:
            raise ValueError(f"no weight for subsets {missing}")
    subset_weights = None if weights is None else [weights[subset] for subset in subsets]
    return {
        name: float(np.average([per_subset[subset][name] for subset in subsets], weights=subset_weights))
        for name in metric_names
    }


def calibrate_threshold(
    step_scores_list: Sequence[Sequence[float]],
    references: Sequence[int],
    candidates: Sequence[float] | None = None,
) -> tuple[float, float]:
    """The candidate threshold with the best ProcessBench F1, and that F1.

    The benchmark's protocol for scalar PRMs: calibrate on GSM8K, then apply the threshold to every
    subset. Ties go to the earliest candidate; thresholds where F1 is NaN are never picked.

    Args:
        step_scores_list: per solution, the per-step probabilities of being correct.
        references: the benchmark's first-error ``label`` per solution.
        candidates: thresholds to try, each in (0, 1); `DEFAULT_CANDIDATES` if ``None``.

    Raises:
        ValueError: if the lengths differ, a reference is not a step of its solution, or F1 is NaN at
            every candidate (the solutions must include both erroneous and all-correct ones).

    Example:
        ```py
        >>> from actprm.metrics import calibrate_threshold
        >>> calibrate_threshold([[0.9, 0.2], [0.9, 0.8]], references=[1, -1], candidates=[0.1, 0.5])
        (0.5, 1.0)
        ```
    """
    check_same_length(step_scores_list=step_scores_list, references=references)
    references = _first_error_indices(references, "references")
    for item, (scores, reference) in enumerate(zip(step_scores_list, references)):
        if reference >= len(scores):
            raise ValueError(f"references[{item}] = {reference} but solution {item} has {len(scores)} step scores")
    candidates = DEFAULT_CANDIDATES if candidates is None else candidates
    if len(candidates) == 0:
        raise ValueError("no candidate threshold to try")
    best_threshold, best_f1 = None, -math.inf
    for threshold in candidates:
        predictions = [first_error_from_scores(scores, threshold) for scores in step_scores_list]
        f1 = processbench_scores(predictions, references)["f1"]
        if f1 > best_f1:
            best_threshold, best_f1 = float(threshold), f1
    if best_threshold is None:
        raise ValueError(
            "F1 is undefined at every candidate threshold: calibration needs solutions with an error "
            "and all-correct solutions"
        )
    return best_threshold, best_f1
