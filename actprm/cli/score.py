"""``actprm score``: per-step scores of every trajectory of a dataset, as jsonl on stdout or in a file."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from trl import TrlParser

if TYPE_CHECKING:
    from ..scoring import StepScorer

HELP = "score every step of a dataset's trajectories with a PRM (jsonl: scores, stds, first error)"
ESCAPES = {"\\n": "\n", "\\t": "\t"}
DATA_FORMAT_HELP = "processbench, prmbench, prm800k, trl, math_shepherd or jsonl; inferred if unset."
RESULT_FIELDS = ("scores", "stds", "first_error", "num_steps", "num_scored_steps", "truncated", "empty")


@dataclass
class ScorerArguments:
    """Which PRM scores the steps, and how it is loaded."""

    model: str = field(
        metadata={
            "help": "Model folder or Hub id: an actprm ensemble, a TRL token-classification "
            "PRM, a Qwen2.5-Math-PRM-style, a Skywork-PRM-style (value head) or, with --step_tag_format, "
            "a step-tag LM PRM."
        }
    )
    batch_size: int = field(default=8, metadata={"help": "Solutions per forward pass."})
    max_length: int | None = field(
        default=None, metadata={"help": "Longest input in tokens; None: the model's context."}
    )
    separator: str | None = field(
        default=None,
        metadata={"help": "Step separator; None: the model's own, '\\n' for TRL PRMs. \\n and \\t are understood."},
    )
    use_chat_template: bool | None = field(
        default=None,
        metadata={"help": "Ensembles: the problem in a user turn, the steps in the assistant turn; None: as trained."},
    )
    system_prompt: str | None = field(
        default=None,
        metadata={"help": "System turn of chat-template ensembles (None: as trained) and Qwen2.5-Math-PRM-style "
                  "models (None: theirs)."},
    )
    step_tag_format: str | None = field(
        default=None,
        metadata={"help": "Step-tag LM PRMs: the preset of their layout, math_shepherd or rlhflow."},
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={"help": "TRL token-classification PRMs: keep the last N tokens of [bos] + problem, as TRL's "
                  "PRMConfig did (512 there, with --max_length 1024)."},
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(default="auto", metadata={"help": "Model dtype."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run the model's own code (needed for Qwen2.5-Math-PRM-style models)."}
    )

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {self.batch_size}")

    def build(self) -> StepScorer:
        """The scorer these arguments describe, on this process's device."""
        from ..distributed import process_state
        from ..scoring import StepScorer

        separator = self.separator
        for escape, character in ESCAPES.items():
            separator = separator and separator.replace(escape, character)
        return StepScorer.from_pretrained(
            self.model,
            trust_remote_code=self.trust_remote_code,
            separator=separator,
            max_length=self.max_length,
            use_chat_template=self.use_chat_template,
            system_prompt=self.system_prompt,
            step_tag_format=self.step_tag_format,
            max_prompt_length=self.max_prompt_length,
            dtype=self.dtype,
            device_map=process_state().device,
        )


@dataclass
class ScoreArguments:
    """What ``actprm score`` reads and writes."""

    data: str = field(metadata={"help": "Step data: a file, a folder or a Hub dataset id (see actprm.load_steps)."})
    data_format: str | None = field(default=None, metadata={"help": DATA_FORMAT_HELP})
    data_split: str | None = field(default=None, metadata={"help": "Split (Hub) or file-name token (folder) to load."})
    output: str | None = field(default=None, metadata={"help": "jsonl file to write; None: print to stdout."})
    threshold: float = field(default=0.5, metadata={"help": "A step scored below this is an error (first_error)."})


def main(argv: list[str]) -> int:
    """Parse ``argv``, score, print or write one JSON line per trajectory; returns 0.

    The threshold and the data are checked before the model is loaded, so bad input fails at once.
    """
    parser = TrlParser((ScorerArguments, ScoreArguments), prog="actprm score", description=HELP)
    scorer_args, args = parser.parse_args_and_config(argv)
    from ..data import load_steps
    from ..metrics import check_threshold

    threshold = check_threshold(args.threshold)
    dataset = load_steps(args.data, args.data_format, split=args.data_split)
    scorer = scorer_args.build()
    results = scorer.score(dataset, threshold=threshold, batch_size=scorer_args.batch_size)
    lines = (
        json.dumps({"id": item_id, **{name: result[name] for name in RESULT_FIELDS}}) + "\n"
        for item_id, result in zip(dataset["id"], results)
    )
    if args.output is None:
        sys.stdout.writelines(lines)
    else:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as output:
            output.writelines(lines)
        print(f"scored {len(results)} trajectories; results in {args.output}", file=sys.stderr)
    return 0
