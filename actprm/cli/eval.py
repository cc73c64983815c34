"""``actprm eval``: a PRM on ProcessBench or PRMBench; JSON summary, per-item predictions, Markdown table.

Runs on one process or under ``accelerate launch`` (each process scores its share of the items).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from trl import TrlParser

HELP = "score a PRM on ProcessBench or PRMBench: metrics, per-item predictions, Markdown table"
ESCAPES = {"\\n": "\n", "\\t": "\t"}


@dataclass
class EvalArguments:
    """Options of ``actprm eval``."""

    model: str = field(
        metadata={
            "help": "Model folder or Hub id: an actprm ensemble, a TRL token-classification "
            "PRM or a Qwen2.5-Math-PRM-style model."
        }
    )
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
    batch_size: int = field(
        default=8,
        metadata={"help": "Solutions per forward pass (on CPU, 1 is fastest: padded batches are slow there)."},
    )
    max_length: int | None = field(
        default=None, metadata={"help": "Longest input in tokens; None: the model's context."}
    )
    separator: str | None = field(
        default=None,
        metadata={"help": "Step separator; None: the model's own, '\\n' for TRL PRMs. \\n and \\t are understood."},
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(default="auto", metadata={"help": "Model dtype."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run the model's own code (needed for Qwen2.5-Math-PRM-style models)."}
    )


def main(argv: list[str]) -> int:
    """Parse ``argv``, evaluate, print the table; returns 0 (bad input raises ValueError/FileNotFoundError).

    The threshold and the data are checked before the model is loaded, so bad input fails at once.
    """
    (args,) = TrlParser(EvalArguments, prog="actprm eval", description=HELP).parse_args_and_config(argv)
    from ..data import load_steps
    from ..distributed import process_state
    from ..evaluation import BENCHMARK_DATA, TABLE_FILE, evaluate_prmbench, evaluate_processbench
    from ..metrics import DEFAULT_THRESHOLD, check_threshold
    from ..scoring import StepScorer

    if args.benchmark == "prmbench" and (args.subsets or args.calibrate):
        raise ValueError("--subsets and --calibrate are ProcessBench options")
    if args.threshold is not None and args.calibrate is not None:
        raise ValueError("pass either --threshold or --calibrate, not both")
    threshold = check_threshold(DEFAULT_THRESHOLD if args.threshold is None else args.threshold)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    data_name = args.data or BENCHMARK_DATA[args.benchmark]
    dataset = load_steps(data_name, format=args.benchmark, subset=args.subsets)
    output_dir = args.output_dir or str(Path("eval") / Path(args.model).name / args.benchmark)
    separator = args.separator
    for escape, character in ESCAPES.items():
        separator = separator and separator.replace(escape, character)

    state = process_state()
    scorer = StepScorer.from_pretrained(
        args.model,
        trust_remote_code=args.trust_remote_code,
        separator=separator,
        max_length=args.max_length,
        dtype=args.dtype,
        device_map=state.device,
    )
    options = {"output_dir": output_dir, "batch_size": args.batch_size, "data_name": data_name}
    if args.benchmark == "processbench":
        calibration = {"calibrate": args.calibrate} if args.calibrate else {"threshold": threshold}
        evaluate_processbench(scorer, dataset, subsets=args.subsets, **calibration, **options)
    else:
        evaluate_prmbench(scorer, dataset, threshold=threshold, **options)
    if state.is_main_process:
        print((Path(output_dir) / TABLE_FILE).read_text(encoding="utf-8"))
        print(f"results in {output_dir}")
    return 0
