"""What to do when a judge misbehaves: name each fault, log it without flooding, notice garbage, and give
up on one trajectory without giving up on the run."""

from __future__ import annotations

import re
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from transformers.utils import logging

from .base import JudgeFailure

logger = logging.get_logger(__name__)

_KIND = re.compile(r"HTTP \d{3}|malformed response|unparseable answer|judge server unreachable|[A-Z]\w*(?:Error|Timeout)")


def fault_kind(reason: str) -> str:
    """A short name for a failure reason (``HTTP 503``, ``InferenceTimeoutError``, ``unparseable answer``...)."""
    match = _KIND.search(reason)
    return match.group(0) if match else reason.split(":")[0][:60]


class RateLimitedLog:
    """Warnings about faults, at most one per kind every ``interval`` seconds, with how many were not shown.

    Args:
        interval: seconds between two warnings of the same kind.
    """

    def __init__(self, interval: float = 30.0):
        self.interval = interval
        self._last: dict[str, float] = {}
        self._unshown: Counter[str] = Counter()

    def warn(self, kind: str, message: str) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, float("-inf")) < self.interval:
            self._unshown[kind] += 1
            return
        unshown = self._unshown.pop(kind, 0)
        self._last[kind] = now
        logger.warning(message + (f" ({unshown} more {kind} since the last such warning)" if unshown else ""))


class GarbageJudgeError(RuntimeError):
    """Raised by `UnparseableWindow.record` when too many recent answers were unparseable."""


class UnparseableWindow:
    """The share of unparseable answers among a judge's last ``window`` items (an item whose retries all went
    unparsed counts as one); raises past ``max_rate``.

    A judge that answers garbage every time would otherwise be paid for every question and label nothing.

    Args:
        max_rate: largest tolerated share of unparseable answers in a full window (1 disables the check).
        window: how many recent items the share is taken over.
    """

    def __init__(self, max_rate: float = 0.5, window: int = 50):
        if not 0 < max_rate <= 1 or window < 1:
            raise ValueError(f"max_unparseable_rate must be in (0, 1] and the window >= 1, got {max_rate}, {window}")
        self.max_rate = max_rate
        self._recent: deque[bool] = deque(maxlen=window)
        self._sample = ""

    def record(self, parseable: bool, output: str) -> None:
        """Note one item's outcome and its (last) answer.

        Raises:
            GarbageJudgeError: the window is full and more than ``max_rate`` of it is unparseable; the message
                quotes the last unparseable answer.
        """
        self._recent.append(parseable)
        if not parseable:
            self._sample = output
        unparseable = self._recent.count(False)
        if self.max_rate < 1 and len(self._recent) == self._recent.maxlen and unparseable > self.max_rate * len(self._recent):
            sample = " ".join(self._sample.split())[:300]
            raise GarbageJudgeError(
                f"the judge's answers are unparseable: {unparseable} of its last {len(self._recent)} "
                f"(limit {self.max_rate:.0%}); it wrote for example {sample!r}"
            )


@dataclass
class FailedItems:
    """Trajectories the judge failed on while it kept answering others: one whose request failed is sent
    again in later judge batches, up to ``max_attempts`` failed batches in all; then, like one the judge
    answered unusably, it is skipped and recorded (never a label).

    Keys are the trainer's row indices; everything here is saved with the checkpoint.
    """

    attempts: dict[int, int] = field(default_factory=dict)
    """Failed batches so far of each trajectory still being retried."""
    skipped: dict[int, str] = field(default_factory=dict)
    """Trajectories given up on, with the last reason."""
    reasons: dict[str, int] = field(default_factory=dict)
    """Failures by kind (`fault_kind`), retried ones included."""

    def __post_init__(self):  # keys come back as strings from JSON
        self.attempts = {int(k): v for k, v in self.attempts.items()}
        self.skipped = {int(k): v for k, v in self.skipped.items()}

    def failed(self, row: int, failure: JudgeFailure, max_attempts: int, log: RateLimitedLog) -> bool:
        """Record that the judge failed on ``row``; ``True`` if it is to be asked again later."""
        kind = fault_kind(failure.reason)
        self.reasons[kind] = self.reasons.get(kind, 0) + 1
        self.attempts[row] = self.attempts.get(row, 0) + 1
        retry = failure.server_error and self.attempts[row] < max_attempts
        if not retry:
            del self.attempts[row]
            self.skipped[row] = failure.reason
        if retry:
            log.warn(kind, f"judge failed on trajectory {row} (will be asked again later): {failure.reason}")
        else:  # a final outcome: always told
            logger.warning(f"judge failed on trajectory {row} (skipped: it gets no label): {failure.reason}")
        return retry

    def succeeded(self, row: int) -> None:
        """``row`` got its label: it is no longer a failure."""
        self.attempts.pop(row, None)
        self.skipped.pop(row, None)
