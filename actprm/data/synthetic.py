"""Synthetic multi-step arithmetic word problems with errors injected at known steps.

Every problem is a chain of events acting on one quantity ("Mia has 12 shells. She finds 7
more. ..."). A solution states one equation per event and then the answer. An erroneous solution
has exactly one injected error, at a known step, of one of these kinds:

- ``wrong_result``: the equation's result is off;
- ``wrong_operand``: the event's quantity is replaced by another number;
- ``wrong_operation``: the event is applied with the wrong operator;
- ``dropped_quantity``: the step skips an event, so its quantity never enters the total.

Steps after the error carry the wrong running total forward, as real solutions do.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from dataclasses import dataclass
from typing import Iterator

from datasets import Dataset

from .schema import FEATURES, step_labels_from_label

ERROR_KINDS = ("wrong_result", "wrong_operand", "wrong_operation", "dropped_quantity")
SPLITS = ("pool", "test")

NAMES = [("Mia", "She"), ("Tom", "He"), ("Ana", "She"), ("Leo", "He"), ("Zoe", "She"), ("Sam", "He")]
ITEMS = ["apples", "shells", "stickers", "marbles", "coins", "books", "cards", "pencils"]


@dataclass(frozen=True)
class Event:
    """One event of a problem: its wording in the problem, in a step, and the arithmetic."""

    operator: str
    operand: int
    problem_text: str
    step_text: str


EVENT_WORDING = {
    "+": [("{Pronoun} buys {x} more.", "{name} buys {x} more"), ("{Pronoun} finds {x} more.", "{name} finds {x} more")],
    "-": [("{Pronoun} gives away {x}.", "{name} gives away {x}"), ("{Pronoun} loses {x}.", "{name} loses {x}")],
    "*": [("Then {pronoun} ends up with {x} times as many.", "{name} ends up with {x} times as many")],
    "/": [("Then {pronoun} splits them into {x} equal groups and keeps one group.", "{name} keeps one of {x} equal groups")],
}


def apply(operator: str, left: int, right: int) -> int:
    """The exact result of ``left operator right`` for the four operators used here."""
    if operator == "+":
        return left + right
    if operator == "-":
        return left - right
    if operator == "*":
        return left * right
    return left // right


def _sample_event(rng: random.Random, value: int, name: str, pronoun: str) -> tuple[Event, int]:
    choices = ["+", "+"] + (["-", "-"] if value > 3 else [])
    if value <= 60:
        choices.append("*")
    divisors = [d for d in (2, 3, 4, 5) if value % d == 0 and value // d > 1]
    if divisors:
        choices.append("/")
    operator = rng.choice(choices)
    if operator == "+":
        operand = rng.randint(2, 20)
    elif operator == "-":
        operand = rng.randint(1, min(20, value - 2))
    elif operator == "*":
        operand = rng.randint(2, 4)
    else:
        operand = rng.choice(divisors)
    problem_fmt, step_fmt = rng.choice(EVENT_WORDING[operator])
    fields = {"x": operand, "name": name, "pronoun": pronoun.lower(), "Pronoun": pronoun}
    event = Event(operator, operand, problem_fmt.format(**fields), step_fmt.format(**fields))
    return event, apply(operator, value, operand)


def _other(rng: random.Random, value: int, low: int = 1) -> int:
    """A number close to ``value`` but different from it, at least ``low``."""
    candidates = [v for v in range(value - 5, value + 6) if v != value and v >= low]
    return rng.choice(candidates)


def _pick_error(rng: random.Random, events: list[Event], error_rate: float) -> tuple[str | None, int]:
    """The kind and step of the error to inject (``(None, -1)`` for a correct solution).

    A quantity can only be dropped before the last event, and only where the next event is not the
    same operation on the same number: skipping one of two identical events reads the same whichever
    is skipped, so its first wrong step would be ambiguous.
    """
    if rng.random() >= error_rate:
        return None, -1
    droppable = [
        i for i in range(len(events) - 1) if (events[i].operator, events[i].operand) != (events[i + 1].operator, events[i + 1].operand)
    ]
    kind = rng.choice(ERROR_KINDS if droppable else ERROR_KINDS[:-1])
    return kind, rng.choice(droppable) if kind == "dropped_quantity" else rng.randrange(len(events))


def _make_example(rng: random.Random, example_id: str, error_rate: float) -> dict:
    name, pronoun = rng.choice(NAMES)
    item = rng.choice(ITEMS)
    start = rng.randint(3, 30)
    events, value = [], start
    for _ in range(rng.randint(2, 5)):
        event, value = _sample_event(rng, value, name, pronoun)
        events.append(event)
    problem = " ".join(
        [f"{name} has {start} {item}."]
        + [e.problem_text for e in events]
        + [f"How many {item} does {name} have at the end?"]
    )

    kind, error_step = _pick_error(rng, events, error_rate)
    steps, total, index = [], start, 0
    while index < len(events):
        event = events[index]
        operator, operand = event.operator, event.operand
        if index == error_step and kind == "dropped_quantity":
            index += 1  # the solution skips this event entirely
            event = events[index]
            operator, operand = event.operator, event.operand
        elif index == error_step and kind == "wrong_operand":
            if operator == "/":
                divisors = [d for d in (2, 3, 4, 5, 6) if total % d == 0 and d != operand]
                operand = rng.choice(divisors) if divisors else operand + 1
            else:
                operand = _other(rng, operand, low=2 if operator == "*" else 1)
        elif index == error_step and kind == "wrong_operation":
            operator = {"+": "-", "-": "+", "*": "+", "/": "*"}[operator]
        result = apply(operator, total, operand)
        if index == error_step and kind == "wrong_result":
            result = _other(rng, result, low=0)
        steps.append(f"{event.step_text}: {total} {operator} {operand} = {result}.")
        total, index = result, index + 1
    steps.append(f"The answer is {total}.")

    label = -1 if error_step < 0 else error_step
    return {
        "id": example_id,
        "problem": problem,
        "steps": steps,
        "label": label,
        "step_labels": step_labels_from_label(label, len(steps)),
        "error_kind": kind or "none",
    }


def _split_of(problem: str) -> str:
    """The split a problem belongs to, from a hash of its text: no problem is in both splits."""
    return SPLITS[hashlib.sha256(problem.encode()).digest()[0] % 2]


def iter_arithmetic_examples(seed: int = 0, *, split: str = "pool", error_rate: float = 0.5) -> Iterator[dict]:
    """An endless, reproducible stream of the rows `make_arithmetic_dataset` returns (its first ``n``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0 <= error_rate <= 1:
        raise ValueError(f"error_rate must be in [0, 1], got {error_rate}")
    rng = random.Random(f"actprm-arithmetic-{seed}-{split}")
    for index in itertools.count():
        while _split_of((row := _make_example(rng, f"arith-{split}-{seed}-{index}", error_rate))["problem"]) != split:
            pass
        yield row


def make_arithmetic_dataset(n: int, seed: int = 0, *, split: str = "pool", error_rate: float = 0.5) -> Dataset:
    """``n`` synthetic arithmetic problems with solutions, about ``error_rate`` of them erroneous.

    Args:
        n: number of problems.
        seed: the same ``(n, seed, split, error_rate)`` always gives the same dataset.
        split: ``"pool"`` (training pool) or ``"test"``: each problem text belongs to one split only.
        error_rate: fraction of solutions with one injected error.

    Returns:
        A dataset in the canonical schema with an extra ``error_kind`` column (``"none"`` or one of
        `ERROR_KINDS`).

    Example:
        ```py
        >>> from actprm import make_arithmetic_dataset
        >>> pool = make_arithmetic_dataset(100, seed=0, split="pool", error_rate=0.5)
        >>> test = make_arithmetic_dataset(20, split="test")  # problems never in the pool
        >>> pool.num_rows, test.num_rows
        (100, 20)
        ```
    """
    rows = list(itertools.islice(iter_arithmetic_examples(seed, split=split, error_rate=error_rate), n))
    features = FEATURES.copy()
    features["error_kind"] = FEATURES["id"]
    return Dataset.from_list(rows, features=features)
