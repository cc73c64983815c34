"""`load_steps`: a step-data file, folder or Hub dataset in any supported format -> canonical `Dataset`."""

from __future__ import annotations

import json
import os
import re
from itertools import chain
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow.parquet as pq
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict, get_dataset_config_names, load_dataset

from ..hub_utils import hub_repo_id
from .formats import (
    PROCESSBENCH_SUBSETS,
    convert_canonical,
    convert_math_shepherd,
    convert_prmbench,
    convert_processbench,
    convert_trl,
)
from .prm800k import convert_prm800k
from .records import DATA_SUFFIXES, OnError, RawRecord, RecordErrors, build_dataset, decode_utf8, read_records
from .schema import StepDataError

CONVERTERS = {
    "processbench": convert_processbench,
    "prmbench": convert_prmbench,
    "prm800k": convert_prm800k,
    "trl": convert_trl,
    "math_shepherd": convert_math_shepherd,
    "jsonl": convert_canonical,
}
FORMATS = tuple(CONVERTERS)
HUB_FORMATS = {"Qwen/ProcessBench": "processbench", "hitsmy/PRMBench_Preview": "prmbench"}
SAMPLES_DIR = Path(__file__).resolve().parents[1] / "resources" / "samples"
"""Small slices of ProcessBench, PRMBench and PRM800K shipped with the package, in their own formats."""


def load_steps(
    source: str | os.PathLike[str],
    format: str | None = None,
    *,
    subset: str | Iterable[str] | None = None,
    split: str | None = None,
    on_error: OnError = "raise",
) -> Dataset:
    """Load step data into the canonical schema (`FEATURES` columns first, then extra columns).

    Args:
        source: a ``.json``/``.jsonl``/``.parquet`` file, a folder of them, or a Hub dataset id
            (``Qwen/ProcessBench``, ``hitsmy/PRMBench_Preview``, or any dataset in a supported format).
        format: one of `FORMATS`; inferred from the first record (its keys) when omitted.
        subset: ProcessBench subset(s) to keep (``gsm8k``, ``math``, ``olympiadbench``, ``omnimath``);
            all by default. ProcessBench rows always carry a ``subset`` column.
        split: in a folder, keep the files whose name has this token (``phase1_train``, ``test``);
            on the Hub, the split to load (needed when there are several).
        on_error: ``"raise"`` stops at the first malformed record with a `StepDataError` naming
            the file, the record (``line N`` in jsonl, the index in a JSON list or parquet) and the
            field; ``"skip"`` leaves such records out and ends with a `SkippedRecordsWarning`
            whose ``errors`` list each one. Records left out on purpose (PRMBench's duplicate ids)
            are reported the same way.

    Example:
        ```py
        >>> from actprm import load_steps
        >>> gsm8k = load_steps("Qwen/ProcessBench", subset="gsm8k")  # or a local .jsonl/.json/.parquet file or folder
        >>> gsm8k.column_names[:4]
        ['id', 'problem', 'steps', 'label']
        ```
    """
    errors = RecordErrors(on_error)
    subsets = _subsets(subset)
    path = Path(source)
    if path.exists():
        files = data_files(path, split)
        format = format or infer_format(files[0])
        records: Iterable[RawRecord] = chain.from_iterable(read_records(file, errors) for file in files)
    else:
        format, records = _hub_records(hub_dataset_id(source), format, subsets, split)
    if format not in CONVERTERS:
        raise ValueError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    if format == "processbench":
        rows = convert_processbench(records, errors, subsets)
    elif subsets is not None:
        raise ValueError(f"subset picks ProcessBench subsets; {source} is in the {format!r} format")
    else:
        rows = CONVERTERS[format](records, errors)
    dataset = build_dataset(rows, str(source))
    errors.report(str(source))
    if dataset.num_rows == 0 and not errors.left_out:  # records left out were reported just above
        raise ValueError(f"{source}: no records to load")
    return dataset


def infer_format(path: Path) -> str:
    """The format of a data file, from its first record."""
    record = _first_record(path)
    format = infer_format_from_record(record)
    if format is None:
        keys = sorted(record)
        raise ValueError(f"{path}: cannot infer the format from the keys {keys}; pass format= (one of {FORMATS})")
    return format


def infer_format_from_record(record: dict[str, Any]) -> str | None:
    """The format a record is in, from its keys (and, for ``label``, its type), or None."""
    keys = set(record)
    if {"modified_process", "classification"} <= keys:
        return "prmbench"
    if {"instruction", "responses", "next_response"} <= keys:
        return "prm800k"
    if isinstance(record.get("question"), dict) and isinstance(record.get("label"), dict):
        return "prm800k"
    if {"prompt", "completions", "labels"} <= keys:
        return "trl"
    if {"input", "label"} <= keys and isinstance(record["label"], str):
        return "math_shepherd"
    if {"problem", "steps"} <= keys:
        return "processbench" if {"generator", "final_answer_correct"} & keys else "jsonl"
    return None


def _first_record(path: Path) -> dict[str, Any]:
    """The first record of a data file, or a `StepDataError` saying what the file holds instead."""
    source = str(path)
    if path.suffix == ".parquet":
        batch = next(pq.ParquetFile(path).iter_batches(batch_size=1), None)
        records = batch.to_pylist() if batch is not None else []
        where = 0
    elif path.suffix == ".jsonl":
        with path.open("rb") as lines:
            first = next(((number, line) for number, line in enumerate(lines, start=1) if line.strip()), None)
        where = f"line {first[0]}" if first else "top level"
        records = [] if first is None else [_parse_json(decode_utf8(first[1], source, where), source, where)]
        if records and isinstance(records[0], list):
            raise StepDataError("a JSON array, not an object: a .jsonl file holds one JSON object per line "
                                "(a JSON list of records goes in a .json file)", source=source, record=where)
    elif path.suffix == ".json":
        where = "top level"
        data = _parse_json(decode_utf8(path.read_bytes(), source, where), source, where) if path.stat().st_size else []
        if isinstance(data, dict):
            raise StepDataError("one JSON object, not a list of records: put the records in a JSON list, "
                                "or one per line in a .jsonl file", source=source, record=where)
        records = data if isinstance(data, list) else [data]
    else:
        raise ValueError(f"{path}: unsupported file type; expected one of {', '.join(DATA_SUFFIXES)}")
    if not records:
        raise StepDataError("the file holds no records", source=source, record=where)
    if not isinstance(records[0], dict):
        raise StepDataError(f"expected a JSON object, got {type(records[0]).__name__}", source=source, record=where)
    return records[0]


def _parse_json(text: str, source: str, where: int | str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise StepDataError(f"not JSON: {error}", source=source, record=where) from None


def data_files(path: Path, split: str | None = None) -> list[Path]:
    """The data files of a file or folder: the file itself, or the folder's data files by name.

    Args:
        path: a ``.json``/``.jsonl``/``.parquet`` file or a folder of them.
        split: in a folder, keep the files whose name has this token (``phase1_train``, ``test``).

    Raises:
        ValueError: for a ``split`` of a single file.
        FileNotFoundError: for a folder without (such) data files.

    Example:
        ```python
        >>> data_files(Path("data/prm800k"), split="phase2_train")
        [PosixPath('data/prm800k/phase2_train.jsonl')]
        ```
    """
    if path.is_file():
        if split is not None:
            raise ValueError(f"split selects files in a folder or a Hub split; {path} is a single file")
        return [path]
    files = sorted(file for file in path.iterdir() if file.is_file() and file.suffix in DATA_SUFFIXES)
    if split is not None:
        files = [file for file in files if re.search(rf"(^|[._-]){re.escape(split)}($|[._-])", file.name)]
    if not files:
        wanted = f" with {split!r} in their name" if split is not None else ""
        raise FileNotFoundError(f"{path}: no {'/'.join(DATA_SUFFIXES)} files{wanted}")
    return files


def hub_dataset_id(source: str | os.PathLike[str]) -> str:
    """``source`` as a Hub dataset id, for a source that is no local file or folder; else a FileNotFoundError."""
    if not hub_repo_id(source, namespaced=True):
        raise FileNotFoundError(f"{source}: no such file or folder, and not a Hub dataset id")
    return str(source)


def hub_split(repo_id: str, split: str | None = None, *, streaming: bool = False) -> tuple[str, Dataset | IterableDataset]:
    """One split of a Hub dataset (the only one when ``split`` is None), loaded or streamed, and its name.

    Raises:
        ValueError: the dataset has several splits and ``split`` is None.

    Example:
        ```python
        >>> name, stream = hub_split("user/pool", "train", streaming=True)
        ```
    """
    loaded = load_dataset(repo_id, split=split, streaming=streaming)
    if isinstance(loaded, (DatasetDict, IterableDatasetDict)):
        if len(loaded) != 1:
            raise ValueError(f"{repo_id} has splits {list(loaded)}; pick one with split=")
        split, loaded = next(iter(loaded.items()))
    return str(split or loaded.split or "train"), loaded


def dataset_records(dataset: Iterable[dict[str, Any]], source: str, name: str) -> Iterator[RawRecord]:
    """The rows of a (streamed) dataset as raw records of ``source`` (``"user/pool[train]"``), ids ``<name>-<n>``."""
    return (RawRecord(dict(row), source, index, name, index) for index, row in enumerate(dataset))


def record_format(record: RawRecord) -> str:
    """The format of a source, from its first record, or a ValueError naming the source and the record's keys."""
    format = infer_format_from_record(record.data)
    if format is None:
        raise ValueError(
            f"{record.source}: cannot infer the format from the keys {sorted(record.data)}; pass format= "
            f"(one of {', '.join(FORMATS)})"
        )
    return format


def _subsets(subset: str | Iterable[str] | None) -> tuple[str, ...] | None:
    if subset is None:
        return None
    subsets = (subset,) if isinstance(subset, str) else tuple(subset)
    unknown = [name for name in subsets if name not in PROCESSBENCH_SUBSETS]
    if unknown:
        raise ValueError(f"unknown ProcessBench subset(s) {unknown}; expected some of {PROCESSBENCH_SUBSETS}")
    return subsets


def _hub_records(
    repo_id: str, format: str | None, subsets: tuple[str, ...] | None, split: str | None
) -> tuple[str, Iterator[RawRecord]]:
    """Load a Hub dataset. ProcessBench names its splits after its subsets (one config per subset
    or one config for all: both layouts are read)."""
    format = format or HUB_FORMATS.get(repo_id)
    if format == "processbench":
        if split is not None:
            raise ValueError("ProcessBench's splits are its subsets; pick them with subset=")
        configs = get_dataset_config_names(repo_id)
        parts = [
            (name, load_dataset(repo_id, name if name in configs else None, split=name))
            for name in subsets or PROCESSBENCH_SUBSETS
        ]
    else:
        split, loaded = hub_split(repo_id, split)
        parts = [(split, loaded)]
        if format is None:
            format = record_format(RawRecord(loaded[0] if len(loaded) else {}, f"{repo_id}[{split}]", 0, split, 0))
    records = chain.from_iterable(dataset_records(dataset, f"{repo_id}[{name}]", name) for name, dataset in parts)
    return format, records
