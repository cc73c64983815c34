"""The judge interface: a batch of (problem, steps) in, one annotation or one recorded failure out."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

from ..data.schema import step_labels_from_label, validate_record
from .cache import JudgeCache


@dataclass(frozen=True)
class Annotation:
    """A judge's verdict on one trajectory.

    Attributes:
        first_error: 0-based index of the first wrong step, ``-1`` when every step is correct.
        step_labels: one entry per step (1 good, 0 wrong, None unknown).
        tokens: what the judge spent on this answer when it was made (prompt + completion, every
            attempt and sample included). A cached annotation cost nothing this time.
        raw_output: the judge's own text (for LLM judges, what the model wrote).
        judge: identity of the judge that made it (see `Judge.identity`).
        prompt_version: version of the critique prompt, ``None`` for judges without a prompt.
        cached: whether it came from the cache rather than from the judge, paid for by someone else: an
            answer the cache's `~JudgeCache.payer` paid for this very item (before a crash) is not cached.
    """

    first_error: int
    step_labels: list[int | None]
    tokens: int
    raw_output: str
    judge: str
    prompt_version: str | None = None
    cached: bool = False


@dataclass(frozen=True)
class JudgeFailure:
    """A trajectory the judge could not label: never to be used as a label.

    Attributes:
        reason: why (unparseable answer, request error, missing label...).
        raw_output: the last answer received, or the error text when none came.
        attempts: how many times the judge was asked.
        tokens: what those attempts spent.
        judge: identity of the judge.
        server_error: no answer came back (connection, timeout, HTTP error): asking again later may
            work. ``False`` when the judge answered unusably.
        judge_down: the judge as a whole stopped answering, or answers only garbage: this item was not
            really tried, and nothing more should be asked until the judge is fixed.
    """

    reason: str
    raw_output: str
    attempts: int
    tokens: int
    judge: str
    server_error: bool = False
    judge_down: bool = False


JudgeResult = Annotation | JudgeFailure


@dataclass
class JudgeStats:
    """Running counters of one judge instance, for logging and budgets.

    Update them with `add` and `add_fault`: several batches may be judged at once, from several threads.
    """

    items: int = 0
    """Trajectories asked for, cache hits included."""
    requests: int = 0
    """Calls to the underlying model or server (retries and samples included)."""
    cache_hits: int = 0
    annotations: int = 0
    """New annotations (cache hits excluded)."""
    failures: int = 0
    tokens: int = 0
    """Tokens spent by this instance (cache hits cost nothing)."""
    faults: dict[str, int] = field(default_factory=dict)
    """Failed requests by kind (``HTTP 503``, ``InferenceTimeoutError``...), retried ones included."""

    def __post_init__(self):
        self._lock = threading.Lock()

    def add(self, **counts: int) -> None:
        """Add ``counts`` to the counters of those names, as one update no other thread interleaves with."""
        with self._lock:
            for name, count in counts.items():
                setattr(self, name, getattr(self, name) + count)

    def add_fault(self, kind: str) -> None:
        """Count one failed request of ``kind``."""
        with self._lock:
            self.faults[kind] = self.faults.get(kind, 0) + 1


class JudgeUnavailableError(RuntimeError):
    """The judge cannot answer at all (server down, wrong model name, bad key)."""


def content_hash(value: Any) -> str:
    """SHA-256 of the canonical JSON form of ``value``."""
    return hashlib.sha256(json.dumps(value, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


Emit = Callable[[int, JudgeResult], None]


def _item_id(record: Mapping[str, Any]) -> str | None:
    return str(record["id"]) if record.get("id") is not None else None


class Judge(ABC):
    """Base class of every judge: validation, cache lookups and counters live here.

    Subclasses implement `identity` and `_annotate`, which judges the items the cache did not
    answer and hands each result to ``emit`` as soon as it has it, so that an answer is cached the
    moment it arrives and a crash mid-batch loses nothing already paid for.

    Args:
        cache_path: sqlite file of a `JudgeCache` shared by runs and processes; ``None`` disables
            caching.
    """

    prompt_version: str | None = None
    concurrent_batches: bool = False
    """Whether `annotate` may run for several batches at once (from several threads)."""

    def __init__(self, *, cache_path: str | os.PathLike | None = None):
        self.cache = JudgeCache(cache_path) if cache_path is not None else None
        self.stats = JudgeStats()

    @property
    @abstractmethod
    def identity(self) -> str:
        """Everything that changes the answers (model, prompt version, sampling); the cache key."""

    def check_available(self) -> None:
        """Raise `JudgeUnavailableError` if the judge cannot answer. Local judges always can."""

    def question_key(self, item: Mapping[str, Any]) -> str:
        """Hash of what the judge is asked about ``item``; with `identity`, the cache key."""
        return content_hash({"problem": item["problem"], "steps": list(item["steps"])})

    def annotate(self, items: Sequence[Mapping[str, Any]]) -> list[JudgeResult]:
        """Judge each item (a mapping with ``problem`` and ``steps``), in order.

        Raises:
            StepDataError: an item does not fit the canonical schema.
        """
        source = f"{type(self).__name__}.annotate input"
        records = [validate_record(item, source=source, index=item.get("id", i)) for i, item in enumerate(items)]
        results: list[JudgeResult | None] = [None] * len(records)
        keys = [self.question_key(record) for record in records]
        identity = self.identity
        self.stats.add(items=len(records))

        pending: dict[str, list[int]] = {}  # question -> the items asking it, each question asked once
        for i, key in enumerate(keys):
            cached = self.cache.get(identity, key) if self.cache is not None else None
            if cached is None:
                pending.setdefault(key, []).append(i)
            else:
                own = self.cache.payer is not None and self.cache.paid_by(identity, key) == (
                    self.cache.payer, _item_id(records[i])
                )
                results[i] = Annotation(**cached, judge=identity, cached=not own)
                self.stats.add(cache_hits=1)
        questions = list(pending)

        def emit(position: int, result: JudgeResult) -> None:
            first, *repeats = pending[questions[position]]
            results[first] = result
            for index in repeats:  # the same question asked again in the batch: paid once, answered from the first
                results[index] = replace(result, cached=True) if isinstance(result, Annotation) else result
            is_annotation = isinstance(result, Annotation)
            self.stats.add(tokens=result.tokens, annotations=int(is_annotation), failures=int(not is_annotation))
            if is_annotation and self.cache is not None:
                self.cache.put(identity, questions[position], asdict(result), _item_id(records[first]))

        if questions:
            self._annotate([records[pending[key][0]] for key in questions], emit)
        missing = [records[i]["id"] for i, result in enumerate(results) if result is None]
        if missing:
            raise RuntimeError(f"{type(self).__name__} returned no result for items {missing}")
        return results  # type: ignore[return-value]

    @abstractmethod
    def _annotate(self, items: Sequence[dict[str, Any]], emit: Emit) -> None:
        """Judge validated records; call ``emit(position, result)`` once per item, in any order."""

    def _annotation(
        self,
        item: Mapping[str, Any],
        first_error: int,
        *,
        tokens: int,
        raw_output: str,
        step_labels: Sequence[int | None] | None = None,
    ) -> Annotation:
        """An `Annotation` by this judge; ``step_labels`` default to those implied by ``first_error``."""
        if step_labels is None:
            step_labels = step_labels_from_label(first_error, len(item["steps"]))
        return Annotation(first_error, list(step_labels), tokens, raw_output, self.identity, self.prompt_version)

    def _failure(
        self,
        reason: str,
        *,
        raw_output: str = "",
        attempts: int = 1,
        tokens: int = 0,
        server_error: bool = False,
        judge_down: bool = False,
    ) -> JudgeFailure:
        return JudgeFailure(reason, raw_output, attempts, tokens, self.identity, server_error, judge_down)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity!r})"
