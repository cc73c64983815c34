"""The `evaluate.MetricInfo` of the benchmark metrics' `evaluate` modules (``<name>_metric/<name>_metric.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import datasets
import evaluate


def metric_info(
    description: str, citation: str, inputs_description: str, features: Mapping[str, Any], *, paper: str, code: str
) -> evaluate.MetricInfo:
    """A metric's `evaluate.MetricInfo`: its card texts, input ``features``, and the benchmark's ``paper`` and ``code``."""
    return evaluate.MetricInfo(
        description=description,
        citation=citation,
        inputs_description=inputs_description,
        features=datasets.Features(features),
        reference_urls=[paper],
        codebase_urls=[code],
    )
