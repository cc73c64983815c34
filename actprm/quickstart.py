"""The main job on the embedded default: online active learning against full and random annotation.

Everything runs offline on a CPU: the tiny default backbone, the synthetic arithmetic pool (its
labels hidden) and `ArithmeticJudge` as the annotator. Uncertainty selection runs first, over the
whole pool (or up to a budget); the ``all`` and ``random`` baselines then get exactly the annotations
it used (``all`` on the pool's first trajectories, ``random`` at uncertainty's rate over the whole
pool), each with a complete learning-rate schedule, and every run is scored on the same synthetic
test split (ProcessBench-style F1). Each run's PRM is saved in its folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .strategies import check_confidence_thresholds

if TYPE_CHECKING:  # imported when a run starts: `actprm quickstart --help` needs only the config
    from datasets import Dataset

    from .trainer import ActivePRMTrainer


SELECTIONS = ("uncertainty", "all", "random")


@dataclass
class QuickstartConfig:
    """Settings of the main job; the defaults finish in a few minutes on two CPU cores."""

    output_dir: str = field(default="actprm-quickstart", metadata={"help": "Where runs, annotations and results go."})
    pool_size: int = field(default=8000, metadata={"help": "Trajectories in the unlabelled synthetic pool."})
    test_size: int = field(default=500, metadata={"help": "Labelled synthetic test trajectories."})
    budget: int | None = field(
        default=None, metadata={"help": "Annotation budget of the uncertainty run (default: no cap, one pass over the pool)."}
    )
    error_rate: float = field(default=0.7, metadata={"help": "Fraction of pool solutions with an injected error."})
    seed: int = field(default=0, metadata={"help": "Seed of the data and of training."})
    learning_rate: float = field(default=3e-4, metadata={"help": "AdamW learning rate."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule over the pass."})
    batch_size: int = field(default=8, metadata={"help": "Trajectories per training batch (small batches: more updates per label)."})
    num_ensemble: int = field(default=8, metadata={"help": "Heads in the ensemble."})
    pred_threshold: float = field(default=0.95, metadata={"help": "Confidence threshold of the selection rule."})
    std_threshold: float = field(default=0.01, metadata={"help": "Agreement threshold of the selection rule."})
    active_warmup_steps: int = field(default=40, metadata={"help": "First steps that annotate everything."})
    eval_steps: int = field(default=200, metadata={"help": "Evaluate on the test split every this many steps."})
    selections: list[str] = field(
        default_factory=lambda: ["uncertainty", "all", "random"],
        metadata={"help": "Strategies to run; the first sets the others' budget."},
    )

    def __post_init__(self):
        """Check every option before any work, naming the flag at fault."""
        at_least = {"pool_size": 1, "test_size": 1, "batch_size": 1, "num_ensemble": 1, "eval_steps": 1,
                    "active_warmup_steps": 0}
        if self.budget is not None:
            at_least["budget"] = 1
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise ValueError(f"--{name} must be >= {low}, got {getattr(self, name)}")
        if not 0 <= self.error_rate <= 1:
            raise ValueError(f"--error_rate must be in [0, 1], got {self.error_rate}")
        if not self.learning_rate > 0:
            raise ValueError(f"--learning_rate must be > 0, got {self.learning_rate}")
        check_confidence_thresholds(self.pred_threshold, self.std_threshold, flag="--")
        from transformers import SchedulerType

        schedules = [schedule.value for schedule in SchedulerType]
        if self.lr_scheduler_type not in schedules:
            raise ValueError(f"--lr_scheduler_type must be one of {', '.join(schedules)}, got {self.lr_scheduler_type!r}")
        unknown = [name for name in self.selections if name not in SELECTIONS]
        if not self.selections or unknown:
            raise ValueError(f"--selections must be some of {', '.join(SELECTIONS)}, got {' '.join(self.selections)}")


@dataclass
class RunResult:
    """One strategy's outcome."""

    selection: str
    annotations: int
    judge_calls: int
    seen: int
    f1: float
    error_acc: float
    correct_acc: float
    curve: list[tuple[int, float]]
    """(annotations so far, test F1) at every evaluation."""


def run_progress(selection: str, trainer: ActivePRMTrainer):
    """A callback showing a progress bar over one run's training steps, with the annotations used and the
    fraction of trajectories selected so far."""
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class RunProgress(TrainerCallback):
        bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = tqdm(total=state.max_steps, desc=selection, unit="step", dynamic_ncols=True)

        def on_step_end(self, args, state, control, **kwargs):
            active = trainer.active
            self.bar.set_postfix_str(
                f"annotations {active.annotations}, selected {active.selected / max(active.seen, 1):.0%}", refresh=False
            )
            self.bar.update(state.global_step - self.bar.n)

        def on_train_end(self, args, state, control, **kwargs):
            self.bar.close()

    return RunProgress()


def train_one(
    selection: str,
    pool: Dataset,
    test: Dataset,
    config: QuickstartConfig,
    *,
    budget: int | None,
    random_rate: float = 0.5,
) -> RunResult:
    """Train the default backbone on ``pool`` with one selection strategy and score it on ``test``."""
    from transformers import PrinterCallback

    from .default_backbone import default_backbone
    from .judges import ArithmeticJudge
    from .trainer import ActivePRMTrainer
    from .training_args import ActivePRMConfig

    args = ActivePRMConfig(
        output_dir=os.path.join(config.output_dir, selection),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=64,
        num_train_epochs=1,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        num_ensemble=config.num_ensemble,
        selection=selection,
        random_selection_rate=random_rate,
        pred_threshold=config.pred_threshold,
        std_threshold=config.std_threshold,
        active_warmup_steps=config.active_warmup_steps if selection == "uncertainty" else 0,
        max_annotations=budget,
        judge_batch_size=config.batch_size,
        eval_strategy="steps",
        eval_steps=config.eval_steps,
        logging_steps=config.eval_steps,
        save_strategy="no",
        report_to="none",
        seed=config.seed,
        use_cpu=True,
        disable_tqdm=True,  # run_progress's bar instead of the Trainer's
    )
    judge = ArithmeticJudge()  # cached in the run's own folder: each strategy pays for its own labels
    trainer = ActivePRMTrainer(default_backbone(), args=args, train_dataset=pool, eval_dataset=test, judge=judge)
    trainer.remove_callback(PrinterCallback)  # one line per run instead of every log
    trainer.add_callback(run_progress(selection, trainer))
    trainer.train()
    trainer.save_model()  # the trained PRM, loadable with `EnsemblePRMModel.from_pretrained`
    final = trainer.evaluate()
    summary = trainer.active_learning_summary()
    curve = [(int(e["active/annotations"]), e["eval_f1"]) for e in trainer.state.log_history if "eval_f1" in e]
    print(
        f"{selection}: {summary['annotations']} annotations, {summary['seen']} trajectories seen, "
        f"test F1 {final['eval_f1']:.3f}; PRM saved in {args.output_dir}"
    )
    return RunResult(
        selection=selection,
        annotations=int(summary["annotations"]),
        judge_calls=int(summary["judge_calls"]),  # the trainer's counters: one source for both columns
        seen=int(summary["seen"]),
        f1=final["eval_f1"],
        error_acc=final["eval_error_acc"],
        correct_acc=final["eval_correct_acc"],
        curve=curve,
    )


def unlabelled_pool(config: QuickstartConfig) -> Dataset:
    """``config``'s synthetic pool with its labels hidden: the judge labels what is selected."""
    from .data.synthetic import make_arithmetic_dataset

    pool = make_arithmetic_dataset(config.pool_size, config.seed, split="pool", error_rate=config.error_rate)
    return pool.map(lambda row: {"label": None, "step_labels": None})


def run_quickstart(config: QuickstartConfig | None = None) -> list[RunResult]:
    """Run every strategy of ``config.selections``; the first one's annotations set the others' budget."""
    config = config or QuickstartConfig()
    from .data.synthetic import make_arithmetic_dataset

    pool = unlabelled_pool(config)
    test = make_arithmetic_dataset(config.test_size, config.seed, split="test")
    results: list[RunResult] = []
    for selection in config.selections:
        budget = results[0].annotations if results else config.budget
        random_rate = results[0].annotations / max(results[0].seen, 1) if results else 0.5
        # Full annotation at a budget labels the pool's first `budget` trajectories and trains one whole
        # learning-rate schedule on them, rather than stopping part way through the pool's schedule.
        run_pool = pool.select(range(min(budget, len(pool)))) if selection == "all" and budget else pool
        results.append(train_one(selection, run_pool, test, config, budget=budget, random_rate=random_rate))
    return results


def format_results(results: list[RunResult]) -> str:
    """The comparison as a Markdown table."""
    lines = [
        "| selection | annotations used | judge calls | trajectories seen | test F1 | error acc | correct acc |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.selection} | {r.annotations} | {r.judge_calls} | {r.seen} | {r.f1:.3f} | {r.error_acc:.3f} | {r.correct_acc:.3f} |"
        )
    return "\n".join(lines)
