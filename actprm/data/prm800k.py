"""PRM800K: rated steps (raw OpenAI jsonl or the step-rated parquet) -> labelled trajectories.

Both formats come down to rated steps: a step's text, the steps before it and its human rating.
In the raw format (one labelled solution per line) every completion offered at a step is rated,
and the solution goes on with the chosen completion (or the labeller's own step, when
``chosen_completion`` is null). The step-rated parquet holds one row per rated step:
``responses`` (the steps before), ``next_response`` (the step) and ``rating``.

The rated steps of a problem form a tree of prefixes. Each maximal path (a leaf: a step that no
rated step continues) is one trajectory, so every alternative completion ends a trajectory of its
own and identical paths, from different labellers too, appear once. Step labels follow the
ratings: 1 -> 1, -1 -> 0, neutral 0 -> None; a human-written step (rating null) -> None. When
several ratings of the same step disagree (75 of the 45k distinct steps of phase 1 train), the
step is None (unknown). ``label`` is the first -1 step, else -1 when some step is rated 1.
Ids are ``<file stem>-<problem>-<trajectory>``, numbered in order of first appearance.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable

from .records import RawRecord, RecordErrors
from .schema import first_error_from_step_labels

STEP_LABEL_OF_RATING = {1: 1, -1: 0, 0: None, None: None}
_UNRATED = object()


@dataclass(frozen=True)
class RatedStep:
    """One rated step: ``text`` written after the ``prefix`` steps of ``problem``'s solution."""

    name: str
    problem: str
    prefix: tuple[str, ...]
    text: str
    step_label: int | None


def convert_prm800k(records: Iterable[RawRecord], errors: RecordErrors) -> list[dict[str, Any]]:
    """Canonical trajectories of PRM800K records, raw jsonl lines or parquet rows (see module doc)."""
    return trajectories(step for _, steps in errors.convert_each(records, rated_steps) for step in steps)


def rated_steps(record: RawRecord) -> list[RatedStep]:
    """The rated steps of one record: a parquet row gives one, a raw jsonl line all of its own."""
    if "next_response" in record.data:
        return [_rated_row(record)]
    return _rated_solution(record)


def _rated_row(record: RawRecord) -> RatedStep:
    problem, prefix = record.require("instruction", str), record.require_strings("responses")
    text = record.require("next_response", str)
    if "rating" not in record.data:
        raise record.error("rating", "missing")
    return RatedStep(record.name, problem, tuple(prefix), text, _step_label(record, "rating", record.data["rating"]))


def _rated_solution(record: RawRecord) -> list[RatedStep]:
    question, label = record.require("question", dict), record.require("label", dict)
    problem, steps = question.get("problem"), label.get("steps")
    if not isinstance(problem, str):
        raise record.error("question.problem", "expected a string")
    if not isinstance(steps, list):
        raise record.error("label.steps", "expected a list")
    rated, prefix = [], ()
    for number, step in enumerate(steps):
        field = f"label.steps[{number}]"
        if not isinstance(step, dict):
            raise record.error(field, f"expected an object, got {type(step).__name__}")
        completions = step.get("completions") or []
        if not isinstance(completions, list) or not all(_is_completion(c) for c in completions):
            raise record.error(f"{field}.completions", "expected a list of {'text', 'rating'} objects")
        for index, completion in enumerate(completions):
            step_label = _step_label(record, f"{field}.completions[{index}].rating", completion.get("rating"))
            rated.append(RatedStep(record.name, problem, prefix, completion["text"], step_label))
        human_text = _human_text(record, f"{field}.human_completion", step.get("human_completion"))
        if human_text is not None:
            rated.append(RatedStep(record.name, problem, prefix, human_text, None))
        chosen = step.get("chosen_completion")
        if chosen is not None:
            if isinstance(chosen, bool) or not isinstance(chosen, int) or not 0 <= chosen < len(completions):
                message = f"{chosen!r} is not an index of the {len(completions)} completions"
                raise record.error(f"{field}.chosen_completion", message)
            prefix += (completions[chosen]["text"],)
        elif human_text is not None:
            prefix += (human_text,)
        else:  # nothing chosen: the labelling stopped here
            break
    return rated


def _is_completion(completion: Any) -> bool:
    return isinstance(completion, dict) and isinstance(completion.get("text"), str)


def _human_text(record: RawRecord, field: str, human: Any) -> str | None:
    text = human.get("text") if isinstance(human, dict) else human
    if human is not None and not isinstance(text, str):
        raise record.error(field, "expected null, a string or a {'text': ...} object")
    return text


def _step_label(record: RawRecord, field: str, rating: Any) -> int | None:
    if isinstance(rating, float) and rating.is_integer():
        rating = int(rating)
    if isinstance(rating, bool) or rating not in STEP_LABEL_OF_RATING:
        raise record.error(field, f"expected a rating of 1, 0, -1 or null, got {rating!r}")
    return STEP_LABEL_OF_RATING[rating]


def trajectories(steps: Iterable[RatedStep]) -> list[dict[str, Any]]:
    """One canonical row per maximal path of each problem's prefix tree (see module doc)."""
    roots: dict[tuple[str, str], int] = {}
    child_of: dict[tuple[int, str], int] = {}
    parent: list[int] = []
    text: list[str] = []
    step_label: list[Any] = []
    has_children: list[bool] = []

    def node(parent_node: int, step_text: str) -> int:
        key = (parent_node, step_text)
        if key not in child_of:
            child_of[key] = len(parent)
            parent.append(parent_node)
            text.append(step_text)
            step_label.append(_UNRATED)
            has_children.append(False)
            if parent_node >= 0:
                has_children[parent_node] = True
        return child_of[key]

    for step in steps:
        if (step.name, step.problem) not in roots:
            roots[step.name, step.problem] = node(-1 - len(roots), step.problem)
        current = roots[step.name, step.problem]
        for earlier in step.prefix:
            current = node(current, earlier)
        current = node(current, step.text)
        known = step_label[current]
        step_label[current] = step.step_label if known is _UNRATED or known == step.step_label else None

    paths: dict[int, list[list[int]]] = {root: [] for root in roots.values()}
    for leaf in range(len(parent)):
        if parent[leaf] >= 0 and not has_children[leaf]:
            path = [leaf]
            while parent[path[-1]] >= 0:
                path.append(parent[path[-1]])
            paths[path.pop()].append(path[::-1])
    rows, problems_seen = [], Counter()
    for (name, problem), root in roots.items():
        number, problems_seen[name] = problems_seen[name], problems_seen[name] + 1
        for trajectory, path in enumerate(paths[root]):
            labels = [None if step_label[n] is _UNRATED else step_label[n] for n in path]
            rows.append(
                {
                    "id": f"{name}-{number}-{trajectory}",
                    "problem": problem,
                    "steps": [text[n] for n in path],
                    "label": first_error_from_step_labels(labels),
                    "step_labels": labels,
                }
            )
    return rows
