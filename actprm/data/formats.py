"""Record converters of the step-data formats, each from raw records to canonical rows.

A converter takes the `RawRecord` stream of one load and the load's `RecordErrors`, and
returns canonical rows (see `schema`). PRM800K, which needs all rows of a problem at once,
lives in `prm800k`.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from datasets import Dataset

from .records import RawRecord, RecordErrors, build_dataset
from .schema import CANONICAL_COLUMNS, StepDataError, validate_record

PROCESSBENCH_SUBSETS = ("gsm8k", "math", "olympiadbench", "omnimath")
PRMBENCH_CORRECT_SAMPLE_SOURCE = "redundency"  # sic: the official task's spelling
MATH_SHEPHERD_TAG = "ки"
MATH_SHEPHERD_LABELS = {"+": 1, "-": 0}
TRL_COLUMNS = ("prompt", "completions", "labels")


def convert_canonical(records: Iterable[RawRecord], errors: RecordErrors) -> list[dict[str, Any]]:
    """Records already in the canonical schema, validated; ids default to ``<name>-<ordinal>``."""
    return [row for _, row in errors.convert_each(records, _canonical_row)]


def _canonical_row(record: RawRecord) -> dict[str, Any]:
    return _validated(record, record.data)


def _validated(record: RawRecord, row: dict[str, Any]) -> dict[str, Any]:
    """``row`` checked against the schema, with the id ``<name>-<ordinal>`` when it has none."""
    row = {"id": f"{record.name}-{record.ordinal}", **row}
    return validate_record(row, source=record.source, index=record.location)


def processbench_subset(record_id: str) -> str:
    """The ProcessBench subset of an item, from its id (``"gsm8k-12"`` -> ``"gsm8k"``)."""
    return record_id.rsplit("-", 1)[0]


def convert_processbench(
    records: Iterable[RawRecord], errors: RecordErrors, subsets: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """ProcessBench items (canonical plus ``generator``, ``final_answer_correct``) with a ``subset`` column.

    ``subsets`` keeps only the items of those subsets (read from the ids, ``"<subset>-<n>"``).
    """
    keep = None if subsets is None else set(subsets)
    rows = []
    for _, row in errors.convert_each(records, _canonical_row):
        row["subset"] = processbench_subset(row["id"])
        if keep is None or row["subset"] in keep:
            rows.append(row)
    return rows


def convert_prmbench(records: Iterable[RawRecord], errors: RecordErrors) -> list[dict[str, Any]]:
    """The samples the official PRMBench task (``prmtest_classified``) evaluates.

    Each record gives ``<classification>_<idx>`` on its modified question and process; each
    ``redundency`` record also gives the all-correct ``correct_<idx>`` on its original ones.
    ``error_steps`` (1-based) are kept whole; ``step_labels`` are 0 at every error step and 1
    elsewhere (PRMBench judges each step, also after the first error), and ``label`` is the first
    error step. Error steps past the last step (about 100 of the 6,216 published records) are
    ignored for the labels, as the official scoring does, which only scores existing steps.
    A later record with an id already seen (5 ``multi_solutions`` records repeat an ``idx`` with
    another solution) is left out, as the official task keeps the first, and reported.
    """
    rows: dict[str, dict[str, Any]] = {}
    for record, samples in errors.convert_each(records, _prmbench_samples):
        for sample in samples:
            if sample["id"] in rows:
                message = f"duplicate sample id {sample['id']!r}; the first one is kept, as in the official task"
                errors.note(record.error("idx", message))
            else:
                rows[sample["id"]] = sample
    return list(rows.values())


def _prmbench_samples(record: RawRecord) -> list[dict[str, Any]]:
    idx = record.require("idx", (str, int))
    classification = record.require("classification", str)
    error_steps = record.require("error_steps", list)
    if not all(isinstance(step, int) and not isinstance(step, bool) and step >= 1 for step in error_steps):
        raise record.error("error_steps", f"expected 1-based step numbers, got {error_steps!r}")
    samples = [_prmbench_sample(record, f"{classification}_{idx}", "modified", classification, error_steps)]
    if classification == PRMBENCH_CORRECT_SAMPLE_SOURCE:
        samples.insert(0, _prmbench_sample(record, f"correct_{idx}", "original", "correct", []))
    return samples


def _prmbench_sample(
    record: RawRecord, sample_id: str, version: str, classification: str, error_steps: list[int]
) -> dict[str, Any]:
    problem = record.require(f"{version}_question", str)
    steps = record.require_strings(f"{version}_process")
    step_labels = [0 if number in error_steps else 1 for number in range(1, len(steps) + 1)]
    scored_error_steps = [number for number in error_steps if number <= len(steps)]
    return {
        "id": sample_id,
        "problem": problem,
        "steps": steps,
        "label": min(scored_error_steps) - 1 if scored_error_steps else -1,
        "step_labels": step_labels,
        "classification": classification,
        "error_steps": list(error_steps),
    }


def convert_math_shepherd(records: Iterable[RawRecord], errors: RecordErrors) -> list[dict[str, Any]]:
    """Math-Shepherd records (``input`` with a ``ки`` tag after each step, ``label`` the same text
    with ``+``/``-`` at the tags); other fields (``task``) are kept."""
    return [row for _, row in errors.convert_each(records, _math_shepherd_row)]


def _math_shepherd_row(record: RawRecord) -> dict[str, Any]:
    text, labelled = record.require("input", str), record.require("label", str)
    segments = text.split(MATH_SHEPHERD_TAG)
    if len(segments) < 2:
        raise record.error("input", f"no {MATH_SHEPHERD_TAG!r} step tag")
    if segments[-1].strip():
        raise record.error("input", f"text after the last {MATH_SHEPHERD_TAG!r} tag: {segments[-1].strip()[:60]!r}")
    if len(labelled) != len(text) - (len(segments) - 1) * (len(MATH_SHEPHERD_TAG) - 1):
        raise record.error("label", "is not the input with each tag replaced by '+' or '-'")
    step_labels, position = [], 0
    for segment in segments[:-1]:
        position += len(segment)
        mark = labelled[position]
        if mark not in MATH_SHEPHERD_LABELS:
            raise record.error("label", f"expected '+' or '-' at character {position}, got {mark!r}")
        step_labels.append(MATH_SHEPHERD_LABELS[mark])
        position += 1
    problem, first_step = _split_question(segments[0])
    if not problem or not first_step:
        raise record.error("input", "cannot tell the question from the first step (no 'Step 1:', line break or '?')")
    steps = [first_step] + [segment.strip() for segment in segments[1:-1]]
    row = {key: value for key, value in record.data.items() if key not in ("input", "label")}
    return _validated(record, {**row, "problem": problem, "steps": steps, "step_labels": step_labels})


def _split_question(text: str) -> tuple[str, str]:
    """Question and first step of the text before the first tag.

    Math-Shepherd writes ``"<question> Step 1: <step>"``; without ``Step 1:`` the question is the
    first line, else everything up to its last ``?`` (as TRL's conversion script does).
    """
    match = re.search(r"\bstep 1\s*:", text, flags=re.IGNORECASE)
    if match:
        return text[: match.start()].strip(), text[match.start() :].strip()
    question, _, rest = text.strip().partition("\n")
    if rest:
        return question.strip(), rest.strip()
    cut = text.rfind("?") + 1
    return text[:cut].strip(), text[cut:].strip()


def convert_trl(records: Iterable[RawRecord], errors: RecordErrors) -> list[dict[str, Any]]:
    """TRL stepwise-supervision records (``prompt``, ``completions``, boolean ``labels``).

    Each boolean becomes a step label (True -> 1, False -> 0) and ``label`` is the first False.
    An ``id`` column is used when present; other columns are kept.
    """
    return [row for _, row in errors.convert_each(records, _trl_row)]


def _trl_row(record: RawRecord) -> dict[str, Any]:
    prompt, completions = record.require("prompt", str), record.require_strings("completions")
    labels = record.require("labels", (list, tuple))
    if len(labels) != len(completions) or not all(isinstance(label, bool) for label in labels):
        raise record.error("labels", f"expected {len(completions)} booleans, one per completion, got {list(labels)!r}")
    row = {key: value for key, value in record.data.items() if key not in TRL_COLUMNS}
    return _validated(record, {**row, "problem": prompt, "steps": completions, "step_labels": [int(v) for v in labels]})


def to_trl_stepwise(dataset: Dataset) -> Dataset:
    """Canonical rows -> TRL's stepwise-supervision format: ``prompt``, ``completions``, ``labels``.

    TRL labels every step with a boolean. Known step labels are kept (1 -> True, 0 -> False);
    an unknown one (``None``) becomes True before the first wrong step (neutral is not an error,
    as in `first_error_from_step_labels`) and False after it (it extends a wrong prefix, as in
    Math-Shepherd's labels). So `from_trl_stepwise` gives back the same ``label``. ``id`` and
    extra columns are kept. An unlabelled row (``label`` None) has no TRL form and raises.

    Example:
        ```py
        >>> from actprm import make_arithmetic_dataset, to_trl_stepwise
        >>> trl_dataset = to_trl_stepwise(make_arithmetic_dataset(8))  # for TRL's PRMTrainer
        >>> trl_dataset.column_names[:3]
        ['prompt', 'completions', 'labels']
        ```
    """
    source = _dataset_source(dataset)

    def export(row: dict[str, Any], index: int) -> dict[str, Any]:
        record = validate_record(row, source=source, index=index)
        if record["label"] is None:
            message = "unlabelled (None); TRL's format needs a label for every step: filter such rows out first"
            raise StepDataError(message, source=source, record=index, field="label")
        first_error = record["label"] if record["label"] >= 0 else len(record["steps"])
        step_labels = record["step_labels"]
        labels = [step < first_error if known is None else bool(known) for step, known in enumerate(step_labels)]
        return {"prompt": record["problem"], "completions": record["steps"], "labels": labels}

    dropped = [column for column in CANONICAL_COLUMNS if column != "id"]
    exported = dataset.map(export, with_indices=True, remove_columns=dropped, desc="to TRL stepwise")
    return exported.select_columns([*TRL_COLUMNS, *[c for c in exported.column_names if c not in TRL_COLUMNS]])


def from_trl_stepwise(dataset: Dataset) -> Dataset:
    """TRL stepwise-supervision rows -> canonical rows (see `convert_trl`); raises on a malformed row.

    Example:
        ```py
        >>> from datasets import load_dataset
        >>> from actprm import from_trl_stepwise
        >>> dataset = from_trl_stepwise(load_dataset("trl-lib/math_shepherd", split="train"))
        >>> dataset.column_names[:4]
        ['id', 'problem', 'steps', 'label']
        ```
    """
    source = _dataset_source(dataset)
    records = (RawRecord(dict(row), source, index, "trl", index) for index, row in enumerate(dataset))
    return build_dataset(convert_trl(records, RecordErrors("raise")), source)


def _dataset_source(dataset: Dataset) -> str:
    return f"dataset {dataset.info.dataset_name}" if dataset.info.dataset_name else "in-memory dataset"
