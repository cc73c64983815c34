"""`JudgePipeline`: judge batches sent in the background while training goes on, answers taken in order.

The trainer sends each batch of selected rows with `send` and takes the answered batches with
`answered`, oldest first. At most ``max_batches_in_flight`` batches are outstanding: sending one more
first waits for the oldest. With ``max_batches_in_flight=0`` every batch is judged where it is sent,
in the calling thread (the synchronous mode, for debugging). A judge error is raised where the
batch's answers are taken, as the judge raised it.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from .judges import JudgeResult

Annotate = Callable[[Sequence[dict[str, Any]]], list[JudgeResult]]
"""One judge call per batch: items in, one result per item out (`Judge.annotate`)."""


@dataclass
class _Batch:
    rows: list[int]
    answers: Future[list[JudgeResult]]


class JudgePipeline:
    """Judge calls running beside the caller, at most ``max_batches_in_flight`` at a time.

    Args:
        annotate: the per-batch judge call, run on a worker thread (or inline when synchronous).
        max_batches_in_flight: bound on outstanding batches; ``0`` judges each batch inline.
        workers: batches judged at once; more than one only for judges that allow concurrent calls.
    """

    def __init__(self, annotate: Annotate, max_batches_in_flight: int, workers: int = 1):
        if max_batches_in_flight < 0:
            raise ValueError(f"max_batches_in_flight must be >= 0, got {max_batches_in_flight}")
        self.annotate = annotate
        self.max_batches_in_flight = max_batches_in_flight
        self.workers = max(1, min(workers, max_batches_in_flight))
        self._executor: ThreadPoolExecutor | None = None
        self._batches: deque[_Batch] = deque()

    @property
    def synchronous(self) -> bool:
        return self.max_batches_in_flight == 0

    @property
    def batches_in_flight(self) -> int:
        """Batches sent whose answers have not been taken yet."""
        return len(self._batches)

    @property
    def rows_in_flight(self) -> list[int]:
        """Rows sent whose answers have not been taken yet, oldest batch first."""
        return [row for batch in self._batches for row in batch.rows]

    def send(self, rows: list[int], items: Sequence[dict[str, Any]]) -> None:
        """Send one batch (``items`` describe ``rows``). Waits for room first; judges inline when synchronous."""
        if self.synchronous:
            answers: Future[list[JudgeResult]] = Future()
            answers.set_result(self.annotate(items))
        else:
            if len(self._batches) >= self.max_batches_in_flight:
                self._batches[0].answers.exception()  # wait for the oldest, without raising its error here
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="actprm-judge")
            answers = self._executor.submit(self.annotate, items)
        self._batches.append(_Batch(list(rows), answers))

    def answered(self, max_outstanding: int | None = None) -> Iterator[tuple[list[int], list[JudgeResult]]]:
        """Take the batches that are answered, oldest first, as ``(rows, results)``.

        Args:
            max_outstanding: first wait until at most this many batches are left unanswered
                (``0``: every batch); ``None`` never waits.
        """
        while self._batches and (
            self._batches[0].answers.done() or (max_outstanding is not None and len(self._batches) > max_outstanding)
        ):
            batch = self._batches.popleft()
            yield batch.rows, batch.answers.result()

    def close(self) -> None:
        """Stop the worker threads after the calls already running (their answers are in the judge's cache)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._batches.clear()
