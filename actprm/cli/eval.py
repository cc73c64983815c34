"""``actprm eval``: a PRM on ProcessBench or PRMBench; JSON summary, per-item predictions, Markdown table.

Runs on one process or under ``accelerate launch`` (each process scores its share of the items).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from trl import TrlParser

from .score import ScorerArguments

HELP = "score a PRM on ProcessBench or PRMBench: metrics, per-item predictions, Markdown table"


@dataclass
class EvalArguments:
    """Options of ``actprm eval``."""

    benchmark: Literal["processbench", "prmbench"] = field(metadata={"help": "Benchmark to run."})
    data: str | None = field(
        default=None,
        metadata={"help": "Benchmark folder, file or Hub id; None: Qwen/ProcessBench or hitsmy/PRMBench_Preview."},
    )
    subsets: list[str] | None = field(
        default=None, metadata={"help": "ProcessBench subsets to evaluate; None: all four."}
    )
    threshold: float | None = field(
        default=None, metadata={"help": "A step scored below this is an error; None: 0.5."}
    )
    calibrate: Literal["gsm8k", "math", "olympiadbench", "omnimath"] | None = field(
        default=None,
        metadata={"help": "ProcessBench: pick the threshold with the best F1 on this subset and apply it to all."},
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Where results go and are resumed from; None: eval/<model name>/<benchmark>."}
    )


def main(argv: list[str]) -> int:
    """Parse ``argv``, evaluate, print the table; returns 0 (bad input raises ValueError/FileNotFoundError).

    The threshold and the data are checked before the model is loaded, so bad input fails at once.
    """
    parser = TrlParser((ScorerArguments, EvalArguments), prog="actprm eval", description=HELP)
    scorer_args, args = parser.parse_args_and_config(argv)
    from ..data import load_steps
    from ..distributed import process_state
    from ..evaluation import BENCHMARK_DATA, TABLE_FILE, evaluate_prmbench, evaluate_processbench
    from ..metrics import DEFAULT_THRESHOLD, check_threshold

    if args.benchmark == "prmbench" and (args.subsets or args.calibrate):
        raise ValueError("--subsets and --calibrate are ProcessBench options")
    if args.threshold is not None and args.calibrate is not None:
        raise ValueError("pass either --threshold or --calibrate, not both")
    threshold = check_threshold(DEFAULT_THRESHOLD if args.threshold is None else args.threshold)
    data_name = args.data or BENCHMARK_DATA[args.benchmark]
    dataset = load_steps(data_name, format=args.benchmark, subset=args.subsets)
    output_dir = args.output_dir or str(Path("eval") / Path(scorer_args.model).name / args.benchmark)
    state = process_state()
    scorer = scorer_args.build()
    options = {"output_dir": output_dir, "batch_size": scorer_args.batch_size, "data_name": data_name}
    if args.benchmark == "processbench":
        calibration = {"calibrate": args.calibrate} if args.calibrate else {"threshold": threshold}
        evaluate_processbench(scorer, dataset, subsets=args.subsets, **calibration, **options)
    else:
        evaluate_prmbench(scorer, dataset, threshold=threshold, **options)
    if state.is_main_process:
        print((Path(output_dir) / TABLE_FILE).read_text(encoding="utf-8"))
        print(f"results in {output_dir}")
    return 0
