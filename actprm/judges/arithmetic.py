"""`ArithmeticJudge`: checks the synthetic arithmetic problems step by step with a real evaluator.

It reads the events off the problem text (the wordings of `actprm.data.synthetic.EVENT_WORDING`),
keeps the correct running total, and names the first step whose equation is false, whose left
operand is not the running total, whose operator or operand is not the event's, or whose wording
describes another event; the final "The answer is N." must state the correct total.
"""

from __future__ import annotations

import ast
import operator
import os
import re
import string
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Sequence

from ..data.synthetic import EVENT_WORDING
from .base import Emit, Judge

_OPERATORS: dict[type[ast.operator], tuple[str, Callable[[Fraction, Fraction], Fraction]]] = {
    ast.Add: ("+", operator.add),
    ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", operator.mul),
    ast.Div: ("/", operator.truediv),
}


class UnreadableStepError(ValueError):
    """Text the arithmetic judge cannot read."""


def _parse(expression: str) -> ast.expr:
    try:
        return ast.parse(expression.strip(), mode="eval").body
    except SyntaxError as error:
        raise UnreadableStepError(f"not an expression: {expression!r}") from error


def _value(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_value(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)][1](_value(node.left), _value(node.right))
    raise UnreadableStepError(f"unsupported expression: {ast.unparse(node)!r}")


def evaluate(expression: str) -> Fraction:
    """Exact value of an expression of integers, ``+ - * /``, unary minus and parentheses.

    Raises:
        UnreadableStepError: anything else (names, calls, floats, syntax errors).
        ZeroDivisionError: a division by zero.
    """
    return _value(_parse(expression))


@dataclass(frozen=True)
class _Event:
    operator: str
    operand: int
    description: str
    """How a correct step describes the event."""


def _template_pattern(template: str) -> str:
    """A regex for a `str.format` template of `EVENT_WORDING`, capturing ``x`` and ``name``."""
    fields = {"x": r"(?P<x>\d+)", "name": r"(?P<name>\w+)", "pronoun": r"(?:he|she)", "Pronoun": r"(?:He|She)"}
    return "".join(
        re.escape(literal) + (fields[name] if name else "")
        for literal, name, _, _ in string.Formatter().parse(template)
    )


_APPLY = dict(_OPERATORS.values())

_EVENT_PATTERNS = [
    (re.compile(_template_pattern(problem_template)), operator_symbol, step_template)
    for operator_symbol, wordings in EVENT_WORDING.items()
    for problem_template, step_template in wordings
]
_OPENING = re.compile(r"(?P<name>\w+) has (?P<start>\d+) (?P<item>\w+)\.")
_QUESTION = re.compile(r"How many \w+ does \w+ have at the end\?")
_EQUATION_STEP = re.compile(r"(?P<description>[^:=]+):(?P<left>[^=]+)=(?P<right>[^=]+)\.")
_ANSWER_STEP = re.compile(r"The answer is (?P<answer>-?\d+)\.")


def _read_problem(problem: str) -> tuple[int, list[_Event]]:
    """The starting quantity and the events of a synthetic problem."""
    sentences = re.split(r"(?<=[.?])\s+", problem.strip())
    opening = _OPENING.fullmatch(sentences[0])
    if opening is None or len(sentences) < 2 or _QUESTION.fullmatch(sentences[-1]) is None:
        raise UnreadableStepError(f"not a synthetic arithmetic problem: {problem!r}")
    name, events = opening["name"], []
    for sentence in sentences[1:-1]:
        for pattern, operator_symbol, step_template in _EVENT_PATTERNS:
            match = pattern.fullmatch(sentence)
            if match:
                operand = int(match["x"])
                description = step_template.format(name=name, x=operand)
                events.append(_Event(operator_symbol, operand, description))
                break
        else:
            raise UnreadableStepError(f"unknown event: {sentence!r}")
    return int(opening["start"]), events


def _check_equation(step: str, event: _Event, total: Fraction) -> str | None:
    """What is wrong with ``step`` as the step for ``event`` from ``total``, or ``None``."""
    if _ANSWER_STEP.fullmatch(step.strip()):
        return f"states the answer before the event {event.description!r}"
    match = _EQUATION_STEP.fullmatch(step.strip())
    if match is None:
        raise UnreadableStepError(f"not an equation step: {step!r}")
    left = _parse(match["left"])
    if not (isinstance(left, ast.BinOp) and type(left.op) in _OPERATORS):
        raise UnreadableStepError(f"expected 'a op b' before '=', got {match['left'].strip()!r}")
    first, second = _value(left.left), _value(left.right)
    symbol = _OPERATORS[type(left.op)][0]
    try:
        holds = _value(left) == evaluate(match["right"])
    except ZeroDivisionError:
        holds = False
    if match["description"].strip() != event.description:
        return f"describes {match['description'].strip()!r}, but the event is {event.description!r}"
    if first != total:
        return f"starts from {first}, but the running total is {total}"
    if (symbol, second) != (event.operator, event.operand):
        return f"applies {symbol} {second}, but the event is {event.operator} {event.operand}"
    if not holds:
        return f"{match['left'].strip()} is not {match['right'].strip()}"
    return None


def first_arithmetic_error(problem: str, steps: Sequence[str]) -> tuple[int, str]:
    """Index of the first wrong step (``-1`` if none) and a line per checked step explaining it.

    Raises:
        UnreadableStepError: the problem or a step up to the first error cannot be read, or the
            solution ends before stating its answer.
    """
    start, events = _read_problem(problem)
    total = Fraction(start)
    report = []
    for index, step in enumerate(steps):
        if index < len(events):
            event = events[index]
            mistake = _check_equation(step, event, total)
            total = _APPLY[event.operator](total, Fraction(event.operand))
        elif index == len(events):
            answer = _ANSWER_STEP.fullmatch(step.strip())
            if answer is None:
                raise UnreadableStepError(f"step {index} should state the answer: {step!r}")
            mistake = None if int(answer["answer"]) == total else f"the answer is {total}"
        else:
            mistake = "a step after the answer"
        if mistake is not None:
            report.append(f"step {index}: wrong: {mistake}")
            return index, "\n".join(report)
        report.append(f"step {index}: correct")
    if len(steps) <= len(events):
        raise UnreadableStepError("the solution ends before stating its answer")
    return -1, "\n".join(report)


class ArithmeticJudge(Judge):
    """The embedded default's judge: exact checking of the synthetic arithmetic solutions.

    Its ``raw_output`` explains the verdict step by step. A problem or step it cannot read becomes
    a `JudgeFailure`. Each item counts as one request and no tokens.

    Example:
        ```py
        >>> from actprm import ArithmeticJudge, make_arithmetic_dataset
        >>> items = make_arithmetic_dataset(2, error_rate=0.0).to_list()
        >>> [annotation.first_error for annotation in ArithmeticJudge().annotate(items)]
        [-1, -1]
        ```
    """

    def __init__(self, *, cache_path: str | os.PathLike | None = None):
        super().__init__(cache_path=cache_path)

    @property
    def identity(self) -> str:
        return "arithmetic"

    def _annotate(self, items: Sequence[dict[str, Any]], emit: Emit) -> None:
        for position, item in enumerate(items):
            self.stats.add(requests=1)
            try:
                first_error, report = first_arithmetic_error(item["problem"], item["steps"])
            except UnreadableStepError as error:
                emit(position, self._failure(f"unreadable: {error}"))
            else:
                emit(position, self._annotation(item, first_error, tokens=0, raw_output=report))
