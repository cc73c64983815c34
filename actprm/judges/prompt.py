r"""The critique prompt (ProcessBench protocol, in our own words) and its strict answer parser.

The judge sees the steps as numbered paragraphs, reviews them in order, stops at the first
mistake and ends with the index of that paragraph in ``\boxed{}``, or ``\boxed{-1}`` when every
paragraph is correct.

Parsing rules (`parse_first_error`):

- A reasoning model's ``<think>...</think>`` block is ignored: only the text after the last
  ``</think>`` counts (a template may open the block in the prompt, so the output may hold only the
  closing tag). A ``<think>`` that is never closed means the model never answered: unparseable.
- The answer is the *last* ``\boxed{...}`` in that text: models that revise themselves end with
  their final answer, and ProcessBench's evaluation reads the last one too. A last ``\boxed{`` cut
  off before its ``}`` (the output hit its token limit) is unparseable, whatever came before it.
- Inside the box, ``\text{}``-like wrappers, ``$``, spaces, a Unicode minus and a leading
  "paragraph" are tolerated; what is left must be one integer in ``[-1, number of steps)``.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from .base import Judge, content_hash

PROMPT_VERSION = "critique-v1"
"""Bump when the prompt changes: it is part of every prompted judge's identity, hence of the cache key."""

CRITIQUE_TEMPLATE = """\
Below is a math problem and a proposed solution. The solution is divided into paragraphs, numbered \
from 0 and each enclosed in <paragraph_i> tags.

[Problem]

{problem}

[Proposed solution]

{paragraphs}

Check the paragraphs one at a time, in order. For each, verify its calculations, its reasoning, and \
that it is consistent with the problem and with the paragraphs before it. Stop at the first \
paragraph that contains a mistake: what comes after it does not matter.

Conclude with the number of the earliest paragraph that contains a mistake, written as \
\\boxed{{number}}. If every paragraph is correct, conclude with \\boxed{{-1}}."""


class UnparseableOutputError(ValueError):
    """A judge's output that holds no valid first-error index."""


def tag_paragraphs(steps: Sequence[str]) -> str:
    """The steps as ``<paragraph_i>`` blocks."""
    return "\n\n".join(f"<paragraph_{i}>\n{step}\n</paragraph_{i}>" for i, step in enumerate(steps))


def build_critique_messages(problem: str, steps: Sequence[str]) -> list[dict[str, str]]:
    """The chat messages that ask a judge for the first wrong step (one user turn)."""
    content = CRITIQUE_TEMPLATE.format(problem=problem.strip(), paragraphs=tag_paragraphs(steps))
    return [{"role": "user", "content": content}]


_BOXED_START = re.compile(r"\\boxed\s*\{")
_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_INDEX = re.compile(r"(?:paragraph\s*\\?_?\s*)?([+-]?\s*\d+)", re.IGNORECASE)


def final_answer_text(output: str) -> str:
    """``output`` without its reasoning block: the text after the last ``</think>``."""
    if "</think>" in output:
        return output.rsplit("</think>", 1)[1]
    if "<think>" in output:
        raise UnparseableOutputError("the reasoning block is never closed (<think> without </think>)")
    return output


def last_boxed(text: str) -> str:
    r"""Content of the last ``\boxed{...}`` in ``text`` (nested braces allowed)."""
    starts = list(_BOXED_START.finditer(text))
    if not starts:
        raise UnparseableOutputError("no \\boxed{} answer")
    start = starts[-1].end()
    depth = 1
    for position in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[position], 0)
        if depth == 0:
            return text[start:position]
    raise UnparseableOutputError("the last \\boxed{ is never closed")


def parse_first_error(output: str, num_steps: int) -> int:
    r"""The first-error index a judge wrote in ``output``, for a solution of ``num_steps`` steps.

    Raises:
        UnparseableOutputError: no answer, a malformed answer, or an index outside
            ``[-1, num_steps)``.
    """
    content = last_boxed(final_answer_text(output))
    unwrapped = None
    while unwrapped != content:
        unwrapped, content = content, _WRAPPER.sub(r"\1", content)
    cleaned = content.replace("$", "").replace("{", "").replace("}", "").replace("\u2212", "-").strip()
    match = _INDEX.fullmatch(cleaned)
    if match is None:
        raise UnparseableOutputError(f"\\boxed{{{content}}} is not a paragraph index")
    index = int(re.sub(r"\s", "", match.group(1)))
    if not -1 <= index < num_steps:
        raise UnparseableOutputError(f"index {index} is outside [-1, {num_steps - 1}] for {num_steps} paragraphs")
    return index


class CritiqueJudge(Judge):
    """Base of the judges that ask a language model the critique prompt and parse its answer."""

    prompt_version = PROMPT_VERSION

    def question_key(self, item: Mapping[str, Any]) -> str:
        return content_hash(build_critique_messages(item["problem"], item["steps"]))

    @staticmethod
    def _make_identity(backend: str, model: str, **sampling: Any) -> str:
        """``backend:model|prompt version|sampling``, e.g. ``openai:Qwen/QwQ-32B|critique-v1|temperature=0.0``."""
        params = ",".join(f"{name}={value}" for name, value in sorted(sampling.items()))
        return f"{backend}:{model}|{PROMPT_VERSION}|{params}"
