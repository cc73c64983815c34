"""Judges: label trajectories with the first wrong step, cache every answer, store every annotation.

A judge takes a batch of ``{"problem", "steps"}`` items and returns, per item, an `Annotation`
(first-error index, step labels, tokens, raw output) or a `JudgeFailure` (never a label).
"""

from .arithmetic import ArithmeticJudge
from .base import Annotation, Judge, JudgeFailure, JudgeResult, JudgeStats, JudgeUnavailableError
from .cache import JudgeCache
from .openai_judge import OpenAIJudge
from .oracle import OracleJudge
from .prompt import PROMPT_VERSION, UnparseableOutputError, build_critique_messages, parse_first_error
from .store import ANNOTATION_FEATURES, AnnotationStore
from .transformers_judge import TransformersJudge

__all__ = [
    "ANNOTATION_FEATURES",
    "PROMPT_VERSION",
    "Annotation",
    "AnnotationStore",
    "ArithmeticJudge",
    "Judge",
    "JudgeCache",
    "JudgeFailure",
    "JudgeResult",
    "JudgeStats",
    "JudgeUnavailableError",
    "OpenAIJudge",
    "OracleJudge",
    "TransformersJudge",
    "UnparseableOutputError",
    "build_critique_messages",
    "parse_first_error",
]
