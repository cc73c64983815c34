"""Benchmark runner: score ProcessBench or PRMBench with a `StepScorer`, resumably, across processes.

Each run writes into ``output_dir``:

- ``predictions.jsonl``: one line per item, keyed by its ``id``: the step scores and flags from
  `StepScorer.score` and the prediction at the run's threshold. A rerun scores only the items missing
  from it, so an interrupted run resumes where it stopped.
- ``summary.json``: the metrics, the threshold and the scorer's settings; ``results.md``: the table;
  ``scorer.json``: the settings the predictions were scored with (a rerun with others is refused).

Under ``accelerate launch`` every process scores an interleaved share of the missing items, appending
to its own ``predictions.shard-<rank>.jsonl`` as it goes; the main process then merges the shards into
``predictions.jsonl`` and writes the summary. ``output_dir`` must be visible to every process.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers.utils import logging

from .distributed import process_state
from .data import PROCESSBENCH_SUBSETS, load_steps
from .metrics import (
    DEFAULT_THRESHOLD,
    average_over_subsets,
    calibrate_threshold,
    first_error_from_scores,
    prmbench_scores,
    processbench_scores,
    validity_labels,
)
from .metrics import check_threshold
from .metrics.formatting import format_percent
from .scoring import StepScorer
from .sharded_jobs import check_settings, read_jsonl, take_turns

logger = logging.get_logger(__name__)

BENCHMARK_DATA = {"processbench": "Qwen/ProcessBench", "prmbench": "hitsmy/PRMBench_Preview"}
"""Hub dataset of each benchmark, the default ``data``."""
PREDICTIONS_FILE = "predictions.jsonl"
SUMMARY_FILE = "summary.json"
TABLE_FILE = "results.md"
SCORER_FILE = "scorer.json"
SCORED_FIELDS = ("scores", "stds", "num_steps", "num_scored_steps", "truncated", "empty")
"""What `StepScorer.score` gives per item and the predictions file keeps, whatever the threshold."""


def evaluate_processbench(
    scorer: StepScorer,
    data: str | os.PathLike | Dataset = BENCHMARK_DATA["processbench"],
    *,
    output_dir: str | os.PathLike,
    subsets: Iterable[str] | None = None,
    threshold: float | None = None,
    calibrate: str | None = None,
    batch_size: int = 8,
    show_progress: bool = True,
    data_name: str | None = None,
) -> dict[str, Any]:
    """ProcessBench: per-subset error/correct accuracy and F1, their plain and size-weighted averages.

    Args:
        scorer: the PRM to evaluate.
        data: a ProcessBench folder or file, a Hub id, or a dataset from `load_steps`.
        output_dir: where predictions, summary and table go (and are resumed from).
        subsets: subsets to evaluate; all four by default.
        threshold: a step scored below it is an error (default 0.5).
        calibrate: instead of ``threshold``, pick the threshold with the best F1 on this subset
            (``"gsm8k"``, the benchmark's protocol for scalar PRMs) and apply it to every subset.
        batch_size: solutions per forward pass.
        show_progress: show a progress bar.
        data_name: how the summary names the data (default: ``data`` when it is a path or Hub id).

    Returns:
        The summary also written to ``summary.json`` (metrics as fractions in [0, 1]).

    Raises:
        ValueError: for a threshold outside (0, 1), both ``threshold`` and ``calibrate``, an
            unknown subset, or a calibration subset that is not evaluated.

    Example:
        ```py
        >>> from actprm import StepScorer, evaluate_processbench
        >>> scorer = StepScorer.from_pretrained("sail/ActPRM")
        >>> summary = evaluate_processbench(scorer, "Qwen/ProcessBench", output_dir="eval-processbench", calibrate="gsm8k")
        >>> summary["average"]["f1"]
        ```
    """
    if threshold is not None and calibrate is not None:
        raise ValueError("pass either a threshold or a calibration subset, not both")
    threshold = check_threshold(DEFAULT_THRESHOLD if threshold is None else threshold)
    subsets = list(PROCESSBENCH_SUBSETS if subsets is None else subsets)
    unknown = sorted(set(subsets) - set(PROCESSBENCH_SUBSETS))
    if unknown or not subsets:
        raise ValueError(f"unknown ProcessBench subsets {unknown}; choose from {', '.join(PROCESSBENCH_SUBSETS)}")
    if calibrate is not None and calibrate not in subsets:
        raise ValueError(f"calibrating on {calibrate!r} needs that subset among the evaluated ones {subsets}")
    dataset = _load(data, "processbench", subset=subsets)
    predictions, num_scored = _score_missing(scorer, dataset, Path(output_dir), batch_size, show_progress)

    rows = [{**row, **predictions[row["id"]]} for row in dataset]
    calibration = None
    if calibrate is not None:
        calibrating = [row for row in rows if row["subset"] == calibrate]
        threshold, best_f1 = calibrate_threshold(
            [_padded_scores(row) for row in calibrating], [row["label"] for row in calibrating]
        )
        calibration = {"subset": calibrate, "f1": best_f1}
    for row in rows:
        row["first_error"] = first_error_from_scores(row["scores"], threshold)

    per_subset = {}
    for subset in subsets:
        subset_rows = [row for row in rows if row["subset"] == subset]
        per_subset[subset] = processbench_scores(
            [r["first_error"] for r in subset_rows], [r["label"] for r in subset_rows]
        )
    sizes = {subset: sum(row["subset"] == subset for row in rows) for subset in subsets}
    summary = {
        "benchmark": "processbench",
        "data": _data_name(data, data_name),
        "scorer": scorer.settings,
        "threshold": threshold,
        "calibration": calibration,
        "per_subset": {subset: {**per_subset[subset], "num_items": sizes[subset]} for subset in subsets},
        "average": average_over_subsets(per_subset),
        "weighted_average": average_over_subsets(per_subset, weights=sizes),
        **_counts(rows, num_scored),
    }
    _finish(Path(output_dir), summary, rows, ("id", "subset", "label", "first_error"), _processbench_table(summary))
    return summary


def evaluate_prmbench(
    scorer: StepScorer,
    data: str | os.PathLike | Dataset = BENCHMARK_DATA["prmbench"],
    *,
    output_dir: str | os.PathLike,
    threshold: float = DEFAULT_THRESHOLD,
    batch_size: int = 8,
    show_progress: bool = True,
    data_name: str | None = None,
) -> dict[str, Any]:
    """PRMBench: PRMScore, F1 and negative F1, overall and per classification.

    A step is valid when its score is above ``threshold`` (the official 0.5 by default); steps beyond
    the context are not scored and, as in the official code, do not count.

    Args:
        scorer: the PRM to evaluate.
        data: a PRMBench folder or file, a Hub id, or a dataset from `load_steps`.
        output_dir: where predictions, summary and table go (and are resumed from).
        threshold: validity threshold in (0, 1).
        batch_size: solutions per forward pass.
        show_progress: show a progress bar.
        data_name: how the summary names the data (default: ``data`` when it is a path or Hub id).

    Returns:
        The summary also written to ``summary.json``.

    Raises:
        ValueError: for a threshold outside (0, 1) or a malformed benchmark record (naming file and field).

    Example:
        ```py
        >>> from actprm import StepScorer, evaluate_prmbench
        >>> scorer = StepScorer.from_pretrained("sail/ActPRM")
        >>> summary = evaluate_prmbench(scorer, "hitsmy/PRMBench_Preview", output_dir="eval-prmbench")
        >>> summary["prm_score"]
        ```
    """
    threshold = check_threshold(threshold)
    dataset = _load(data, "prmbench")
    predictions, num_scored = _score_missing(scorer, dataset, Path(output_dir), batch_size, show_progress)
    rows = [{**row, **predictions[row["id"]]} for row in dataset]
    for row in rows:
        row["validity"] = validity_labels(row["scores"], threshold)
    scores = prmbench_scores(
        [row["validity"] for row in rows],
        [row["error_steps"] for row in rows],
        [row["classification"] for row in rows],
    )
    summary = {
        "benchmark": "prmbench",
        "data": _data_name(data, data_name),
        "scorer": scorer.settings,
        "threshold": threshold,
        **scores,
        **_counts(rows, num_scored),
    }
    _finish(
        Path(output_dir), summary, rows, ("id", "classification", "error_steps", "validity"), _prmbench_table(summary)
    )
    return summary


def _load(data: str | os.PathLike | Dataset, benchmark: str, subset: list[str] | None = None) -> Dataset:
    if isinstance(data, Dataset):
        if subset is not None:
            return data.filter(lambda row: row["subset"] in subset)
        return data
    return load_steps(data, format=benchmark, subset=subset)


def _data_name(data: str | os.PathLike | Dataset, data_name: str | None) -> str | None:
    return data_name if data_name is not None or isinstance(data, Dataset) else str(data)


def _score_missing(
    scorer: StepScorer, dataset: Dataset, output_dir: Path, batch_size: int, show_progress: bool
) -> tuple[dict[str, dict[str, Any]], int]:
    """Predictions of every item of ``dataset`` by id, scoring only those not already in ``output_dir``.

    Returns the predictions and how many items this run scored (over all processes).
    """
    state = process_state()
    output_dir.mkdir(parents=True, exist_ok=True)
    check_settings(
        output_dir,
        SCORER_FILE,
        scorer.settings,
        what="predictions of another scorer",
        describe=lambda previous: f"{previous}; now {scorer.settings}",
    )
    done = _read_predictions(output_dir)
    state.wait_for_everyone()  # every process has read the same files before any shard grows
    ids = dataset["id"]
    missing = [index for index, item_id in enumerate(ids) if item_id not in done]
    if missing:
        logger.info(
            "scoring %d of %d items (%d already in %s)", len(missing), len(ids), len(ids) - len(missing), output_dir
        )
    shard = list(take_turns(missing))
    shard_path = output_dir / f"predictions.shard-{state.process_index}.jsonl"
    with shard_path.open("a", encoding="utf-8") as shard_file:
        results = scorer.iter_scores(
            dataset.select(shard), batch_size=batch_size, show_progress=show_progress and state.is_local_main_process
        )
        for position, result in results:
            line = {"id": ids[shard[position]], **{field: result[field] for field in SCORED_FIELDS}}
            shard_file.write(json.dumps(line) + "\n")
            shard_file.flush()
    state.wait_for_everyone()
    done = _read_predictions(output_dir)
    state.wait_for_everyone()  # all have read the shards before the main process merges them away
    return done, len(missing)


def _read_predictions(output_dir: Path) -> dict[str, dict[str, Any]]:
    """Scored items by id from ``predictions.jsonl`` and any shard files; a line cut short by a crash is skipped."""
    return {
        record["id"]: {field: record[field] for field in SCORED_FIELDS}
        for path in sorted(output_dir.glob("predictions*.jsonl"))
        for record in read_jsonl(path)
    }


def _padded_scores(row: Mapping[str, Any]) -> list[float]:
    """Scores with unscored (truncated) steps as 1.0: never an error, as `first_error_from_scores` treats them."""
    return list(row["scores"]) + [1.0] * (row["num_steps"] - len(row["scores"]))


def _counts(rows: list[dict[str, Any]], num_scored: int) -> dict[str, int]:
    return {
        "num_items": len(rows),
        "num_truncated": sum(row["truncated"] for row in rows),
        "num_empty": sum(row["empty"] for row in rows),
        "num_scored_this_run": num_scored,
    }


def _finish(
    output_dir: Path, summary: dict[str, Any], rows: list[dict[str, Any]], item_fields: tuple[str, ...], table: str
) -> None:
    """On the main process: merge all predictions into one file (keeping items of other runs) and write the reports."""
    state = process_state()
    if state.is_main_process:
        evaluated = {row["id"] for row in rows}
        others = [
            {"id": item_id, **fields}
            for item_id, fields in _read_predictions(output_dir).items()
            if item_id not in evaluated
        ]
        merged = output_dir / (PREDICTIONS_FILE + ".tmp")
        with merged.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(
                    json.dumps({**{field: row[field] for field in item_fields}, **{f: row[f] for f in SCORED_FIELDS}})
                    + "\n"
                )
            for record in others:
                handle.write(json.dumps(record) + "\n")
        os.replace(merged, output_dir / PREDICTIONS_FILE)
        for shard in output_dir.glob("predictions.shard-*.jsonl"):
            shard.unlink()
        (output_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        (output_dir / TABLE_FILE).write_text(table, encoding="utf-8")
    state.wait_for_everyone()


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([" --- "] * len(header)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def _processbench_table(summary: dict[str, Any]) -> str:
    def line(name: str, metrics: Mapping[str, float], items: str) -> list[str]:
        return [name, items, format_percent(metrics["error_acc"]), format_percent(metrics["correct_acc"]), format_percent(metrics["f1"])]

    rows = [line(s, m, str(m["num_items"])) for s, m in summary["per_subset"].items()]
    rows.append(line("**average**", summary["average"], str(summary["num_items"])))
    rows.append(line("weighted average", summary["weighted_average"], str(summary["num_items"])))
    calibration = summary["calibration"]
    how = f"calibrated on {calibration['subset']}" if calibration else "fixed"
    model, threshold = summary["scorer"]["model"], summary["threshold"]
    title = f"ProcessBench, {model}, threshold {threshold:g} ({how}); accuracies and F1 in %\n\n"
    return title + _markdown(["subset", "items", "error acc", "correct acc", "F1"], rows)


def _prmbench_table(summary: dict[str, Any]) -> str:
    def line(name: str, metrics: Mapping[str, float]) -> list[str]:
        return [name, format_percent(metrics["prm_score"]), format_percent(metrics["f1"]), format_percent(metrics["negative_f1"])]

    rows = [line(name, metrics) for name, metrics in summary["per_classification"].items()]
    rows.append(line("**overall**", summary))
    title = f"PRMBench, {summary['scorer']['model']}, validity threshold {summary['threshold']:g}; scores in %\n\n"
    return title + _markdown(["classification", "PRMScore", "F1", "negative F1"], rows)
