"""Raw records as read from files or the Hub, the on-error policy, and rows -> `datasets.Dataset`.

Every loader reads :class:`RawRecord` objects (a JSON object plus where it came from), turns them
into canonical rows and hands the rows to :func:`build_dataset`. Bad records go through one
:class:`RecordErrors`, which raises at once (``on_error="raise"``) or collects them and ends the
load with a :class:`SkippedRecordsWarning` listing each one (``on_error="skip"``).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset, Features

from .schema import FEATURES, StepDataError

OnError = Literal["raise", "skip"]
DATA_SUFFIXES = (".json", ".jsonl", ".parquet")
T = TypeVar("T")


@dataclass(frozen=True)
class RawRecord:
    """One record of a source. ``location`` is how errors name it: a list index or ``"line N"``."""

    data: dict[str, Any]
    source: str
    location: int | str
    name: str
    """Short name of the source (file stem, Hub split) used to build ids: ``f"{name}-{ordinal}"``."""
    ordinal: int
    """0-based position among the source's records."""

    def error(self, field: str | None, message: str) -> StepDataError:
        """A `StepDataError` naming this record's source and location and ``field``."""
        return StepDataError(message, source=self.source, record=self.location, field=field)

    def require(self, field: str, kind: type | tuple[type, ...]) -> Any:
        """``data[field]``, checked to be present and an instance of ``kind``."""
        if field not in self.data:
            raise self.error(field, "missing")
        value = self.data[field]
        if not isinstance(value, kind) or isinstance(value, bool) and bool not in _as_tuple(kind):
            raise self.error(field, f"expected {_kind_name(kind)}, got {type(value).__name__}")
        return value

    def require_strings(self, field: str) -> list[str]:
        """``data[field]`` checked to be a list of strings."""
        value = self.require(field, (list, tuple))
        if not all(isinstance(item, str) for item in value):
            raise self.error(field, "expected a list of strings")
        return list(value)


class SkippedRecordsWarning(UserWarning):
    """Emitted at the end of a load that left records out; ``errors`` lists each one and why."""

    def __init__(self, source: str, errors: list[StepDataError]):
        self.source, self.errors = source, errors
        listing = "\n".join(f"  - {error}" for error in errors)
        super().__init__(f"{len(errors)} record(s) of {source} left out:\n{listing}")


# Every load that leaves records out says so, even when the same load is repeated in one process.
warnings.filterwarnings("always", category=SkippedRecordsWarning, append=True)


class RecordErrors:
    """The on-error policy of one load: raise at the first bad record, or collect and report."""

    def __init__(self, on_error: OnError):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.on_error = on_error
        self.left_out: list[StepDataError] = []

    def handle(self, error: StepDataError) -> None:
        """Raise ``error`` or, with ``on_error="skip"``, record it as skipped."""
        if self.on_error == "raise":
            raise error
        self.left_out.append(error)

    def note(self, error: StepDataError) -> None:
        """Record a record left out on purpose (not an error, e.g. a duplicate), whatever the policy."""
        self.left_out.append(error)

    def convert_each(
        self, records: Iterable[RawRecord], convert: Callable[[RawRecord], T]
    ) -> Iterator[tuple[RawRecord, T]]:
        """``(record, convert(record))`` for each record whose conversion does not fail."""
        for record in records:
            try:
                converted = convert(record)
            except StepDataError as error:
                self.handle(error)
                continue
            yield record, converted

    def report(self, source: str) -> None:
        """Warn with a `SkippedRecordsWarning` listing every record left out, if any."""
        if self.left_out:
            warnings.warn(SkippedRecordsWarning(source, self.left_out), stacklevel=3)


def read_records(path: Path, errors: RecordErrors) -> Iterator[RawRecord]:
    """The records of a ``.json`` list, a ``.jsonl`` file or a ``.parquet`` file, in order."""
    source, name = str(path), path.name.split(".")[0]
    if path.suffix == ".jsonl":
        with path.open("rb") as lines:
            records = ((f"line {number}", line) for number, line in enumerate(lines, start=1) if line.strip())
            for ordinal, (location, line) in enumerate(records):
                try:
                    data = json.loads(decode_utf8(line, source, location))
                except StepDataError as error:
                    errors.handle(error)
                    continue
                except json.JSONDecodeError as error:
                    errors.handle(StepDataError(f"invalid JSON: {error}", source=source, record=location))
                    continue
                yield from _as_records(data, source, location, name, ordinal, errors)
    elif path.suffix == ".json":
        try:
            items = json.loads(decode_utf8(path.read_bytes(), source, "top level"))
        except json.JSONDecodeError as error:
            raise StepDataError(f"invalid JSON: {error}", source=source, record=f"line {error.lineno}") from error
        if not isinstance(items, list):
            message = f"expected a JSON list of records, got {type(items).__name__}"
            raise StepDataError(message, source=source, record="top level")
        for index, data in enumerate(items):
            yield from _as_records(data, source, index, name, index, errors)
    elif path.suffix == ".parquet":
        for index, data in enumerate(pq.read_table(path).to_pylist()):
            yield RawRecord(data, source, index, name, index)
    else:
        raise ValueError(f"{path}: unsupported file type; expected one of {', '.join(DATA_SUFFIXES)}")


def decode_utf8(data: bytes, source: str, location: int | str) -> str:
    """``data`` as UTF-8 text; a `StepDataError` naming the source, the record and the bad byte otherwise."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        message = f"not UTF-8: byte {data[error.start]:#04x} at offset {error.start} ({error.reason}); re-encode the file as UTF-8"
        raise StepDataError(message, source=source, record=location) from None


def _as_records(
    data: Any, source: str, location: int | str, name: str, ordinal: int, errors: RecordErrors
) -> Iterator[RawRecord]:
    if isinstance(data, dict):
        yield RawRecord(data, source, location, name, ordinal)
    else:
        message = f"expected a JSON object, got {type(data).__name__}"
        errors.handle(StepDataError(message, source=source, record=location))


def build_dataset(rows: list[dict[str, Any]], source: str) -> Dataset:
    """A `Dataset` of canonical rows: the `FEATURES` columns first, then any extra columns.

    Extra columns keep the order they first appear in and the types Arrow infers for them; a
    row without one of them gets ``None`` there.
    """
    extra_names = list(dict.fromkeys(key for row in rows for key in row if key not in FEATURES))
    columns = {name: [row.get(name) for row in rows] for name in [*FEATURES, *extra_names]}
    extra_features = {}
    for name in extra_names:
        try:
            arrow_type = pa.array(columns[name]).type
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            message = f"values of incompatible types across records: {error}"
            raise StepDataError(message, source=source, record="(several)", field=name) from error
        extra_features[name] = Features.from_arrow_schema(pa.schema([(name, arrow_type)]))[name]
    return Dataset.from_dict(columns, features=Features({**FEATURES, **extra_features}))


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in _as_tuple(kind))
