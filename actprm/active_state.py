"""What active learning keeps across steps and checkpoints, and how it ends training.

`ActiveLearningState` is one process's counters, buffer and judge queue; it is saved as
`STATE_FILE` in every checkpoint folder, written last, so that a folder holding it is complete
(`last_complete_checkpoint`). `TrainingStop` is the callback that ends training at the end of the step
that asked for it: a spent budget, the last step, or a judge that could not go on.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .judges.failures import FailedItems

STATE_FILE = "active_learning_state_rank{rank}.json"


@dataclass
class ActiveLearningState:
    """What active learning has done so far on one process; saved with every checkpoint."""

    seen: int = 0
    selected: int = 0
    annotations: int = 0
    judge_calls: int = 0
    judge_tokens: int = 0
    judge_cache_hits: int = 0
    judge_failures: int = 0
    confident_with_label: int = 0
    confident_correct: int = 0
    trained: int = 0
    classification_loss_sum: float = 0.0
    regularization_loss_sum: float = 0.0
    loss_steps: int = 0
    judge_wait_seconds: float = 0.0
    """Time training spent waiting for the judge (sending, waiting for room, waiting for answers)."""
    buffer: list[tuple[int, list[int]]] = field(default_factory=list)
    """Labelled trajectories waiting for a training batch: (row, per-step training labels)."""
    judge_queue: list[int] = field(default_factory=list)
    """Selected unlabelled rows waiting for the next judge batch (with those in flight, in a checkpoint)."""
    annotated_rows: set[int] = field(default_factory=set)
    """Rows labelled so far: selecting one again (a later epoch) trains on it without a new annotation."""
    weights: dict[int, float] = field(default_factory=dict)
    """With `importance_weighting`, each selected row's loss weight: 1 / its latest selection probability."""
    judge_failed: FailedItems = field(default_factory=FailedItems)
    """Rows the judge failed on while it answered others: retried in later batches, then skipped."""
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Who pays for the judge's answers (`JudgeCache.payer`): one killed after its checkpoint finds them in the
    cache on resume and counts them as its own judge calls, not as cache hits."""

    COUNTERS = (
        "seen", "selected", "annotations", "judge_calls", "judge_tokens", "judge_cache_hits",
        "judge_failures", "confident_with_label", "confident_correct", "trained",
    )  # fmt: skip

    def __post_init__(self):  # read back from a checkpoint: a list, str keys and a dict
        self.annotated_rows = set(self.annotated_rows)
        self.weights = {int(row): weight for row, weight in self.weights.items()}
        if isinstance(self.judge_failed, dict):
            self.judge_failed = FailedItems(**self.judge_failed)

    def save(self, folder: str | os.PathLike, rank: int, judge_queue: list[int]) -> None:
        """Write the state of process ``rank`` into a checkpoint folder (which it completes), with ``judge_queue``
        as its queue (the rows in flight go first, saved as queued)."""
        state = {**asdict(self), "judge_queue": judge_queue}
        state_file(folder, rank).write_text(json.dumps(state, default=sorted))  # sets as sorted lists

    @classmethod
    def load(cls, folder: str | os.PathLike, rank: int) -> ActiveLearningState | None:
        """The state process ``rank`` saved in a checkpoint folder, ``None`` if there is none."""
        path = state_file(folder, rank)
        return cls(**json.loads(path.read_text())) if path.exists() else None


def state_file(folder: str | os.PathLike, rank: int) -> Path:
    """Where process ``rank`` keeps its `ActiveLearningState` in a checkpoint folder."""
    return Path(folder) / STATE_FILE.format(rank=rank)


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest ``checkpoint-N`` folder whose active-learning state (written last) is there."""
    complete = [
        folder
        for folder in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*")
        if folder.name.split("-")[-1].isdigit() and state_file(folder, rank=0).exists()
    ]
    return str(max(complete, key=lambda folder: int(folder.name.split("-")[-1]))) if complete else None


class TrainingStop(TrainerCallback):
    """Ends training at the end of the step (or gradient-accumulation substep) in which it was asked to.

    `ActivePRMTrainer` asks when a budget is spent and what it waited for is trained, on the last step,
    and, with a checkpoint (``save``), when the judge cannot go on.
    """

    def __init__(self):
        self.requested = self.save = False

    def request(self, save: bool = False) -> None:
        """Stop at the end of this step; with ``save``, save a checkpoint first."""
        self.requested, self.save = True, self.save or save

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self.requested = self.save = False  # a request after the last step (`_finish_last_step`) ended nothing

    def on_substep_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self._apply(control)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self._apply(control)

    def _apply(self, control: TrainerControl) -> None:
        control.should_training_stop |= self.requested
        control.should_save |= self.save
        self.requested = self.save = False
