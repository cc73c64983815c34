"""Benchmark metrics: ProcessBench and PRMBench as plain functions and as `evaluate` modules.

The plain functions need neither `evaluate` nor a network. The `evaluate` modules live beside them
as ``<name>_metric/<name>_metric.py`` with a README card each, loadable by path with
``evaluate.load`` or by name with `load_metric`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..strategies import check_threshold
from .prmbench import CORRECT_CLASSIFICATION, VALIDITY_THRESHOLD, prmbench_scores, validity_labels
from .processbench import (
    DEFAULT_CANDIDATES,
    DEFAULT_THRESHOLD,
    average_over_subsets,
    calibrate_threshold,
    first_error_from_scores,
    processbench_metrics,
    processbench_scores,
)

if TYPE_CHECKING:
    import evaluate

METRIC_NAMES = ("processbench", "prmbench")


def load_metric(name: Literal["processbench", "prmbench"], **kwargs: Any) -> evaluate.EvaluationModule:
    """Load a benchmark's `evaluate` module from this package; ``kwargs`` go to `evaluate.load`.

    Raises:
        ValueError: if ``name`` is not one of `METRIC_NAMES`.

    Example:
        ```py
        >>> from actprm import load_metric
        >>> processbench = load_metric("processbench")
        >>> processbench.compute(predictions=[1, -1], references=[1, 2])
        {'error_acc': 0.5, 'correct_acc': nan, 'f1': nan}
        ```
    """
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; choose one of {', '.join(METRIC_NAMES)}")
    import evaluate

    return evaluate.load(str(Path(__file__).parent / f"{name}_metric"), **kwargs)


__all__ = [
    "check_threshold",
    "CORRECT_CLASSIFICATION",
    "DEFAULT_CANDIDATES",
    "DEFAULT_THRESHOLD",
    "METRIC_NAMES",
    "VALIDITY_THRESHOLD",
    "average_over_subsets",
    "calibrate_threshold",
    "first_error_from_scores",
    "load_metric",
    "prmbench_scores",
    "processbench_metrics",
    "processbench_scores",
    "validity_labels",
]
