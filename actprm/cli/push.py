"""``actprm push``: a trained PRM (weights, tokenizer, card) or a labelled dataset (Parquet, card) to the Hub."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from trl import TrlParser

from .common import hub_errors, hub_problem, read_summary

HELP = "push a trained PRM or the labelled dataset of a run to the Hugging Face Hub, with its card"


@dataclass
class PushArguments:
    """Options of ``actprm push``."""

    repo_id: str = field(metadata={"help": "Hub repo: namespace/name (a bare name goes to your namespace)."})
    model_dir: str | None = field(
        default=None, metadata={"help": "Model folder to push (weights, config, tokenizer, training report)."}
    )
    dataset: str | None = field(
        default=None,
        metadata={"help": "Labelled dataset to push: an annotations .jsonl, or the run folder holding annotations.jsonl."},
    )
    private: bool = field(default=False, metadata={"help": "Make a new repo private (an existing one keeps its visibility)."})
    revision: str | None = field(
        default=None, metadata={"help": "Branch to push to, created if missing; None: the default branch."}
    )
    create_pr: bool = field(default=False, metadata={"help": "Open a pull request against the default branch."})
    commit_message: str | None = field(default=None, metadata={"help": "Title of the commit."})
    eval_summary: list[str] | None = field(
        default=None,
        metadata={"help": "Model only: summary.json files (or their folders) of `actprm eval`, one per benchmark, "
                  "for the card's results."},
    )
    card: str | None = field(
        default=None, metadata={"help": "A README.md to push as the card instead of the generated one."}
    )
    license: str | None = field(
        default=None, metadata={"help": "Licence (a Hub licence id such as apache-2.0) written in the generated card."}
    )
    source: str | None = field(
        default=None, metadata={"help": "Dataset only: Hub id of the dataset the problems and solutions come from."}
    )
    judge_eval_summary: str | None = field(
        default=None,
        metadata={"help": "Dataset only: summary.json (or its folder) of `actprm eval --judge` for the judge that "
                  "made the labels: its ProcessBench F1 goes in the card."},
    )


def main(argv: list[str]) -> int:
    """Parse ``argv``, push, print the commit URL; returns 0 (bad input raises ValueError/FileNotFoundError)."""
    (args,) = TrlParser(PushArguments, prog="actprm push", description=HELP).parse_args_and_config(argv)
    from huggingface_hub import DatasetCard, ModelCard

    from ..hub import push_dataset, push_model

    if (args.model_dir is None) == (args.dataset is None):
        raise ValueError("pass either --model-dir or --dataset")
    if args.dataset is not None and args.eval_summary:
        raise ValueError("--eval-summary is a model option")
    if args.model_dir is not None and (args.source or args.judge_eval_summary):
        raise ValueError("--source and --judge-eval-summary are dataset options")
    if args.card is not None and not Path(args.card).is_file():
        raise FileNotFoundError(f"{args.card}: no such card file")
    if args.card is not None and (args.license or args.source or args.eval_summary or args.judge_eval_summary):
        raise ValueError(
            "--license, --source, --eval-summary and --judge-eval-summary go into the generated card: not with --card"
        )
    options = {
        "private": args.private,
        "revision": args.revision,
        "create_pr": args.create_pr,
        "commit_message": args.commit_message,
        "license": args.license,
    }
    try:
        if args.model_dir is not None:
            card = ModelCard.load(args.card) if args.card else None
            summaries = [read_summary(path) for path in args.eval_summary or []]
            commit = push_model(args.model_dir, args.repo_id, card=card, eval_summaries=summaries, **options)
        else:
            card = DatasetCard.load(args.card) if args.card else None
            judge_evaluation = read_summary(args.judge_eval_summary) if args.judge_eval_summary else None
            commit = push_dataset(
                args.dataset, args.repo_id, card=card, source=args.source, judge_evaluation=judge_evaluation,
                **options,
            )
    except hub_errors() as error:
        print(f"actprm push: error: pushing to {args.repo_id} failed: {hub_problem(error)}", file=sys.stderr)
        return 1
    print(f"pushed: {commit.pr_url or commit.commit_url}")
    return 0
