"""Confidence filtering of a large trajectory pool: score it with an ensemble PRM, keep what it is unsure of.

The paper's last stage: a trained ensemble scores every step of a pool of trajectories (over a
million) and the trajectories it is *not* confident about by the trainer's rule (`select_confident`
with ``pred_threshold`` and ``std_threshold``) are kept for labelling and further training. Any
other strategy of `actprm.selection` that reads the heads' mean and spread can replace the rule, by
a threshold or at a fixed rate (the most uncertain share of each shard).

The pool is read shard by shard, never whole:

- a folder: each ``.json``/``.jsonl``/``.parquet`` file is a shard, loaded with `load_steps`;
- a single file, a Hub dataset id (streamed with ``datasets``) or an `IterableDataset`: a stream cut
  into shards of ``shard_size`` trajectories.

Under ``accelerate launch --multi_gpu --num_processes N -m actprm.cli filter ...`` (or ``torchrun``; on a
machine without an accelerator the processes share its CPUs; ``--cpu`` starts a single one) shard ``k``
goes to process ``k % N``. Each finished shard is
written to ``output_dir/data/<shard>.parquet`` (the kept trajectories in the canonical schema, their
own extra columns, and ``scores``, ``stds``, ``predicted_first_error``, ``truncated``), then marked
done in ``output_dir/done/<shard>.json``, both through a temporary file and a rename. A rerun skips
the shards marked done and redoes the others, so an interrupted run resumes at shard granularity.
``summary.json`` counts the trajectories seen and kept, overall and per shard; ``filter.json``
keeps the settings, and a rerun with other settings is refused. ``output_dir`` must be visible to
every process; ``load_steps(output_dir / "data")`` reads the result back.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import count, islice
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from datasets import Dataset, Features, IterableDataset, List, Value
from tqdm.auto import tqdm

from .distributed import process_state
from .data import load_steps
from .data.loaders import (
    CONVERTERS,
    FORMATS,
    HUB_FORMATS,
    data_files,
    dataset_records,
    hub_dataset_id,
    hub_split,
    record_format,
)
from .data.records import OnError, RawRecord, RecordErrors, build_dataset, read_records
from .scoring import StepScorer
from .sharded_jobs import check_settings, take_turns, write_json
from .selection import PER_HEAD_STRATEGIES, SINGLE_HEAD_STRATEGIES, SelectionSettings, pad_step_statistics

DATA_DIR = "data"
DONE_DIR = "done"
SUMMARY_FILE = "summary.json"
SETTINGS_FILE = "filter.json"
SCORE_FEATURES = Features(
    {
        "scores": List(Value("float32")),
        "stds": List(Value("float32")),
        "predicted_first_error": Value("int64"),
        "truncated": Value("bool"),
    }
)
"""Columns the filter adds to each kept trajectory (the scorer's float32 outputs, stored exactly)."""


@dataclass(frozen=True)
class PoolShard:
    """One unit of work: its name (that of its output files) and how to load it as a canonical `Dataset`."""

    name: str
    load: Callable[[], Dataset]


class TrajectoryPool:
    """A pool of trajectories in any format `load_steps` reads, handed out shard by shard.

    Args:
        source: a folder of data files (one shard each), a single data file or a Hub dataset id
            (streamed and cut into shards of ``shard_size``), or an `IterableDataset`.
        format: one of `actprm.data.FORMATS`; inferred from the first record when omitted.
        split: in a folder, keep the files whose name has this token; on the Hub, the split to stream.
        shard_size: trajectories per shard of a stream (a folder's shards are its files).
        on_error: ``"raise"`` or ``"skip"`` malformed records, as in `load_steps`.

    Every process reads a stream through, converting only its own shards; a folder spreads the reading too.

    Raises:
        FileNotFoundError: for a path that does not exist and is no Hub id, or a folder without data files.
        ValueError: for an unknown format, ``shard_size`` < 1, or two files of a folder with the same stem.

    Example:
        ```py
        >>> from actprm import TrajectoryPool
        >>> pool = TrajectoryPool("trajectories/", split="train")  # a folder of jsonl/parquet files, one shard each
        >>> for shard in pool.shards():
        ...     print(shard.name, shard.load().num_rows)
        ```
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | IterableDataset,
        format: str | None = None,
        *,
        split: str | None = None,
        shard_size: int = 10_000,
        on_error: OnError = "raise",
    ):
        if format is not None and format not in CONVERTERS:
            raise ValueError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        RecordErrors(on_error)  # checks the policy now rather than at the first shard
        self.format, self.split, self.shard_size, self.on_error = format, split, shard_size, on_error
        self.files: list[Path] | None = None
        self.stream: IterableDataset | None = None
        if isinstance(source, IterableDataset):
            self.stream, self.name = source, type(source).__name__
            return
        path = Path(source)
        self.name = str(path.resolve()) if path.exists() else str(source)
        if path.is_dir():
            self.files = data_files(path, split)
            stems = [_stem(file) for file in self.files]
            clashes = sorted({stem for stem in stems if stems.count(stem) > 1})
            if clashes:
                raise ValueError(f"{path}: several files share the name(s) {clashes}; each shard needs its own")
        elif path.is_file():
            data_files(path, split)  # refuses a split
        else:
            repo_id = hub_dataset_id(source)
            self.format = format or HUB_FORMATS.get(repo_id)
            self.stream = hub_split(repo_id, split, streaming=True)[1]

    def shards(self) -> Iterator[PoolShard]:
        """Every shard in order, each loaded only when asked (a stream is still read through to reach it)."""
        if self.files is not None:
            for file in self.files:
                yield PoolShard(_stem(file), lambda file=file: load_steps(file, self.format, on_error=self.on_error))
            return
        errors = RecordErrors(self.on_error)
        if self.stream is None:
            path = Path(self.name)
            records, prefix = read_records(path, errors), _stem(path)
        else:
            prefix = str(self.stream.split or "train")
            records = dataset_records(self.stream, f"{self.name}[{prefix}]", prefix)
        format = self.format
        for index in count():
            chunk = list(islice(records, self.shard_size))
            if not chunk:
                break
            format = format or record_format(chunk[0])
            yield PoolShard(f"{prefix}-{index:05d}", lambda chunk=chunk, format=format: self._convert(chunk, format))
        errors.report(self.name)

    def _convert(self, chunk: list[RawRecord], format: str) -> Dataset:
        errors = RecordErrors(self.on_error)
        dataset = build_dataset(CONVERTERS[format](chunk, errors), self.name)
        errors.report(self.name)
        return dataset


def filter_pool(
    scorer: StepScorer,
    pool: TrajectoryPool | str | os.PathLike[str] | IterableDataset,
    *,
    output_dir: str | os.PathLike[str],
    pred_threshold: float = 0.9,
    std_threshold: float = 0.01,
    strategy: str = "actprm",
    uncertainty_threshold: float | None = None,
    selection_rate: float | None = None,
    random_share: float = 0.0,
    batch_size: int = 8,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Keep the trajectories of ``pool`` that the ensemble is not confident about; resumable, multi-process.

    Args:
        scorer: a `StepScorer` over an `EnsemblePRMModel` with at least 2 heads (any PRM for ``entropy_*``).
        pool: a `TrajectoryPool`, or a source to build one from with its defaults.
        output_dir: where the kept shards, the done markers, ``summary.json`` and ``filter.json`` go.
        pred_threshold: a step is decided when its mean probability is >= this or <= 1 - this
            (the trainer's default 0.9).
        std_threshold: and when the heads' standard deviation is <= this (the trainer's default 0.01).
        strategy: the selection strategy (`actprm.selection.STRATEGIES`, except the ``bald_*`` ones, which
            need every head's probability); ``entropy_*`` also work with a single model.
        uncertainty_threshold: a strategy other than ``actprm`` keeps what scores above this.
        selection_rate: instead of a threshold, keep this share of each shard, the most uncertain.
        random_share: epsilon-greedy share of random trajectories (see `actprm.selection.acquire`).
        batch_size: solutions per forward pass.
        show_progress: show a progress bar on the main process.

    Returns:
        The summary also written to ``summary.json``: ``seen``, ``kept``, ``fraction_kept``,
        ``truncated``, ``num_shards``, ``shards_filtered_this_run`` and per shard ``seen``, ``kept``,
        ``fraction_kept``, ``truncated`` and the ``process_index`` that filtered it.

    Raises:
        ValueError: for a scorer that is not an ensemble (for a strategy that needs one), bad selection
            settings, or an ``output_dir`` holding the output of other settings.

    Example:
        ```py
        >>> from actprm import StepScorer, filter_pool
        >>> scorer = StepScorer.from_pretrained("my-prm")  # an `EnsemblePRMModel` saved by `ActivePRMTrainer`
        >>> summary = filter_pool(scorer, "trajectories/", output_dir="uncertain", pred_threshold=0.95)
        ```
    """
    selection = filter_selection(strategy, pred_threshold, std_threshold, uncertainty_threshold, selection_rate, random_share)
    heads = getattr(scorer.model.config, "num_ensemble", 0) if scorer.kind == "ensemble" else 0
    if heads < 2 and strategy not in SINGLE_HEAD_STRATEGIES:
        raise ValueError(
            f"strategy {strategy!r} needs an ensemble PRM with at least 2 heads (it reads their disagreement); "
            f"{scorer.settings['model']} is a {scorer.kind!r} model with {heads or 'no'} heads"
        )
    pool = pool if isinstance(pool, TrajectoryPool) else TrajectoryPool(pool)
    output_dir = Path(output_dir)
    settings = {
        "source": pool.name,
        "format": pool.format,
        "split": pool.split,
        "shard_size": pool.shard_size,
        "scorer": scorer.settings,
        "pred_threshold": pred_threshold,
        "std_threshold": std_threshold,
        "strategy": strategy,
        "uncertainty_threshold": uncertainty_threshold,
        "selection_rate": selection_rate,
        "random_share": random_share,
    }
    state = process_state()
    check_settings(output_dir, SETTINGS_FILE, settings, what="a filter run with other settings")
    (output_dir / DATA_DIR).mkdir(exist_ok=True)
    (output_dir / DONE_DIR).mkdir(exist_ok=True)
    done_before = {name for name in _shard_names(output_dir) if _read_marker(output_dir, name) is not None}
    state.wait_for_everyone()  # every process has listed the finished shards before any new one appears

    names = []
    show = show_progress and state.is_local_main_process
    with tqdm(desc="Filtering", unit="trajectory", disable=not show) as progress:
        for shard in take_turns(_listed(pool.shards(), names)):
            if shard.name not in done_before:
                _filter_shard(scorer, shard, output_dir, selection, batch_size, state.process_index, progress)
    state.wait_for_everyone()
    summary = _summary(output_dir, names, settings, done_before)
    if state.is_main_process:
        write_json(output_dir / SUMMARY_FILE, summary)
    state.wait_for_everyone()
    return summary


def _listed(shards: Iterator[PoolShard], names: list[str]) -> Iterator[PoolShard]:
    """``shards``, appending each one's name to ``names`` as it is read (every process lists them all)."""
    for shard in shards:
        names.append(shard.name)
        yield shard


def uncertain_trajectories(
    results: list[dict[str, Any]], selection: SelectionSettings, generator: torch.Generator | None = None
) -> tuple[list[bool], list[int]]:
    """A selection on `StepScorer.score` results: per item, kept (selected) and the predicted first error.

    Only scored steps count; an item without any (no step, or none inside the context) is not kept,
    as `select_confident` finds a trajectory without steps confident; a fixed rate is a share of the others.
    """
    keep, first_errors = [False] * len(results), [-1] * len(results)
    scored = [index for index, result in enumerate(results) if result["scores"]]
    if scored:
        spreads = [results[i]["stds"] or [0.0] * len(results[i]["scores"]) for i in scored]  # none: a single model
        statistics = [(torch.tensor(results[i]["scores"]), torch.tensor(spread)) for i, spread in zip(scored, spreads)]
        mean, std, step_mask = pad_step_statistics(statistics)
        decision = selection.select(mean, std, step_mask, generator=generator)
        for index, kept, first_error in zip(scored, decision.selected.tolist(), decision.predicted_first_error.tolist()):
            keep[index], first_errors[index] = kept, first_error
    return keep, first_errors


def filter_selection(
    strategy: str,
    pred_threshold: float,
    std_threshold: float,
    uncertainty_threshold: float | None = None,
    selection_rate: float | None = None,
    random_share: float = 0.0,
) -> SelectionSettings:
    """The filter's validated selection settings: a ValueError names a bad option (as the trainer's do)."""
    if strategy in PER_HEAD_STRATEGIES:
        raise ValueError(
            f"strategy {strategy!r} needs every head's probability; the filter's scores carry only the mean and "
            "spread over heads: use another strategy"
        )
    return SelectionSettings(strategy, pred_threshold, std_threshold, uncertainty_threshold, selection_rate, random_share)


def _filter_shard(
    scorer: StepScorer,
    shard: PoolShard,
    output_dir: Path,
    selection: SelectionSettings,
    batch_size: int,
    process_index: int,
    progress: tqdm,
) -> None:
    dataset = shard.load()
    results: list[dict[str, Any]] = [{}] * dataset.num_rows
    for index, result in scorer.iter_scores(dataset, batch_size=batch_size, show_progress=False):
        results[index] = result
        progress.update()
    generator = torch.Generator().manual_seed(zlib.crc32(shard.name.encode()))  # the same draw on a rerun
    keep, first_errors = uncertain_trajectories(results, selection, generator)
    kept_indices = [index for index, kept in enumerate(keep) if kept]
    columns = {
        "scores": [results[i]["scores"] for i in kept_indices],
        "stds": [results[i]["stds"] for i in kept_indices],
        "predicted_first_error": [first_errors[i] for i in kept_indices],
        "truncated": [results[i]["truncated"] for i in kept_indices],
    }
    own = [name for name in dataset.column_names if name not in SCORE_FEATURES]
    schema = Features({**{name: dataset.features[name] for name in own}, **SCORE_FEATURES}).arrow_schema
    table = dataset.with_format("arrow")[:].select(own).take(pa.array(kept_indices, pa.int64()))  # typed when empty
    for name in SCORE_FEATURES:
        table = table.append_column(schema.field(name), pa.array(columns[name], schema.field(name).type))
    data_path = output_dir / DATA_DIR / f"{shard.name}.parquet"
    temporary = data_path.with_name(f".{data_path.name}.tmp")
    pq.write_table(table.replace_schema_metadata(schema.metadata), temporary)
    os.replace(temporary, data_path)
    marker = {
        "seen": dataset.num_rows,
        "kept": len(kept_indices),
        "truncated": sum(result["truncated"] for result in results),
        "process_index": process_index,
    }
    write_json(output_dir / DONE_DIR / f"{shard.name}.json", marker)


def _summary(output_dir: Path, names: list[str], settings: dict[str, Any], done_before: set[str]) -> dict[str, Any]:
    markers = {}
    for name in names:
        marker = _read_marker(output_dir, name)
        if marker is None:
            raise RuntimeError(f"shard {name} has no output in {output_dir} after the run: did a process fail?")
        markers[name] = marker
    seen, kept = sum(m["seen"] for m in markers.values()), sum(m["kept"] for m in markers.values())
    return {
        **settings,
        "output": str(output_dir / DATA_DIR),
        "seen": seen,
        "kept": kept,
        "fraction_kept": _fraction(kept, seen),
        "truncated": sum(m["truncated"] for m in markers.values()),
        "num_shards": len(names),
        "shards_filtered_this_run": len(set(names) - done_before),
        "shards": {name: {**m, "fraction_kept": _fraction(m["kept"], m["seen"])} for name, m in markers.items()},
    }


def _fraction(kept: int, seen: int) -> float:
    return kept / seen if seen else 0.0


def _shard_names(output_dir: Path) -> list[str]:
    return sorted(path.stem for path in (output_dir / DONE_DIR).glob("*.json"))


def _read_marker(output_dir: Path, name: str) -> dict[str, int] | None:
    """The counts of a finished shard, or None when its output or marker is missing or unreadable."""
    try:
        marker = json.loads((output_dir / DONE_DIR / f"{name}.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    complete = isinstance(marker, dict) and all(isinstance(marker.get(k), int) for k in ("seen", "kept", "truncated"))
    return marker if complete and (output_dir / DATA_DIR / f"{name}.parquet").is_file() else None


def _stem(path: Path) -> str:
    return path.name.split(".")[0]
