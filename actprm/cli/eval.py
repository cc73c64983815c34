"""``actprm eval``: a PRM on ProcessBench or PRMBench, or a judge on ProcessBench; JSON summary,
per-item predictions, Markdown table.

A PRM (``--model``) runs on one process or under ``accelerate launch`` (each process scores its share of
the items). A judge (``--judge openai|transformers`` and its ``--judge_*`` options instead of ``--model``)
is asked the labelling prompt, its answers cached in ``--judge_cache`` (default: in the output folder).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from trl import TrlParser

from .common import CachedJudgeArguments
from .score import ScorerArguments

HELP = (
    "score a PRM on ProcessBench or PRMBench, or a judge (--judge) on ProcessBench: metrics, per-item "
    "predictions, Markdown table"
)
EVALUATED_JUDGES = ("openai", "transformers")


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


SAME_VERDICT_SHARE = 0.95
"""A PRM giving one verdict to at least this share of the solutions (ProcessBench: no error / an error) or of
the steps (PRMBench: valid / invalid) gets a note."""


def same_verdict_note(predictions: Path) -> str | None:
    """A note when the PRM predicted the same verdict for nearly every solution (ProcessBench) or step (PRMBench)
    of ``predictions`` (an ``actprm eval`` predictions.jsonl), as a PRM trained on other data often does; else None."""
    rows = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()]
    if rows and "validity" in rows[0]:  # PRMBench: a verdict per step
        verdicts = [bool(valid) for row in rows for valid in row["validity"]]
        units, names, hint = "steps", ("invalid", "valid"), "--threshold sets the validity cut-off"
    else:
        verdicts = [row["first_error"] == -1 for row in rows]
        units, names, hint = "solutions", ("an error", "no error"), "--calibrate picks a threshold on one subset"
    share, verdict = max((sum(verdicts), names[1]), (len(verdicts) - sum(verdicts), names[0]))
    if not verdicts or share < SAME_VERDICT_SHARE * len(verdicts):
        return None
    return (
        f"note: the PRM predicted {verdict} for {share} of {len(verdicts)} {units}, so F1 says little: "
        f"was it trained on data like this benchmark's (e.g. not only the synthetic task)? {hint}\n"
    )


def benchmark_data(args: EvalArguments) -> str:
    """``--data``, else the benchmark's Hub id; refused at once, naming the data to pass, when the Hub is out of reach."""
    from ..data.hub_access import hub_unreachable
    from ..evaluation import BENCHMARK_DATA

    if args.data is not None:
        return args.data
    if reason := hub_unreachable():
        raise ValueError(
            f"{reason}: pass the {args.benchmark} data with --data (its folder or file, e.g. the project's "
            f"../shared/data/{args.benchmark}); online it is read from {BENCHMARK_DATA[args.benchmark]}"
        )
    return BENCHMARK_DATA[args.benchmark]


def _judge_requested(argv: list[str]) -> bool:
    return any(arg == "--judge" or arg.startswith("--judge=") for arg in argv)


def main(argv: list[str]) -> int:
    """Parse ``argv``, evaluate, print the table; returns 0 (bad input raises ValueError/FileNotFoundError).

    The threshold and the data are checked before the model is loaded, so bad input fails at once.
    """
    if "-h" in argv or "--help" in argv:  # the help shows both modes' options
        TrlParser((ScorerArguments, CachedJudgeArguments, EvalArguments), prog="actprm eval", description=HELP).parse_args(argv)
    if _judge_requested(argv):
        return _evaluate_judge(argv)
    parser = TrlParser((ScorerArguments, EvalArguments), prog="actprm eval", description=HELP)
    scorer_args, args = parser.parse_args_and_config(argv)
    from ..data import load_steps
    from ..distributed import process_state
    from ..evaluation import PREDICTIONS_FILE, TABLE_FILE, evaluate_prmbench, evaluate_processbench
    from ..metrics import DEFAULT_THRESHOLD, check_threshold

    if args.benchmark == "prmbench" and (args.subsets or args.calibrate):
        raise ValueError("--subsets and --calibrate are ProcessBench options")
    if args.threshold is not None and args.calibrate is not None:
        raise ValueError("pass either --threshold or --calibrate, not both")
    threshold = check_threshold(DEFAULT_THRESHOLD if args.threshold is None else args.threshold)
    data_name = benchmark_data(args)
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
        print(same_verdict_note(Path(output_dir) / PREDICTIONS_FILE) or "", end="")
        print(f"results in {output_dir}")
    return 0


def _evaluate_judge(argv: list[str]) -> int:
    """``actprm eval --judge ...``: the judge's ProcessBench accuracy, F1 and unparseable share."""
    parser = TrlParser((CachedJudgeArguments, EvalArguments), prog="actprm eval", description=HELP)
    judge_args, args = parser.parse_args_and_config(argv)
    from ..data import load_steps
    from ..evaluation import TABLE_FILE
    from ..judge_evaluation import evaluate_judge_processbench

    if judge_args.judge not in EVALUATED_JUDGES:
        raise ValueError(f"--judge {judge_args.judge}: only a critic LLM is evaluated ({', '.join(EVALUATED_JUDGES)})")
    if args.benchmark != "processbench":
        raise ValueError(
            "a judge is evaluated on ProcessBench only: PRMBench rates every step's validity, and a critique "
            "names only the first wrong step (the steps after it are unknown)"
        )
    if args.threshold is not None or args.calibrate is not None:
        raise ValueError("--threshold and --calibrate are PRM options: a judge names the first wrong step itself")
    if judge_args.judge == "transformers" and judge_args.judge_num_samples > 1:
        raise ValueError("a majority vote (--judge_num_samples > 1) needs --judge openai")
    if not judge_args.judge_model:
        raise ValueError(f"--judge {judge_args.judge} needs --judge_model")
    data_name = benchmark_data(args)
    dataset = load_steps(data_name, format="processbench", subset=args.subsets)
    output_dir = args.output_dir or str(Path("eval") / Path(judge_args.judge_model).name / "processbench-judge")
    judge_args.judge_cache = judge_args.judge_cache or str(Path(output_dir) / "judge.cache.sqlite")
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    evaluate_judge_processbench(
        judge_args.build(), dataset, output_dir=output_dir, subsets=args.subsets, data_name=data_name
    )
    print((Path(output_dir) / TABLE_FILE).read_text(encoding="utf-8"))
    print(f"results in {output_dir}")
    return 0
