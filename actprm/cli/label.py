"""``actprm label``: run a judge over a dataset without training (resumable, cached)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from trl import TrlParser

from .common import CachedJudgeArguments, DataArguments, read_summary

HELP = "label a dataset's trajectories with a judge (resumable; answers are cached)"


@dataclass
class LabelArguments:
    output: str = field(metadata={"help": "Labelled dataset (jsonl) to append to; ids already in it are skipped."})
    batch_size: int = field(default=64, metadata={"help": "Trajectories sent to the judge together."})
    judge_eval_summary: str | None = field(
        default=None,
        metadata={"help": "summary.json (or its folder) of `actprm eval --judge` for this judge: its measured "
                  "ProcessBench F1 is reported (and checked to rate this very judge)."},
    )


def main(argv: list[str]) -> int:
    parser = TrlParser((DataArguments, CachedJudgeArguments, LabelArguments), prog="actprm label", description=HELP)
    data_args, judge_args, label_args = parser.parse_args_and_config(argv)
    from tqdm.auto import tqdm

    from ..judges import AnnotationStore, JudgeFailure, JudgeUnavailableError

    if judge_args.judge == "none":
        raise ValueError("--judge is required: openai, transformers, oracle or arithmetic")
    judge_args.judge_cache = judge_args.judge_cache or str(Path(label_args.output).with_suffix(".cache.sqlite"))
    judge = judge_args.build()
    judge_accuracy = None
    if label_args.judge_eval_summary:
        from ..model_card import describe_judge_evaluation

        judge_accuracy = describe_judge_evaluation(read_summary(label_args.judge_eval_summary), [judge.identity])
    store = AnnotationStore(label_args.output)
    judge.check_available()
    dataset = data_args.load()
    todo = [row for row in dataset if row["id"] not in store]
    failures = 0
    for start in tqdm(range(0, len(todo), label_args.batch_size), desc="Labelling", unit="batch"):
        batch = todo[start : start + label_args.batch_size]
        results = judge.annotate(batch)
        labelled = [(item, r) for item, r in zip(batch, results) if not isinstance(r, JudgeFailure)]
        store.extend([item for item, _ in labelled], [r for _, r in labelled])
        failures += len(batch) - len(labelled)
        if any(isinstance(r, JudgeFailure) and r.server_error for r in results):
            raise JudgeUnavailableError(f"the judge stopped answering; {len(store)} labels are saved in {label_args.output}: rerun to resume")
    stats = judge.stats
    print(
        f"{len(dataset) - len(todo)} already labelled, {stats.annotations} new, {stats.cache_hits} from the cache, "
        f"{failures} failures, {stats.tokens} judge tokens; labels in {label_args.output}"
    )
    if judge_accuracy:
        print(f"judge accuracy: {judge_accuracy}")
    return 0 if not failures else 1
