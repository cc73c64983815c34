"""`ActivePRMTrainer`: a `transformers.Trainer` that labels and trains only what the ensemble is unsure of.

Each batch the dataloader yields is a batch of *candidates*. The trainer scores them without
gradients, applies the selection rule, gets labels for the selected ones (the dataset's own in pool
mode, the judge's in online mode) and puts them in a buffer. A training forward and backward runs
on full batches drawn from that buffer, so only selected trajectories cost a backward pass.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import torch
from datasets import Dataset
from huggingface_hub import HfApi, ModelCard
from transformers import PreTrainedTokenizerBase, Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, enable_full_determinism, set_seed
from transformers.utils import logging

from .active_state import STATE_FILE, ActiveLearningState, TrainingStop, last_complete_checkpoint, state_file
from .data.schema import CANONICAL_COLUMNS
from .features import (
    StepFeatureCache,
    StepFeatureCollator,
    backbone_fingerprint,
    compute_step_features,
    resolve_layer,
    step_feature_rows,
)
from .gguf_loading import check_gguf_file, load_backbone_tokenizer, resolve_gguf_file
from .hub import full_repo_id, push_model, resolve_token, trainer_uploads_leaving_out
from .judges import AnnotationStore, Judge, JudgeFailure, JudgeResult, JudgeUnavailableError
from .judges.cache import JudgeCache
from .judge_pipeline import JudgePipeline
from .judges.failures import RateLimitedLog
from .metrics.processbench import processbench_metrics
from .model_card import CARD_TAGS, TrainingReport, build_model_card
from .modeling import EnsemblePRMConfig, EnsemblePRMModel
from .selection import check_strategy, first_error_from_scores, pad_step_probabilities
from .tokenization import IGNORE_INDEX, StepDataCollator, StepTokenizer, step_labels_for_training
from .training_args import ActivePRMConfig

if TYPE_CHECKING:
    from peft import PeftConfig

logger = logging.get_logger(__name__)

def _check_ids(dataset: Dataset) -> None:
    """Refuse two rows with one id but different problems or steps: annotations are keyed by id."""
    if dataset.num_rows == 0:
        raise ValueError("the training dataset has no rows")
    if "id" not in dataset.column_names:
        return
    first: dict[str, int] = {}
    for row, (item_id, problem, steps) in enumerate(zip(dataset["id"], dataset["problem"], dataset["steps"])):
        seen = first.setdefault(item_id, row)
        if seen != row and (dataset[seen]["problem"], dataset[seen]["steps"]) != (problem, steps):
            raise ValueError(
                f"train dataset: rows {seen} and {row} share the id {item_id!r} but not their problem and steps; "
                "ids key the judge's annotations, so make them unique"
            )


class ActivePRMTrainer(Trainer):
    """Train an `EnsemblePRMModel` with ActPRM's uncertainty-based active learning.

    Args:
        model: an `EnsemblePRMModel`, or the name or path of a causal LM (a new ensemble head is put
            on it) or of an `EnsemblePRMModel` checkpoint.
        args: an `ActivePRMConfig`.
        train_dataset: the pool, in actprm's canonical schema; rows with a `label` (or
            `step_labels`) are trained on their own labels (pool mode), rows without are sent to
            `judge` (online mode).
        eval_dataset: labelled data in the canonical schema; evaluation reports ProcessBench F1.
        judge: a `actprm.judges.Judge`, required when `train_dataset` has unlabelled rows.
        processing_class: the tokenizer; loaded from `model` when omitted.
        peft_config: train LoRA adapters on the backbone instead of all its weights (needs `peft`).

    With `args.step_features_dir`, the backbone is frozen and runs once, before training, over the
    train and eval trajectories whose step features are not cached yet (where the model is: move it
    to a GPU first for a fast pass; with `args.bf16` or `args.fp16` it runs under autocast); selection,
    training and evaluation then read the cached hidden states of `config.hidden_layer` at the
    separators (`actprm.features`).

    One optimisation step is one step of `Trainer`'s loop: each process scores and selects one batch of
    candidates (per gradient-accumulation substep), and the update trains on the full batch the buffer
    holds, if any: none while the buffer fills or the judge's answers are out, all it holds on the last
    step. So `max_steps`, `num_train_epochs`, `logging_steps` and `save_steps` count candidate batches,
    not updates. The learning-rate schedule advances on every step in pool mode and only on the steps
    that trained in online mode (a label is then trained at the same point of the schedule whatever the
    judge's delay); the logged ``loss`` is the mean over the steps that trained.

    Example:
        ```py
        >>> from actprm import ActivePRMConfig, ActivePRMTrainer, ArithmeticJudge, default_backbone, make_arithmetic_dataset
        >>> pool = make_arithmetic_dataset(64, split="pool").map(lambda row: {"label": None, "step_labels": None})
        >>> args = ActivePRMConfig(output_dir="my-prm", learning_rate=3e-4, report_to="none")
        >>> trainer = ActivePRMTrainer(default_backbone(), args=args, train_dataset=pool, judge=ArithmeticJudge())
        >>> trainer.train()
        >>> trainer.save_model()
        ```
    """

    _tag_names = list(CARD_TAGS)
    """Tags put on the model (`add_model_tags`), so that they reach its card and any push of it, as in TRL."""

    def __init__(
        self,
        model: EnsemblePRMModel | str,
        args: ActivePRMConfig | None = None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | dict[str, Dataset] | None = None,
        judge: Judge | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        peft_config: PeftConfig | None = None,
    ):
        args = args or ActivePRMConfig(output_dir="actprm-output")
        if judge is not None and args.process_index == 0:
            judge.check_available()  # before minutes of model loading and tokenising
        if isinstance(model, str):
            # New heads start from the run's seed, as `Trainer` seeds before `model_init`.
            enable_full_determinism(args.seed) if args.full_determinism else set_seed(args.seed)
            init_kwargs = args.model_init_kwargs or {}
            if init_kwargs.get("gguf_file"):
                check_gguf_file(resolve_gguf_file(model, **init_kwargs), needs_chat_template=args.use_chat_template)
            processing_class = processing_class or load_backbone_tokenizer(model, **init_kwargs)
            model = self._load_model(model, args, processing_class)
        if processing_class is None:
            raise ValueError("pass `processing_class` (the tokenizer) when `model` is a model object")
        if args.selection == "uncertainty":
            check_strategy(args.selection_strategy, num_heads=model.config.num_ensemble)
        model.config.use_chat_template, model.config.system_prompt = args.use_chat_template, args.system_prompt
        if args.hidden_layer is not None:
            model.config.hidden_layer = args.hidden_layer
        if peft_config is not None and args.step_features_dir is not None:
            raise ValueError("peft_config trains the backbone and step_features_dir freezes it: choose one")
        if peft_config is not None:
            model = self._wrap_peft(model, peft_config)
        self.step_tokenizer = StepTokenizer(
            processing_class,
            model.config.separator,
            max_length=args.max_length,
            label_mode=args.label_mode,
            use_chat_template=args.use_chat_template,
            system_prompt=args.system_prompt,
        )
        if train_dataset is not None:
            _check_ids(train_dataset)
            train_dataset, train_tokenized = self._without_empty_rows(train_dataset, self._tokenize(train_dataset, "train"), "train")
        else:
            train_tokenized = None
        self.pool = train_dataset
        if train_tokenized is not None and judge is None and not all(train_tokenized["has_label"]):
            raise ValueError(
                f"{train_tokenized.num_rows - sum(train_tokenized['has_label'])} training rows have no label: "
                "pass a `judge` to label them (online mode)"
            )
        if isinstance(eval_dataset, dict):
            eval_dataset = {name: self._tokenize(ds, f"eval[{name}]") for name, ds in eval_dataset.items()}
        elif eval_dataset is not None:
            eval_dataset = self._tokenize(eval_dataset, "eval")
        self.feature_cache = None
        data_collator = StepDataCollator(processing_class, keep_columns=("row",))
        if args.step_features_dir is not None:
            train_tokenized, eval_dataset = self._cache_step_features(model, args, train_tokenized, eval_dataset)
            data_collator = StepFeatureCollator(self.feature_cache, self.feature_layer, keep_columns=("row",))

        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_tokenized,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics or processbench_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        self.model.add_model_tags(self._tag_names)
        self.model_accepts_loss_kwargs = False  # training batches come from the buffer, not the dataloader
        # Read per candidate and per buffered row: held as Python lists, not read row by row from Arrow.
        self._has_label = [] if train_tokenized is None else train_tokenized["has_label"]
        self._step_rows = None
        """With cached step features: each training row's ``feature_key`` and step ``labels``."""
        if self.feature_cache is not None and train_tokenized is not None:
            self._step_rows = train_tokenized.select_columns(["feature_key", "labels"]).to_list()
        self.judge = judge
        self.report = TrainingReport.for_run(args, judge, pool_size=len(self.pool) if self.pool is not None else None)
        """How the model is trained, for its card: the settings, then (`create_model_card`) the steps and counters."""
        self.active = ActiveLearningState()
        self.stop = TrainingStop()
        self.add_callback(self.stop)
        self.judge_stopped: str | None = None
        """Why the judge could not go on (down, or answering garbage); set when training stopped for it."""
        self._judge_fault_log = RateLimitedLog()
        self.annotation_store = AnnotationStore(self._rank_annotations_path())
        self.judge_pipeline: JudgePipeline | None = None
        if self.judge is not None:
            if self.judge.cache is None:
                self.judge.cache = JudgeCache(args.judge_cache_path or os.path.join(args.output_dir, "judge_cache.sqlite"))
            in_flight = args.max_judge_batches_in_flight
            self.judge_pipeline = JudgePipeline(
                self.judge.annotate, in_flight, workers=in_flight if self.judge.concurrent_batches else 1
            )

    # ----- setup -----

    @property
    def annotations_path(self) -> Path:
        """The labelled dataset every judge annotation is appended to (jsonl)."""
        return Path(self.args.annotations_path or os.path.join(self.args.output_dir, "annotations.jsonl"))

    def _rank_annotations_path(self, rank: int | None = None) -> Path:
        """Each process appends to its own file when there are several; `train` merges them."""
        path = self.annotations_path
        if self.args.world_size == 1:
            return path
        rank = self.args.process_index if rank is None else rank
        return path.with_name(f"{path.stem}.rank{rank}{path.suffix}")

    def _merge_annotations(self) -> None:
        self.accelerator.wait_for_everyone()
        if self.args.world_size > 1 and self.is_world_process_zero():
            merged = AnnotationStore(self.annotations_path)
            for rank in range(self.args.world_size):
                merged.extend_rows(AnnotationStore(self._rank_annotations_path(rank)).rows())
        self.accelerator.wait_for_everyone()

    @staticmethod
    def _load_model(name_or_path: str, args: ActivePRMConfig, tokenizer: PreTrainedTokenizerBase) -> EnsemblePRMModel:
        """An ensemble PRM checkpoint (ours or the ActPRM release) as it is; any other LM, or a GGUF file
        (`model_init_kwargs["gguf_file"]`), gets new heads."""
        init_kwargs = args.model_init_kwargs or {}
        try:
            is_ensemble = not init_kwargs.get("gguf_file") and EnsemblePRMConfig.from_pretrained(name_or_path) is not None
        except ValueError:  # a plain language model
            is_ensemble = False
        if is_ensemble:
            return EnsemblePRMModel.from_pretrained(name_or_path, **init_kwargs)
        return EnsemblePRMModel.from_backbone(
            name_or_path,
            tokenizer=tokenizer,
            separator=args.separator,
            num_ensemble=args.num_ensemble,
            head_hidden_size=args.head_hidden_size,
            learning_probability=args.learning_probability,
            regularization_lambda=args.regularization_lambda,
            **init_kwargs,
        )

    @staticmethod
    def _wrap_peft(model: EnsemblePRMModel, peft_config: PeftConfig):
        """Adapters on the backbone (every linear layer unless targets are given); the heads train fully."""
        from peft import get_peft_model

        peft_config.target_modules = peft_config.target_modules or "all-linear"
        peft_config.modules_to_save = sorted({*(peft_config.modules_to_save or []), "score"})
        return get_peft_model(model, peft_config)

    def _cache_step_features(
        self, model: EnsemblePRMModel, args: ActivePRMConfig, train: Dataset | None, eval_dataset: Any
    ) -> tuple[Any, Any]:
        """Freeze the backbone, cache the step features of every split, and key the splits' rows to them."""
        model.freeze_backbone()
        self.feature_layer = resolve_layer(model.config.hidden_layer, model.config.get_text_config().num_hidden_layers)
        separator = self.step_tokenizer.separator_id
        named = {} if eval_dataset is None else eval_dataset if isinstance(eval_dataset, dict) else {None: eval_dataset}
        splits = {name: step_feature_rows(ds, separator) for name, ds in [("train", train), *named.items()] if ds is not None}
        autocast_dtype = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None
        with args.main_process_first(desc="computing step features"):
            self.feature_cache = StepFeatureCache(args.step_features_dir, backbone=backbone_fingerprint(model))
            for split in splits.values():
                compute_step_features(
                    model, split["input_ids"], self.feature_cache, [self.feature_layer], autocast_dtype=autocast_dtype
                )
        evaluated = {name: splits[name] for name in named}
        train = splits.get("train")
        if train is not None:  # batches of candidates are read from the cache: the token columns are not needed
            train = train.select_columns(["row", "has_label", "feature_key", "labels"])
        return train, evaluated.get(None, evaluated or None)

    def _tokenize(self, dataset: Dataset, name: str) -> Dataset:
        missing = [c for c in ("problem", "steps") if c not in dataset.column_names]
        if missing:
            raise ValueError(f"{name} dataset lacks the canonical column(s) {missing}; load it with actprm.load_steps")
        label_column = "step_labels" if self.step_tokenizer.label_mode == "per_step" else "label"

        def tokenize(record: dict, index: int) -> dict:
            has_label = record.get(label_column) is not None and (
                label_column == "label" or any(v is not None for v in record[label_column])
            )
            return {**self.step_tokenizer(record), "row": index, "has_label": has_label}

        tokenized = dataset.map(
            tokenize,
            with_indices=True,
            remove_columns=dataset.column_names,
            desc=f"Tokenizing {name} dataset",
        )
        truncated = sum(n > 0 for n in tokenized["num_dropped_steps"])
        if truncated:
            logger.warning(
                f"{name}: {truncated} of {tokenized.num_rows} solutions exceed max_length={self.step_tokenizer.max_length}; "
                f"{sum(tokenized['num_dropped_steps'])} trailing steps were dropped"
            )
        return tokenized

    def _without_empty_rows(self, dataset: Dataset, tokenized: Dataset, name: str) -> tuple[Dataset, Dataset]:
        """Both datasets without the rows whose every step was dropped by ``max_length`` (counted and logged)."""
        keep = [i for i, (n, steps) in enumerate(zip(tokenized["num_dropped_steps"], dataset["steps"])) if n < len(steps)]
        if len(keep) == dataset.num_rows:
            return dataset, tokenized
        if not keep:
            raise ValueError(f"{name}: every solution loses all its steps to max_length={self.step_tokenizer.max_length}")
        logger.warning(f"{name}: {dataset.num_rows - len(keep)} solutions are left out: max_length leaves none of their steps")
        dataset = dataset.select(keep)
        return dataset, tokenized.select(keep).map(lambda _, index: {"row": index}, with_indices=True)

    # ----- the active-learning step -----

    def training_step(self, model, inputs, num_items_in_batch=None):
        """Select and label this batch's candidates, then train on a full batch from the buffer if ready.

        Judge batches go out in the background (see `JudgePipeline`); their answers join the buffer
        when they arrive. Once a budget is spent, training drains what is outstanding: no candidate is
        selected any more, and each step trains on one full batch of the answers as they come, so labels
        that arrive late still get optimizer steps of their own. The last step, or the step nothing is
        left to wait for, trains on all the buffer holds before training stops.
        """
        if not self._draining():
            self._select_and_label(inputs)
        finishing = self._exchange_with_judge(last_step=self.state.global_step + 1 >= self.state.max_steps)
        loss = self._train_on_buffer(model, finishing)
        self._steps_since_log = (self._steps_since_log[0] + 1, self._steps_since_log[1] + int(self._step_trained))
        return loss

    _steps_since_log = (0, 0)
    """Training steps (forward-backward passes of `training_step`) since the last log, and those that trained."""

    def _draining(self) -> bool:
        """Online mode with a budget spent: training goes on only on the answers still to come."""
        return self.judge_pipeline is not None and (self._annotations_spent() or self._tokens_spent())

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """`Trainer`'s learning-rate schedule; in online mode it advances only on the steps that trained.

        Steps train nothing while the first judge batches are out (and whenever answers are late), so
        otherwise every label would be trained at a later point of the schedule than in synchronous mode.
        """
        created = self.lr_scheduler is None
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        if created and self.judge_pipeline is not None:
            trainer = self

            class StepsThatTrained(type(scheduler)):  # a class, not an attribute: the state dict stays the same
                def step(self, *args, **kwargs):
                    if trainer._step_trained:
                        super().step(*args, **kwargs)

            scheduler.__class__ = StepsThatTrained
        return scheduler

    _step_trained = True
    """Whether the last `training_step` trained on any row (the same on every process)."""

    def _train_on_buffer(self, model, finishing: bool) -> torch.Tensor:
        """Forward and backward on the buffer's next full batch; when ``finishing``, on all of it, weighted by rows."""
        loss = torch.zeros((), device=self.args.device)
        batches = self._next_training_batches(finishing)
        self._step_trained = bool(batches)
        rows = sum(len(batch["labels"]) for batch in batches)
        for batch in batches:  # the last step's rest, one optimizer step weighted by rows
            self._loss_weight = len(batch["labels"]) / rows
            loss = loss + super().training_step(model, batch)
        self._loss_weight = 1.0
        return loss

    def _last_step_unfinished(self) -> bool:
        """Rows still queued after `Trainer.train`, with the judge up and the token budget not spent."""
        queued = self._global(len(self.active.judge_queue))
        return self.judge_pipeline is not None and self.judge_stopped is None and queued > 0 and not self._tokens_spent()

    def _finish_last_step(self) -> None:
        """The last step's work, in a run resumed from that step's checkpoint with rows still queued.

        The judge went down while the last step waited for it, so `Trainer.train` has no step left to
        run: send the queue, wait for the answers, train on them in one more optimizer step and save
        the checkpoint again.
        """
        model = self.model_wrapped
        model.train()
        self.current_gradient_accumulation_steps = 1  # set per step by the epoch loop, which ran no step
        self._exchange_with_judge(last_step=True)
        trained = self.active.trained
        self._train_on_buffer(model, finishing=True)
        if self._global(self.active.trained - trained) > 0:
            if self.args.max_grad_norm:
                self.accelerator.clip_grad_norm_(model.parameters(), self.args.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad()
        self._save_checkpoint(self.model, trial=None)

    _loss_weight = 1.0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The model's loss; its classification and regularisation parts are kept for logging."""
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True)
        self.active.classification_loss_sum += outputs.classification_loss.item()
        self.active.regularization_loss_sum += outputs.regularization_loss.item()
        self.active.loss_steps += 1
        loss = loss * self._loss_weight
        return (loss, outputs) if return_outputs else loss

    def _select_and_label(self, inputs: dict[str, torch.Tensor]) -> None:
        args, active = self.args, self.active
        rows = inputs["row"].tolist()
        has_label = [bool(self._has_label[r]) for r in rows]
        active.seen += len(rows)

        if args.selection == "all" or self.state.global_step < args.active_warmup_steps:
            selected = [True] * len(rows)
        elif args.selection == "random":
            selected = (torch.rand(len(rows), generator=self._batch_generator(rows)) < args.random_selection_rate).tolist()
        else:
            selected = self._uncertain(inputs, has_label)

        allowance = self._annotation_allowance()
        for row, is_selected, labelled in zip(rows, selected, has_label):
            known = row in active.annotated_rows
            if not is_selected or (allowance <= 0 and not known) or row in active.judge_failed.skipped:
                continue
            allowance -= int(not known)
            active.selected += 1
            if labelled:
                self._count_annotation(row)
                self._add_to_buffer(row, self._pool_labels(row))
            else:
                active.judge_queue.append(row)

    def _batch_generator(self, rows: list[int]) -> torch.Generator:
        """Random numbers of a batch's selection, set by the seed and the batch's first row (same on resume)."""
        return torch.Generator().manual_seed(self.args.seed * 1_000_003 + rows[0])

    def _unwrapped_model(self) -> EnsemblePRMModel:
        """`self.model` without its distributed wrappers, unwrapped once per wrapper (it walks every module)."""
        wrapped, unwrapped = getattr(self, "_unwrapped", (None, None))
        if wrapped is not self.model:
            self._unwrapped = wrapped, unwrapped = self.model, self.accelerator.unwrap_model(self.model)
        return unwrapped

    def _uncertain(self, inputs: dict[str, torch.Tensor], has_label: list[bool]) -> list[bool]:
        args, rows = self.args, inputs["row"].tolist()
        model = self._unwrapped_model()
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model_inputs = ("input_ids", "attention_mask", "step_features")
            device_inputs = self._prepare_inputs({k: inputs[k] for k in model_inputs if k in inputs})
            heads, mask = pad_step_probabilities(model.step_probabilities(**device_inputs))
        model.train(was_training)
        decision = args.selection_settings.select(
            heads.mean(dim=0), heads.std(dim=0) if len(heads) > 1 else None, mask, heads,
            seen_before=self.active.seen - len(rows), generator=self._batch_generator(rows),
        )  # fmt: skip
        labels = inputs["labels"]
        for i, (selected, probability) in enumerate(zip(decision.selected.tolist(), decision.probability.tolist())):
            if selected and args.importance_weighting:
                self.active.weights[rows[i]] = 1 / probability
            if not selected and has_label[i]:
                self.active.confident_with_label += 1
                true_error = first_error_from_scores(labels[i][labels[i] != IGNORE_INDEX].tolist())
                self.active.confident_correct += int(decision.predicted_first_error[i].item() == true_error)
        return decision.selected.tolist()

    def _exchange_with_judge(self, last_step: bool) -> bool:
        """Take the judge's answers that are in and send the queue when it is a batch; ``True`` when finishing.

        Once a budget is spent, what is queued goes out even when less than a batch (unless the token
        budget is spent: no new requests), and each step waits, when it must, only for answers enough for
        a full training batch. Training finishes on the last step, which waits for every outstanding
        answer, or once nothing is left to wait for and the buffer holds at most one batch. Rows the judge
        failed on go out again; rows it could not be reached for go back to the queue (saved with the
        checkpoint), and training stops cleanly with everything saved.
        """
        pipeline, batch_size = self.judge_pipeline, self.args.judge_batch_size
        if pipeline is None:  # pool mode
            finishing = last_step or self._annotations_spent() or self._tokens_spent()
            if finishing:
                self.stop.request()
            return finishing
        with self._waiting_for_judge():
            self._record_answers(pipeline.answered())
        spent = self._annotations_spent()
        if last_step or spent or len(self.active.judge_queue) >= batch_size:
            with self._waiting_for_judge():  # room for the next batch; its answers count against the budget below
                self._record_answers(pipeline.answered(max_outstanding=max(pipeline.max_batches_in_flight - 1, 0)))
        tokens_spent = self._tokens_spent()  # budgets are global: every process drains and finishes together
        spent = spent or tokens_spent
        with self._waiting_for_judge():
            while True:  # rows the judge failed on go out again until answered or skipped
                queue = self.active.judge_queue
                if queue and not (tokens_spent or self.judge_stopped) and (last_step or spent or len(queue) >= batch_size):
                    records = [self.pool[row] for row in queue]
                    pipeline.send(queue, [{k: r[k] for k in ("id", "problem", "steps")} for r in records])
                    self.active.judge_queue = []
                if last_step or self.judge_stopped:
                    self._record_answers(pipeline.answered(max_outstanding=0))
                elif spent:  # draining: wait for the oldest batches until the buffer has a full one
                    while pipeline.rows_in_flight and len(self.active.buffer) < self.args.per_device_train_batch_size:
                        self._record_answers(pipeline.answered(max_outstanding=pipeline.batches_in_flight - 1))
                else:
                    self._record_answers(pipeline.answered())
                retry = (last_step or spent) and self.active.judge_queue and not tokens_spent and self.judge_stopped is None
                if not (retry and (last_step or not pipeline.rows_in_flight)):
                    break
        to_come = len(pipeline.rows_in_flight) + (0 if tokens_spent or self.judge_stopped else len(self.active.judge_queue))
        backlog = int(len(self.active.buffer) > self.args.per_device_train_batch_size)
        finishing = last_step or (spent and not self._global(to_come) and not self._global(backlog, reduction="min"))
        if finishing:
            self.stop.request()
        return finishing

    @contextmanager
    def _waiting_for_judge(self):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.active.judge_wait_seconds += time.perf_counter() - started

    def _record_answers(self, answered: Iterable[tuple[list[int], list[JudgeResult]]]) -> None:
        """Store and buffer the annotations of answered batches.

        A row the judge failed on while answering others goes back to the queue, until
        `judge_item_attempts` batches failed for it; then it is skipped (see `FailedItems`). When the judge
        is down or answers garbage, the rows not answered stay queued (and saved with the checkpoint), and
        training stops cleanly with everything saved.
        """
        active = self.active
        for rows, results in answered:
            records = [self.pool[row] for row in rows]
            not_asked, retry, labelled_rows, labelled, annotations = [], [], [], [], []
            for row, record, result in zip(rows, records, results):
                # paid: answered by the judge, or from the cache but paid by this run before it was killed
                paid = isinstance(result, JudgeFailure) or not (result.cached or row in active.annotated_rows)
                active.judge_tokens += result.tokens if paid else 0
                if isinstance(result, JudgeFailure):
                    if result.judge_down:
                        not_asked.append(row)
                        self.judge_stopped = result.reason
                    elif active.judge_failed.failed(row, result, self.args.judge_item_attempts, self._judge_fault_log):
                        retry.append(row)
                    continue
                active.judge_failed.succeeded(row)
                active.judge_calls += int(paid)
                active.judge_cache_hits += int(not paid)
                labelled_rows.append(row)
                labelled.append({**{k: record[k] for k in CANONICAL_COLUMNS}, "label": result.first_error,
                                 "step_labels": result.step_labels})
                annotations.append(result)
            self.annotation_store.extend(labelled, annotations)  # one synced write per judge batch
            for row, record in zip(labelled_rows, labelled):
                self._count_annotation(row)
                self._add_to_buffer(row, self._labels_for_row(row, step_labels_for_training(record)))
            active.judge_failures = len(active.judge_failed.skipped)
            active.judge_queue = not_asked + active.judge_queue + retry
            if not_asked:
                logger.error(f"{self.judge_stopped}; stopping with everything saved ({len(not_asked)} trajectories queued)")
                self.stop.request(save=True)

    def _count_annotation(self, row: int) -> None:
        """Count ``row`` as annotated the first time it is labelled in this run."""
        self.active.annotations += int(row not in self.active.annotated_rows)
        self.active.annotated_rows.add(row)

    def _pool_labels(self, row: int) -> list[int]:
        """The training labels of a pool row that has its own (per token, or per step with cached features)."""
        return self._step_rows[row]["labels"] if self._step_rows is not None else self.train_dataset[row]["labels"]

    def _labels_for_row(self, row: int, step_labels: list[int]) -> list[int]:
        """Per-token labels for a tokenised row: ``step_labels`` placed at its separator positions (with cached
        features: one label per kept step)."""
        if self._step_rows is not None:
            return step_labels[: len(self._step_rows[row]["labels"])]
        input_ids = self.train_dataset[row]["input_ids"]
        separator_id = self.step_tokenizer.separator_id
        labels = [IGNORE_INDEX] * len(input_ids)
        positions = [i for i, token in enumerate(input_ids) if token == separator_id]
        for position, label in zip(positions, step_labels):
            labels[position] = label
        return labels

    def _add_to_buffer(self, row: int, token_labels: list[int]) -> None:
        self.active.buffer.append((row, list(token_labels)))

    def _next_training_batches(self, take_all: bool = False) -> list[dict[str, torch.Tensor]]:
        """A full batch from the buffer once every process has one, so DDP stays in step.

        With ``take_all``, the whole buffer in batches (the last one partial), as many on every
        process (the fewest any process has; the rest stays in the buffer).
        """
        batch_size, buffer = self.args.per_device_train_batch_size, self.active.buffer
        count = -(-len(buffer) // batch_size) if take_all else int(len(buffer) >= batch_size)
        if self.accelerator.num_processes > 1:
            count = int(self.accelerator.reduce(torch.tensor(count, device=self.args.device), reduction="min"))
        taken, self.active.buffer = buffer[: count * batch_size], buffer[count * batch_size :]
        self.active.trained += len(taken)
        batches = []
        for i in range(0, len(taken), batch_size):
            chunk = taken[i : i + batch_size]
            batch = self.data_collator([{**self._features(row), "labels": labels} for row, labels in chunk])
            if self.args.importance_weighting:
                batch["loss_weights"] = torch.tensor([self.active.weights.get(row, 1.0) for row, _ in chunk])
            batches.append(batch)
        return batches

    def _features(self, row: int) -> dict[str, Any]:
        if self._step_rows is not None:
            return {"feature_key": self._step_rows[row]["feature_key"]}
        record = self.train_dataset[row]
        return {key: record[key] for key in ("input_ids", "attention_mask", "feature_key") if key in record}

    # ----- budgets -----

    def _global(self, value: int | float, reduction: str = "sum") -> float:
        tensor = torch.tensor(float(value), device=self.args.device)
        return float(self.accelerator.reduce(tensor, reduction=reduction)) if self.accelerator.num_processes > 1 else value

    def _annotation_allowance(self) -> int | float:
        """How many more trajectories this process may annotate within `max_annotations`."""
        if self.args.max_annotations is None:
            return float("inf")
        remaining = int(self.args.max_annotations - self._global(self._annotations_with_queue()))
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        return max(0, remaining // world + int(rank < remaining % world))

    def _annotations_with_queue(self) -> int:
        """Annotations so far plus the queued and in-flight rows that will be new ones."""
        active = self.active
        return active.annotations + sum(row not in active.annotated_rows for row in self._rows_to_judge())

    def _rows_to_judge(self) -> list[int]:
        """Rows sent to the judge and not answered yet, then the queued ones."""
        in_flight = self.judge_pipeline.rows_in_flight if self.judge_pipeline is not None else []
        return in_flight + self.active.judge_queue

    def _annotations_spent(self) -> bool:
        budget = self.args.max_annotations
        return budget is not None and self._global(self._annotations_with_queue()) >= budget

    def _tokens_spent(self) -> bool:
        budget = self.args.max_judge_tokens
        return budget is not None and self._global(self.active.judge_tokens) >= budget

    # ----- evaluation -----

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Loss, mean probability over heads at every position, and the labels."""
        inputs = self._prepare_inputs({k: v for k, v in inputs.items() if k != "row"})
        with torch.no_grad():
            outputs = model(**inputs)
        loss = outputs.loss.detach() if outputs.loss is not None else None
        if prediction_loss_only:
            return loss, None, None
        return loss, torch.sigmoid(outputs.logits.float()).mean(dim=0), inputs.get("labels")

    # ----- logging -----

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the active-learning counters, summed over processes, to every log (called on all processes)."""
        totals = self.active_learning_summary()
        logs["active/selected_fraction"] = totals["selected"] / max(totals["seen"], 1)
        for name in ("annotations", "judge_calls", "judge_tokens", "judge_cache_hits", "judge_failures"):
            logs[f"active/{name}"] = totals[name]
        logs["active/judge_wait_seconds"] = self._global(self.active.judge_wait_seconds, reduction="max")
        if totals["confident_with_label"]:
            logs["active/pseudo_label_accuracy"] = totals["confident_correct"] / totals["confident_with_label"]
        if "loss" in logs:  # `Trainer`'s mean over every step since the last log: over the steps that trained instead
            steps, trained = self._steps_since_log
            self._steps_since_log = (0, 0)
            if trained:
                logs["loss"] *= steps / trained
            else:
                del logs["loss"]  # no step trained: no loss to log
        if "loss" in logs and self.active.loss_steps:
            logs["classification_loss"] = self.active.classification_loss_sum / self.active.loss_steps
            logs["regularization_loss"] = self.active.regularization_loss_sum / self.active.loss_steps
            self.active.classification_loss_sum = self.active.regularization_loss_sum = 0.0
            self.active.loss_steps = 0
        super().log(logs, start_time)

    def active_learning_summary(self) -> dict[str, int]:
        """The counters summed over processes (call on every process)."""
        return {name: int(self._global(getattr(self.active, name))) for name in ActiveLearningState.COUNTERS}

    # ----- checkpoints -----

    def _save_checkpoint(self, model, trial):
        """`Trainer`'s checkpoint, completed by this process's active-learning state (written last)."""
        folder = Path(self.args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        state_file(folder, self.accelerator.process_index).unlink(missing_ok=True)  # saved again: incomplete until then
        super()._save_checkpoint(model, trial)
        self._save_state(folder)

    def _save_state(self, folder: Path) -> None:
        self.active.save(folder, self.accelerator.process_index, judge_queue=self._rows_to_judge())

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """`Trainer`'s checkpoint push (``push_to_hub``), leaving the judge's data local unless `push_judge_data`.

        `Trainer` (5.24) has no setting for what its checkpoint pushes leave out (their ``ignore_patterns`` are
        fixed), hence `trainer_uploads_leaving_out`.
        """
        if self.args.push_judge_data:
            self._save_state(Path(checkpoint_folder))  # before the push, so that the pushed checkpoint resumes
            return super()._push_from_checkpoint(checkpoint_folder)
        with trainer_uploads_leaving_out(self._judge_data_patterns()):
            super()._push_from_checkpoint(checkpoint_folder)

    def _judge_data_patterns(self) -> list[str]:
        """Upload patterns of the judge's data: annotations (per-rank files too), the judge cache (and its
        sqlite side files) where they are in `output_dir`, and every active-learning state file."""
        patterns = [STATE_FILE.format(rank="*")]
        annotations = self.annotations_path
        cache = self.judge.cache.path if self.judge is not None else Path(self.args.output_dir) / "judge_cache.sqlite"
        for path in (annotations, annotations.with_name(f"{annotations.stem}.rank*{annotations.suffix}")):
            patterns.append(os.path.relpath(path, self.args.output_dir))
        patterns.append(os.path.relpath(cache, self.args.output_dir) + "*")
        return [pattern for pattern in patterns if not pattern.startswith("..")]

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        """`Trainer.train`, also restoring the active-learning state (buffer, judge queue, counters).

        ``resume_from_checkpoint=True`` picks the last checkpoint that was completely written (a run
        killed while saving leaves a partial one behind).
        """
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"no complete checkpoint to resume from in {self.args.output_dir}")
        if resume_from_checkpoint:
            self.active = ActiveLearningState.load(resume_from_checkpoint, self.accelerator.process_index) or self.active
        if self.judge is not None:
            self.judge.cache.payer = self.active.run_id
        try:
            output = super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
            if self._last_step_unfinished():
                self._finish_last_step()
        finally:
            if self.judge_pipeline is not None:
                self.judge_pipeline.close()
        self._merge_annotations()
        if self.judge_stopped is not None:
            raise JudgeUnavailableError(
                f"training stopped at step {self.state.global_step}: {self.judge_stopped}. Everything up to it is "
                f"saved in {self.args.output_dir}: fix the judge and resume, with `--resume_from_checkpoint true` on "
                "the command line or train(resume_from_checkpoint=True)"
            )
        return output

    # ----- Hub -----

    def create_model_card(
        self,
        model_name: str | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        finetuned_from: str | None = None,
        dataset: str | list[str] | None = None,
        eval_summaries: list[dict[str, Any]] | None = None,
    ) -> None:
        """Write the actprm model card (``README.md``) and the training report it is built from into `output_dir`.

        Call on every process (the active-learning counters are summed over processes); the main one writes.

        Args:
            model_name: the model's Hub id; by default `hub_model_id` or the name of `output_dir`.
            license: licence of the weights (a Hub licence id).
            tags: tags added to the model's (`add_model_tags`: the trainer's `_tag_names` and any a user added).
            finetuned_from: Hub id of the base model; by default the backbone's, when it came from the Hub.
            dataset: Hub id(s) of the training data.
            eval_summaries: ``actprm eval`` summaries (``summary.json`` contents) for the card's results.
        """
        self.report.update(self.state.global_step, self.active_learning_summary())
        if not self.is_world_process_zero():
            return
        report = replace(self.report, datasets=[dataset] if isinstance(dataset, str) else list(dataset or []))
        report.save(self.args.output_dir)
        model = self.accelerator.unwrap_model(self.model)
        card = build_model_card(
            model.config,
            model_name or self.hub_model_id or self.args.hub_model_id or Path(self.args.output_dir).absolute().name,
            training=report,
            eval_summaries=eval_summaries or (),
            base_model=finetuned_from,
            license=license,
            tags=[*(model.model_tags or []), *([tags] if isinstance(tags, str) else tags or [])],
        )
        card.save(Path(self.args.output_dir) / "README.md")

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        *,
        create_pr: bool = False,
        **card_kwargs: Any,
    ):
        """Save the model, tokenizer, card and training report in `output_dir` and push them to `hub_model_id`.

        The repo is `args.hub_model_id` (or the name of `output_dir` in the token owner's namespace); the
        upload is `actprm.hub.push_model`'s: only model, tokenizer, card and report files, never
        checkpoints, annotations or the judge cache. A missing token fails before anything is saved.

        Args:
            commit_message: the commit's title.
            blocking: wait for the upload; ``False`` returns at once with a `concurrent.futures.Future` of the commit.
            token: token with write access; by default `args.hub_token`, ``HF_TOKEN`` or ``hf auth login``.
            revision: branch to push to (created if missing); by default `args.hub_revision`.
            private: make a new repo private; by default `args.hub_private_repo`.
            create_pr: open a pull request against the default branch.
            card_kwargs: passed to `create_model_card` (``license``, ``tags``, ``dataset``, ``eval_summaries``...).

        The arguments are `Trainer.push_to_hub`'s, in its order, and ``create_pr``.

        Returns:
            The commit (with ``blocking=False``, a future of it) on the main process, ``None`` on the others.
        """
        token = resolve_token(token or self.args.hub_token)
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        repo_id = self.hub_model_id or self.args.hub_model_id or Path(self.args.output_dir).absolute().name
        if self.is_world_process_zero():
            repo_id = full_repo_id(repo_id, token)
        self.save_model(_internal_call=True)
        self.create_model_card(model_name=repo_id, **card_kwargs)
        if not self.is_world_process_zero():
            return None
        push = partial(
            push_model,
            self.args.output_dir,
            repo_id,
            private=bool(self.args.hub_private_repo if private is None else private),
            revision=revision or self.args.hub_revision,
            create_pr=create_pr,
            commit_message=commit_message,
            token=token,
            card=ModelCard.load(Path(self.args.output_dir) / "README.md"),
        )
        return push() if blocking else HfApi(token=token).run_as_future(push)
