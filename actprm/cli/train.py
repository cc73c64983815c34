"""``actprm train``: train an ensemble PRM with active learning (pool or online mode)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from trl import ModelConfig, TrlParser

from .common import DataArguments, JudgeArguments, check_model_path, hub_errors, hub_problem, show_groups_first

HELP = "train an ensemble PRM with active learning (pool mode, or online with a judge)"


@dataclass
class RunArguments:
    gguf_file: str | None = field(
        default=None,
        metadata={"help": "GGUF checkpoint of the backbone: a path, or a file of --model_name_or_path (folder or Hub "
                  "repo); de-quantised on load, the trained PRM is saved as safetensors (needs `pip install "
                  "'actprm[gguf]'`)."},
    )
    dry_run: bool = field(
        default=False,
        metadata={"help": "Parse everything, load the data and build the judge, print the plan, and stop before "
                  "loading the model or calling the judge."},
    )


HELP_ALL = "--help-all"
TRAINING_ARGUMENTS_NOTE = (
    "Every option of transformers' TrainingArguments is taken too (--learning_rate, --num_train_epochs, "
    f"--per_device_train_batch_size, --bf16, --report_to, ...); `actprm train {HELP_ALL}` lists them."
)


def build_parser(*, training_arguments: bool = True) -> TrlParser:
    """The parser of ``actprm train``: its help lists actprm's options, then transformers' TrainingArguments;
    without ``training_arguments`` (a parser for ``--help`` only) it loads neither torch nor transformers."""
    from ..training_options import ActivePRMOptions

    own = [("data", DataArguments), ("model (TRL's ModelConfig)", ModelConfig), ("judge", JudgeArguments),
           ("active PRM training (ActivePRMConfig)", ActivePRMOptions), ("run", RunArguments)]  # fmt: skip
    groups = [(title, [item.name for item in fields(options)]) for title, options in own]
    if training_arguments:
        from ..training_args import ActivePRMConfig  # transformers' TrainingArguments: torch and accelerate

        config, epilog = ActivePRMConfig, None
        inherited = {item.name for item in fields(ActivePRMConfig)} - {item.name for item in fields(ActivePRMOptions)}
        groups.append(("transformers' TrainingArguments (as in any Trainer)", inherited))
    else:
        config, epilog = ActivePRMOptions, TRAINING_ARGUMENTS_NOTE
    parser = TrlParser(
        (DataArguments, JudgeArguments, config, ModelConfig, RunArguments), prog="actprm train", description=HELP,
        epilog=epilog,
    )
    parser.add_argument(HELP_ALL, action="help", help="show this help with transformers' TrainingArguments, and exit")
    model = parser._option_string_actions["--model_name_or_path"]
    model.required, model.help = True, "A causal LM to put heads on, or an ensemble PRM checkpoint (folder or Hub id)."
    show_groups_first(parser, groups)
    return parser


def main(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        build_parser(training_arguments=False).parse_args(["--help"])
    data_args, judge_args, training_args, model_args, run_args = build_parser().parse_args_and_config(argv)
    check_model_path(model_args.model_name_or_path, run_args.gguf_file)
    train_dataset, judge = data_args.load(), judge_args.build()
    if run_args.dry_run:
        labelled = sum(label is not None for label in train_dataset["label"])
        print(
            f"dry run: would train {model_args.model_name_or_path} ({training_args.num_ensemble} heads, selection "
            f"{training_args.selection}) on {train_dataset.num_rows} trajectories ({labelled} labelled) from "
            f"{data_args.dataset}, judge {judge!r}, output in {training_args.output_dir}"
        )
        return 0
    from trl import get_peft_config

    from ..hub import resolve_token
    from ..trainer import ActivePRMTrainer

    init_kwargs = {"revision": model_args.model_revision, "attn_implementation": model_args.attn_implementation,
                   "gguf_file": run_args.gguf_file}
    if model_args.dtype not in (None, "auto"):
        init_kwargs["dtype"] = model_args.dtype
    training_args.model_init_kwargs = {**{k: v for k, v in init_kwargs.items() if v is not None},
                                       **(training_args.model_init_kwargs or {})}
    pushing = hub_errors() if training_args.push_to_hub else ()
    if training_args.push_to_hub:
        resolve_token(training_args.hub_token)  # no token: fail before any work
    repo = training_args.hub_model_id or Path(training_args.output_dir).absolute().name
    try:
        trainer = ActivePRMTrainer(  # with --push_to_hub, creates the Hub repo
            model_args.model_name_or_path,
            args=training_args,
            train_dataset=train_dataset,
            eval_dataset=data_args.load_eval(),
            judge=judge,
            peft_config=get_peft_config(model_args),
        )
    except pushing as error:
        print(f"actprm train: error: creating the Hub repo {repo} failed: {hub_problem(error)}", file=sys.stderr)
        return 1
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    push_error = None
    try:
        trainer.save_model()  # with --push_to_hub, saves, then pushes
    except pushing as error:
        push_error = error
    summary = trainer.active_learning_summary()
    if trainer.is_world_process_zero():
        print(
            f"trained on {int(summary['trained'])} of {int(summary['seen'])} trajectories; "
            f"{int(summary['annotations'])} annotations ({int(summary['judge_calls'])} judge calls); "
            f"model saved to {training_args.output_dir}"
        )
        failed, faults = trainer.active.judge_failed, judge.stats.faults if judge is not None else {}
        if failed.reasons or faults:
            print(f"judge faults by kind (requests, retried ones included): {_by_kind(faults)}; trajectories the "
                  f"judge failed on: {_by_kind(failed.reasons)}, {len(failed.skipped)} of them skipped")
    if push_error is not None:
        print(f"actprm train: error: pushing to {repo} failed: {hub_problem(push_error)}; the model is saved in "
              f"{training_args.output_dir}: push it with `actprm push --model-dir {training_args.output_dir} "
              f"--repo-id {repo}`", file=sys.stderr)
        return 1
    return 0


def _by_kind(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in sorted(counts.items())) or "none"
