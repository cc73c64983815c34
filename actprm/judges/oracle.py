"""`OracleJudge`: the dataset's own labels, for simulated annotation with honest cost accounting."""

from __future__ import annotations

import os
from typing import Any, Sequence

from .base import Emit, Judge


class OracleJudge(Judge):
    """Answers with each item's ``label`` / ``step_labels``, as a perfect annotator would.

    Every answer is counted as a request costing ``tokens_per_step`` per step, so budgets and
    cost curves work as with a real judge. An item without a label becomes a `JudgeFailure`.

    Example:
        ```py
        >>> from actprm import OracleJudge, make_arithmetic_dataset
        >>> items = make_arithmetic_dataset(3).to_list()
        >>> [annotation.first_error for annotation in OracleJudge().annotate(items)] == [item["label"] for item in items]
        True
        ```
    """

    def __init__(self, *, tokens_per_step: int = 1, cache_path: str | os.PathLike | None = None):
        super().__init__(cache_path=cache_path)
        self.tokens_per_step = tokens_per_step

    @property
    def identity(self) -> str:
        return "oracle"

    def _annotate(self, items: Sequence[dict[str, Any]], emit: Emit) -> None:
        for position, item in enumerate(items):
            self.stats.add(requests=1)
            tokens = self.tokens_per_step * len(item["steps"])
            if item["label"] is None:
                emit(position, self._failure(f"item {item['id']!r} has no label", tokens=tokens))
            else:
                annotation = self._annotation(
                    item, item["label"], tokens=tokens, raw_output="", step_labels=item["step_labels"]
                )
                emit(position, annotation)
