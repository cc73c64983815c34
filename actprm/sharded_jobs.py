"""Resumable jobs in an output folder, shared by the processes that ``accelerate launch`` started.

The benchmark runs (`actprm.evaluation`), the pool filter (`actprm.filtering`) and the judge's
benchmark (`actprm.judge_evaluation`) each keep their work in an ``output_dir`` that a rerun resumes:

- `check_settings`: the settings the work was done with are kept in a JSON file there, and a rerun
  with other settings is refused (its results would not be comparable);
- `take_turns`: each process gets its share of the units of work, the k-th to process ``k % N``;
- `write_json` and `read_jsonl`: done markers are written whole (a temporary file and a rename) and
  lines appended one by one are read back without a line that a crash cut short.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from .distributed import process_state

logger = logging.getLogger(__name__)

Item = TypeVar("Item")


def check_settings(
    output_dir: str | os.PathLike[str],
    file_name: str,
    settings: Any,
    *,
    what: str,
    describe: Callable[[Any], str] | None = None,
) -> None:
    """Refuse an ``output_dir`` whose ``file_name`` holds other settings; else keep ``settings`` there.

    Every process checks; the main one writes the file (creating ``output_dir``) when it is missing.

    Args:
        output_dir: the job's folder.
        file_name: the JSON file in it that keeps the settings.
        settings: what the job's results depend on (JSON-serialisable).
        what: what the folder holds under other settings, for the error ("predictions of another scorer").
        describe: the difference, from the settings found; by default the keys of a dict that differ.

    Raises:
        ValueError: ``output_dir`` holds the work of other settings.

    Example:
        ```python
        >>> check_settings("runs/filter", "filter.json", {"strategy": "actprm"}, what="a filter run with other settings")
        ```
    """
    state = process_state()
    output_dir = Path(output_dir)
    path = output_dir / file_name
    if path.exists():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous != settings:
            detail = (describe or _differing_keys(settings))(previous)
            raise ValueError(f"{output_dir} holds {what} ({detail}): pick another output directory")
    state.wait_for_everyone()
    if state.is_main_process and not path.exists():
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json(path, settings)
    state.wait_for_everyone()


def _differing_keys(settings: dict[str, Any]) -> Callable[[dict[str, Any]], str]:
    return lambda previous: ", ".join(sorted(k for k in settings if previous.get(k) != settings[k])) + " differ"


def take_turns(items: Iterable[Item]) -> Iterator[Item]:
    """This process's share of ``items``: the k-th goes to process ``k % N``, all of them in a single process.

    ``items`` is read lazily, ``N`` at a time (each window dealt by `PartialState.split_between_processes`,
    one item per process), so a stream of unknown length is shared as it is read, and a list sorted by
    size (ProcessBench's subsets) gives every process a similar load.

    Example:
        ```python
        >>> list(take_turns(["a", "b", "c"]))  # under `accelerate launch --num_processes 2`: process 1
        ['b']
        ```
    """
    state = process_state()
    iterator = iter(items)
    while window := list(islice(iterator, state.num_processes)):
        with state.split_between_processes(window) as share:
            yield from share


def write_json(path: Path, content: Any) -> None:
    """Write ``content`` to ``path`` whole or not at all (a temporary file, then a rename)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a JSON-lines file appended to as work got done; a line cut short by a crash is skipped."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s, line %d: not JSON (an interrupted write?); its item is done again", path, number)
