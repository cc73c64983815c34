"""``actprm filter``: keep the trajectories of a large pool that an ensemble PRM is not confident about.

Runs on one process or several (``accelerate launch --multi_gpu --num_processes N -m actprm.cli filter ...``):
each process filters its share of the shards. Resumes at shard granularity. See `actprm.filtering`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from trl import TrlParser

from ..strategies import PER_HEAD_STRATEGIES, STRATEGIES
from .score import DATA_FORMAT_HELP, ScorerArguments

HELP = "keep the trajectories of a large pool an ensemble PRM is unsure of (sharded, resumable, multi-process)"


@dataclass
class FilterArguments:
    """What ``actprm filter`` reads, how it selects and where it writes."""

    data: str = field(
        metadata={
            "help": "The pool: a folder of data files (one shard each), a single data file or a Hub dataset id "
            "(streamed and cut into shards of --shard_size)."
        }
    )
    output_dir: str = field(metadata={"help": "Where kept shards, done markers and summary.json go (and resume from)."})
    data_format: str | None = field(default=None, metadata={"help": DATA_FORMAT_HELP})
    data_split: str | None = field(default=None, metadata={"help": "Split (Hub) or file-name token (folder) to read."})
    pred_threshold: float = field(
        default=0.9, metadata={"help": "A step is decided when its mean probability is >= this or <= 1 - this."}
    )
    std_threshold: float = field(
        default=0.01, metadata={"help": "A step is decided only when the heads' standard deviation is <= this."}
    )
    strategy: str = field(
        default="actprm",
        metadata={
            "help": "Selection strategy (formulas in `actprm.selection.trajectory_scores`): `actprm` (the rule), "
            "`disagreement_max`, `disagreement_mean`, `entropy_max` or `entropy_sum` (`bald_*` need every head's "
            "probability, which the filter's scores do not carry).",
            "choices": [s for s in STRATEGIES if s not in PER_HEAD_STRATEGIES],
        },
    )
    uncertainty_threshold: float | None = field(
        default=None, metadata={"help": "A strategy other than `actprm` keeps the trajectories scoring above this."}
    )
    selection_rate: float | None = field(
        default=None, metadata={"help": "Keep this share (in (0, 1]) of each shard, the most uncertain, instead."}
    )
    random_share: float = field(
        default=0.0, metadata={"help": "Epsilon-greedy share of trajectories kept at random, in [0, 1)."}
    )
    shard_size: int = field(default=10_000, metadata={"help": "Trajectories per shard of a streamed pool."})
    on_error: Literal["raise", "skip"] = field(
        default="raise", metadata={"help": "Stop at the first malformed record, or skip such records with a warning."}
    )

    def __post_init__(self):
        from ..filtering import filter_selection

        filter_selection(
            self.strategy, self.pred_threshold, self.std_threshold, self.uncertainty_threshold, self.selection_rate,
            self.random_share,
        )


def main(argv: list[str]) -> int:
    """Parse ``argv``, filter, print the counts; returns 0. Bad input fails before the model is loaded."""
    parser = TrlParser((ScorerArguments, FilterArguments), prog="actprm filter", description=HELP)
    scorer_args, args = parser.parse_args_and_config(argv)
    from ..distributed import process_state
    from ..filtering import SUMMARY_FILE, TrajectoryPool, filter_pool

    pool = TrajectoryPool(
        args.data, args.data_format, split=args.data_split, shard_size=args.shard_size, on_error=args.on_error
    )
    summary = filter_pool(
        scorer_args.build(),
        pool,
        output_dir=args.output_dir,
        pred_threshold=args.pred_threshold,
        std_threshold=args.std_threshold,
        strategy=args.strategy,
        uncertainty_threshold=args.uncertainty_threshold,
        selection_rate=args.selection_rate,
        random_share=args.random_share,
        batch_size=scorer_args.batch_size,
    )
    if process_state().is_main_process:
        print(
            f"kept {summary['kept']} of {summary['seen']} trajectories ({100 * summary['fraction_kept']:.1f}%) "
            f"in {summary['num_shards']} shards ({summary['shards_filtered_this_run']} filtered this run); "
            f"kept data in {summary['output']}, summary in {args.output_dir}/{SUMMARY_FILE}"
        )
    return 0
