"""How reports (``results.md``, model cards) show a metric: in percent, ``n/a`` where it has no value."""

from __future__ import annotations

import math


def is_defined(value: float | None) -> bool:
    """Whether a metric has a value: not missing, not NaN, not PRMBench's -1 sentinel for "not defined"."""
    return value is not None and not math.isnan(value) and value >= 0


def format_percent(value: float | None) -> str:
    """A fraction in percent with one decimal, or ``n/a`` for a metric without a value (see `is_defined`).

    Example:
        ```py
        >>> from actprm.metrics.formatting import format_percent
        >>> format_percent(0.8125), format_percent(float("nan")), format_percent(-1)
        ('81.2', 'n/a', 'n/a')
        ```
    """
    return f"{100 * value:.1f}" if is_defined(value) else "n/a"
