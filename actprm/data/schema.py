"""The canonical step-data schema every loader produces and every consumer reads.

A record is ``{"id": str, "problem": str, "steps": list[str], "label": int | None,
"step_labels": list[int | None] | None}``:

- ``label`` follows ProcessBench: the 0-based index of the first wrong step, ``-1`` when every
  step is correct, ``None`` when the trajectory is unlabelled.
- ``step_labels`` holds one entry per step: ``1`` good, ``0`` wrong, ``None`` unknown or neutral.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from datasets import Features, List, Value

FEATURES = Features(
    {
        "id": Value("string"),
        "problem": Value("string"),
        "steps": List(Value("string")),
        "label": Value("int64"),
        "step_labels": List(Value("int64")),
    }
)
"""`datasets.Features` of the canonical schema; loaders may add extra columns after these."""

CANONICAL_COLUMNS = tuple(FEATURES)


class StepDataError(ValueError):
    """A record that does not fit the schema. Names the file, the record and the field."""

    def __init__(self, message: str, *, source: str, record: int | str, field: str | None = None):
        self.source, self.record, self.field = source, record, field
        where = f"{source}, record {record}" + (f", field {field!r}" if field else "")
        super().__init__(f"{where}: {message}")


def first_error_from_step_labels(step_labels: Iterable[int | None]) -> int | None:
    """ProcessBench ``label`` from per-step labels: index of the first ``0``, else ``-1``.

    ``None`` entries (neutral or unknown) do not count as errors, as in PRM800K; a list with no
    known entry at all gives ``None`` (unlabelled).
    """
    step_labels = list(step_labels)
    if 0 in step_labels:
        return step_labels.index(0)
    return -1 if 1 in step_labels else None


def step_labels_from_label(label: int | None, num_steps: int) -> list[int | None]:
    """Per-step labels implied by a first-error ``label``: good before it, wrong at it, unknown after."""
    if label is None:
        return [None] * num_steps
    if label == -1:
        return [1] * num_steps
    return [1] * label + [0] + [None] * (num_steps - label - 1)


def validate_record(record: Mapping[str, Any], *, source: str, index: int | str) -> dict[str, Any]:
    """Check one record against the schema and return it normalised (label types, step_labels).

    Raises:
        StepDataError: naming ``source``, ``index`` and the offending field.
    """

    def fail(field: str, message: str) -> StepDataError:
        return StepDataError(message, source=source, record=index, field=field)

    for field in ("problem", "steps"):
        if field not in record:
            raise fail(field, "missing")
    problem, steps = record["problem"], record["steps"]
    if not isinstance(problem, str):
        raise fail("problem", f"expected a string, got {type(problem).__name__}")
    if not isinstance(steps, (list, tuple)) or not all(isinstance(s, str) for s in steps):
        raise fail("steps", "expected a list of strings")
    num_steps = len(steps)

    label = record.get("label")
    if label is not None:
        if isinstance(label, bool) or not isinstance(label, int):
            raise fail("label", f"expected an int or None, got {label!r}")
        if not -1 <= label < num_steps:
            raise fail("label", f"{label} is outside [-1, {num_steps - 1}] for {num_steps} steps")

    step_labels = record.get("step_labels")
    if step_labels is not None:
        if not isinstance(step_labels, (list, tuple)) or len(step_labels) != num_steps:
            raise fail("step_labels", f"expected a list of {num_steps} entries")
        if any(v not in (0, 1, None) or isinstance(v, float) for v in step_labels):
            raise fail("step_labels", f"entries must be 1, 0 or None, got {list(step_labels)!r}")
        step_labels = [None if v is None else int(v) for v in step_labels]
        implied = first_error_from_step_labels(step_labels)
        if label is None:
            label = implied
        elif implied is not None and implied != label:
            raise fail("step_labels", f"first wrong step is {implied} but label is {label}")
    elif label is not None:
        step_labels = step_labels_from_label(label, num_steps)

    record_id = record.get("id", index)
    return {
        **record,
        "id": str(record_id),
        "problem": problem,
        "steps": list(steps),
        "label": label,
        "step_labels": step_labels,
    }
