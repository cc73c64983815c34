"""`AnnotationStore`: the labelled dataset the judges build, appended to as annotations arrive."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from datasets import Dataset, Value

from ..data.schema import FEATURES, StepDataError
from .base import Annotation

ANNOTATION_FEATURES = FEATURES.copy()
ANNOTATION_FEATURES.update(
    {
        "judge": Value("string"),
        "prompt_version": Value("string"),
        "tokens": Value("int64"),
        "raw_output": Value("string"),
        "annotated_at": Value("string"),
    }
)
"""The canonical schema plus judge metadata: identity, prompt version, tokens, raw output, UTC time."""


class AnnotationStore:
    """An append-only JSON Lines file of judged trajectories, one line per id.

    Appending an id already stored does nothing, so a resumed run can replay its last batch
    freely. Each append is flushed and synced before returning. A last line cut short by a crash is
    dropped when the file is opened again (a complete one that only lacks its newline is kept).
    One process writes a store at a time.

    Args:
        path: the ``.jsonl`` file, created with its folder if missing.

    Example:
        ```py
        >>> from actprm import AnnotationStore, OracleJudge, make_arithmetic_dataset
        >>> items = make_arithmetic_dataset(4).to_list()
        >>> store = AnnotationStore("labels/annotations.jsonl")
        >>> store.extend(items, OracleJudge().annotate(items))
        4
        >>> store.to_dataset().num_rows
        4
        ```
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        self._ids = {row["id"] for row in self.rows()}

    def rows(self) -> list[dict[str, Any]]:
        """The stored rows; repairs a last line cut short by a crash."""
        text = self.path.read_text(encoding="utf-8")
        lines = text.split("\n")
        if lines[-1]:  # no newline at the end: the last write may have been cut
            try:
                json.loads(lines[-1])
            except json.JSONDecodeError:
                with open(self.path, "r+b") as file:
                    file.truncate(len(text.encode("utf-8")) - len(lines[-1].encode("utf-8")))
                lines[-1] = ""
            else:
                with open(self.path, "a", encoding="utf-8") as file:
                    file.write("\n")
        rows = []
        for number, line in enumerate(lines[:-1] if not lines[-1] else lines, start=1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise StepDataError(
                    f"corrupt line: {error}", source=str(self.path), record=f"line {number}"
                ) from error
        return rows

    def append(self, item: Mapping[str, Any], annotation: Annotation) -> bool:
        """Append one annotated item; ``False`` if its id was already stored."""
        return self.extend([item], [annotation]) == 1

    def extend(self, items: Iterable[Mapping[str, Any]], annotations: Iterable[Annotation]) -> int:
        """Append annotated items (pairs in order) whose ids are new; returns how many were written."""
        rows = []
        now = datetime.now(timezone.utc).isoformat()
        for item, annotation in zip(items, annotations, strict=True):
            if not isinstance(annotation, Annotation):
                raise TypeError(
                    f"only annotations are stored, got {type(annotation).__name__} for item {item.get('id')!r}"
                )
            if "id" not in item:
                raise StepDataError(
                    "missing: the store is keyed by id", source=str(self.path), record="new", field="id"
                )
            rows.append(
                {
                    "id": str(item["id"]),
                    "problem": item["problem"],
                    "steps": list(item["steps"]),
                    "label": annotation.first_error,
                    "step_labels": annotation.step_labels,
                    "judge": annotation.judge,
                    "prompt_version": annotation.prompt_version,
                    "tokens": annotation.tokens,
                    "raw_output": annotation.raw_output,
                    "annotated_at": now,
                }
            )
        return self.extend_rows(rows)

    def extend_rows(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Append stored rows (e.g. another store's `rows`) whose ids are new; returns how many were written."""
        lines = []
        for row in rows:
            if row["id"] in self._ids:
                continue
            self._ids.add(row["id"])
            lines.append(json.dumps(dict(row), ensure_ascii=False) + "\n")
        if lines:
            with open(self.path, "a", encoding="utf-8") as file:
                file.write("".join(lines))
                file.flush()
                os.fsync(file.fileno())
        return len(lines)

    def __contains__(self, item_id: object) -> bool:
        return str(item_id) in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def to_dataset(self) -> Dataset:
        """The stored rows as a `datasets.Dataset` with `ANNOTATION_FEATURES` (ready for ``push_to_hub``)."""
        return Dataset.from_list(self.rows(), features=ANNOTATION_FEATURES)

    def __repr__(self) -> str:
        return f"AnnotationStore({str(self.path)!r}, rows={len(self)})"
