"""How good is the judge: a critic on ProcessBench with the prompt, parser and cache used for labelling.

ProcessBench rates critic LLMs on naming the first wrong step (its main table: QwQ, GPT-4o, o1-mini...).
`evaluate_judge_processbench` asks any `Judge` the same question actprm asks when labelling and scores the
answers with the official formula: an answer with no parseable index (``None``) matches no label, as in
ProcessBench's ``run_eval.py``; the share of such answers is reported beside the accuracies. For a
majority vote over samples as in ProcessBench's critic evaluation, give the judge ``num_samples`` (and a
temperature above 0): `OpenAIJudge` votes over its parseable samples.

Each run writes into ``output_dir`` (one process):

- ``predictions.jsonl``: one line per answered item: ``id``, ``subset``, ``label``, ``prediction``
  (``None`` when unparseable), ``reason`` of an unparseable answer, ``tokens`` and the judge's
  ``raw_output``. Lines are appended batch by batch; a rerun asks only about the items missing.
- ``judge.json``: the judge's identity (a rerun with another judge is refused); ``summary.json`` and
  ``results.md``: metrics and table.

A judge that stops answering (connection errors, timeouts) raises `JudgeUnavailableError` after the
answers already received are saved; its cache keeps them too.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from datasets import Dataset
from tqdm.auto import tqdm

from .data import PROCESSBENCH_SUBSETS
from .evaluation import BENCHMARK_DATA, SUMMARY_FILE, TABLE_FILE, _data_name, _load, _markdown
from .judges import Annotation, Judge, JudgeUnavailableError
from .metrics import average_over_subsets, processbench_scores
from .sharded_jobs import check_settings, read_jsonl
from .metrics.formatting import format_percent

PREDICTIONS_FILE = "predictions.jsonl"
JUDGE_FILE = "judge.json"


def evaluate_judge_processbench(
    judge: Judge,
    data: str | os.PathLike | Dataset = BENCHMARK_DATA["processbench"],
    *,
    output_dir: str | os.PathLike,
    subsets: Iterable[str] | None = None,
    batch_size: int = 64,
    show_progress: bool = True,
    data_name: str | None = None,
) -> dict[str, Any]:
    """ProcessBench for a judge: per-subset error/correct accuracy, F1, unparseable share, and their averages.

    Args:
        judge: the critic to evaluate (e.g. `OpenAIJudge`, `TransformersJudge`), with its cache.
        data: a ProcessBench folder or file, a Hub id, or a dataset from `load_steps`.
        output_dir: where predictions, summary and table go (and are resumed from).
        subsets: subsets to evaluate; all four by default.
        batch_size: items handed to the judge at once (answers are saved after each batch).
        show_progress: show a progress bar.
        data_name: how the summary names the data (default: ``data`` when it is a path or Hub id).

    Returns:
        The summary also written to ``summary.json`` (metrics as fractions in [0, 1]).

    Raises:
        ValueError: for an unknown subset, a batch size below 1, or an ``output_dir`` holding another
            judge's answers.
        JudgeUnavailableError: the judge is down, or stopped answering (the answers so far are saved).

    Example:
        ```py
        >>> from actprm import OpenAIJudge, evaluate_judge_processbench
        >>> judge = OpenAIJudge("http://localhost:8000/v1", "Qwen/QwQ-32B", cache_path="judge_cache.sqlite")
        >>> summary = evaluate_judge_processbench(judge, "Qwen/ProcessBench", output_dir="eval-judge", subsets=["gsm8k"])
        >>> summary["average"]["f1"]
        ```
    """
    subsets = list(PROCESSBENCH_SUBSETS if subsets is None else subsets)
    unknown = sorted(set(subsets) - set(PROCESSBENCH_SUBSETS))
    if unknown or not subsets:
        raise ValueError(f"unknown ProcessBench subsets {unknown}; choose from {', '.join(PROCESSBENCH_SUBSETS)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dataset = _load(data, "processbench", subset=subsets)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    check_settings(
        output_dir,
        JUDGE_FILE,
        {"judge": judge.identity},
        what="answers of another judge",
        describe=lambda previous: f"{previous['judge']}; now {judge.identity}",
    )
    done = _read_answers(output_dir)
    todo = [row for row in dataset if row["id"] not in done]
    if todo:
        judge.check_available()
    tokens_before, hits_before = judge.stats.tokens, judge.stats.cache_hits
    with (output_dir / PREDICTIONS_FILE).open("a", encoding="utf-8") as predictions:
        for start in tqdm(range(0, len(todo), batch_size), desc="Judging", unit="batch", disable=not show_progress):
            batch = todo[start : start + batch_size]
            results = judge.annotate(batch)
            for item, result in zip(batch, results):
                if isinstance(result, Annotation) or not result.server_error:
                    answer = _answer(item, result)
                    done[item["id"]] = answer
                    predictions.write(json.dumps(answer, ensure_ascii=False) + "\n")
            predictions.flush()
            if any(not isinstance(result, Annotation) and result.server_error for result in results):
                raise JudgeUnavailableError(
                    f"the judge stopped answering; {len(done)} of {dataset.num_rows} answers are saved in "
                    f"{output_dir}: rerun to resume"
                )
    rows = [done[item_id] for item_id in dataset["id"]]
    per_subset = {subset: _subset_metrics([row for row in rows if row["subset"] == subset]) for subset in subsets}
    sizes = {subset: metrics.pop("num_items") for subset, metrics in per_subset.items()}
    summary = {
        "benchmark": "processbench",
        "data": _data_name(data, data_name),
        "judge": judge.identity,
        "prompt_version": judge.prompt_version,
        "per_subset": {subset: {**per_subset[subset], "num_items": sizes[subset]} for subset in subsets},
        "average": average_over_subsets(per_subset),
        "weighted_average": average_over_subsets(per_subset, weights=sizes),
        "num_items": len(rows),
        "num_unparseable": sum(row["prediction"] is None for row in rows),
        "num_judged_this_run": len(todo),
        "judge_tokens_this_run": judge.stats.tokens - tokens_before,
        "judge_cache_hits_this_run": judge.stats.cache_hits - hits_before,
    }
    (output_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (output_dir / TABLE_FILE).write_text(_judge_table(summary), encoding="utf-8")
    return summary


def _answer(item: dict[str, Any], result: Any) -> dict[str, Any]:
    """One line of ``predictions.jsonl``: a parsed first-error index, or ``None`` and why."""
    parsed = isinstance(result, Annotation)
    return {
        "id": item["id"],
        "subset": item["subset"],
        "label": item["label"],
        "prediction": result.first_error if parsed else None,
        "reason": None if parsed else result.reason,
        "tokens": result.tokens,
        "raw_output": result.raw_output,
    }


def _subset_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    unparseable = sum(row["prediction"] is None for row in rows)
    return {
        **processbench_scores([row["prediction"] for row in rows], [row["label"] for row in rows]),
        "unparseable_share": unparseable / len(rows) if rows else math.nan,
        "num_items": len(rows),
    }


def _read_answers(output_dir: Path) -> dict[str, dict[str, Any]]:
    """Saved answers by id; a last line cut short by a crash is asked again."""
    path = output_dir / PREDICTIONS_FILE
    return {answer["id"]: answer for answer in read_jsonl(path)} if path.exists() else {}


def _judge_table(summary: dict[str, Any]) -> str:
    def line(name: str, metrics: dict[str, float], items: int) -> list[str]:
        values = [metrics[key] for key in ("error_acc", "correct_acc", "f1", "unparseable_share")]
        return [name, str(items), *map(format_percent, values)]

    rows = [line(subset, metrics, metrics["num_items"]) for subset, metrics in summary["per_subset"].items()]
    rows.append(line("**average**", summary["average"], summary["num_items"]))
    rows.append(line("weighted average", summary["weighted_average"], summary["num_items"]))
    title = f"ProcessBench, judge {summary['judge']}; accuracies, F1 and unparseable answers in %\n\n"
    return title + _markdown(["subset", "items", "error acc", "correct acc", "F1", "unparseable"], rows)
