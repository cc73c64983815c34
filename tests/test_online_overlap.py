"""Online mode with judge batches in flight: training overlaps labelling, budgets and checkpoints stay exact."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch

from test_trainer import critic_judge, critic_server, make_config, unlabelled

from actprm import make_arithmetic_dataset
from actprm.data.schema import StepDataError
from actprm.judge_pipeline import JudgePipeline
from actprm.judges import AnnotationStore, ArithmeticJudge
from actprm.trainer import ActivePRMTrainer


def training_forwards(trainer: ActivePRMTrainer) -> list[tuple[int, int]]:
    """Filled during training: at each training forward, the optimizer steps done and the rows out at the judge."""
    seen: list[tuple[int, int]] = []

    def hook(module, args, kwargs):
        if torch.is_grad_enabled():
            seen.append((trainer.state.global_step, len(trainer.judge_pipeline.rows_in_flight)))

    trainer.model.model.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


def online_run(backbone: str, tmp_path: Path, *, in_flight: int, delay: float, rows: int = 32, **overrides):
    """One online run against the critic server; returns (trainer, `training_forwards`, server stats)."""
    generated = make_arithmetic_dataset(rows, seed=11)
    args = make_config(tmp_path, selection="all", judge_batch_size=4, per_device_train_batch_size=4,
                       max_judge_batches_in_flight=in_flight, **overrides)
    with critic_server(delay=delay) as (url, stats, _):
        trainer = ActivePRMTrainer(backbone, args=args, train_dataset=unlabelled(generated), judge=critic_judge(url))
        at_updates = training_forwards(trainer)
        trainer.train()
        return trainer, at_updates, stats()


def logged_wait(trainer: ActivePRMTrainer) -> float:
    return [e["active/judge_wait_seconds"] for e in trainer.state.log_history if "active/judge_wait_seconds" in e][-1]


def test_training_goes_on_while_judge_batches_are_outstanding(tiny_backbone, tmp_path):
    trainer, at_updates, served = online_run(tiny_backbone, tmp_path, in_flight=3, delay=1.0)
    summary = trainer.active_learning_summary()
    assert max(in_flight for _, in_flight in at_updates) > 0  # updates ran while answers were outstanding
    assert 4 < served["peak_concurrent_critiques"] <= 3 * 4  # several batches at the judge at once, within the bound
    # the last step waited for every answer and trained on it
    assert summary["annotations"] == summary["trained"] == served["critiques"] == 32 and trainer.active.buffer == []
    assert trainer.judge_pipeline.rows_in_flight == [] and trainer.active.judge_queue == []
    stored = AnnotationStore(trainer.annotations_path).rows()
    assert len({r["id"] for r in stored}) == len(stored) == 32
    assert logged_wait(trainer) < 8 * 1.0  # far less than judging the 8 batches one after another
    assert trainer.judge.stats.requests == served["requests"]  # counted from the batches' threads, none lost
    # the first steps train nothing (the judge's answers are out): the logged loss is the mean over steps that
    # trained, i.e. that of the batches trained since the last log (one a step before the last, which trains the rest)
    regularization_lambda = trainer.model.config.regularization_lambda
    logged = [e for e in trainer.state.log_history if "loss" in e and e["step"] < trainer.state.global_step]
    assert logged and all(
        e["loss"] == pytest.approx(e["classification_loss"] + regularization_lambda * e["regularization_loss"], rel=1e-4)
        for e in logged
    )


def test_synchronous_mode_waits_for_every_batch(tiny_backbone, tmp_path):
    trainer, at_updates, served = online_run(tiny_backbone, tmp_path, in_flight=0, delay=0.25, rows=16)
    summary = trainer.active_learning_summary()
    assert at_updates and {in_flight for _, in_flight in at_updates} == {0}  # nothing is ever out at the judge while training
    assert served["peak_concurrent_critiques"] <= 4  # one batch at a time
    assert summary["annotations"] == summary["trained"] == 16
    assert logged_wait(trainer) >= 4 * 0.25  # the time of every batch (4 of 4 rows)


def test_annotation_budget_counts_rows_in_flight(tiny_backbone, tmp_path):
    trainer, _, served = online_run(tiny_backbone, tmp_path, in_flight=4, delay=0.5, max_annotations=10)
    summary = trainer.active_learning_summary()
    # the budget is never overshot though four batches could be in flight: nothing asked beyond it
    assert summary["annotations"] == summary["trained"] == served["critiques"] == 10
    assert summary["seen"] < 32


def test_answers_that_come_after_the_budget_is_spent_get_optimizer_steps_of_their_own(tiny_backbone, tmp_path):
    trainer, at_updates, served = online_run(tiny_backbone, tmp_path, in_flight=3, delay=1.0, max_annotations=16)
    summary = trainer.active_learning_summary()
    assert summary["annotations"] == summary["trained"] == served["critiques"] == 16
    assert summary["seen"] == 16  # no candidate is looked at once the budget is spent
    # the three batches still out when the budget was spent each train in a step of their own, not in one last update
    steps = [step for step, _ in at_updates]
    assert len(steps) == len(set(steps)) == 4 and trainer.active.buffer == []
    assert trainer.lr_scheduler.last_epoch == 4 < trainer.state.global_step  # the schedule moved only on those


def test_token_budget_stops_new_requests(tiny_backbone, tmp_path):
    trainer, _, served = online_run(tiny_backbone, tmp_path, in_flight=2, delay=0.5, max_judge_tokens=1)
    summary = trainer.active_learning_summary()
    # the first answer spends the budget: at most the two batches out by then were asked, and trained on
    assert 4 <= served["critiques"] <= 8 and summary["annotations"] == summary["trained"] == served["critiques"]
    assert trainer.state.global_step < 8 and trainer.active.judge_queue  # the rest stays queued, never sent


def test_rows_in_flight_at_a_checkpoint_are_saved_as_queued_and_resume_exactly(tiny_backbone, tmp_path):
    generated = unlabelled(make_arithmetic_dataset(16, seed=12))
    args = make_config(tmp_path, selection="all", judge_batch_size=4, per_device_train_batch_size=4,
                       max_judge_batches_in_flight=2, save_strategy="steps", save_steps=1)
    checkpoint = Path(args.output_dir) / "checkpoint-1"
    with critic_server(delay=1.0) as (url, stats, _):
        trainer = ActivePRMTrainer(tiny_backbone, args=args, train_dataset=generated, judge=critic_judge(url))
        trainer.train()
        asked = stats()["critiques"]
        saved = json.loads((checkpoint / "active_learning_state_rank0.json").read_text())
        # the first batch was out at the judge when step 1 was saved: its rows are in the queue
        assert len(saved["judge_queue"]) == 4 and saved["annotations"] == 0 and saved["buffer"] == []

        resumed = ActivePRMTrainer(tiny_backbone, args=args, train_dataset=generated, judge=critic_judge(url))
        resumed.train(resume_from_checkpoint=str(checkpoint))
        assert stats()["critiques"] == asked == 16  # answers that had arrived come from the cache
    summary = resumed.active_learning_summary()
    # the run paid for all 16 answers (those after the checkpoint too): resumed, they are its own, not cache hits
    assert (summary["annotations"], summary["judge_calls"], summary["judge_cache_hits"]) == (16, 16, 0)
    rows = AnnotationStore(trainer.annotations_path).rows()
    assert len(rows) == len({r["id"] for r in rows}) == 16  # no row stored twice


def test_pipeline_keeps_its_bound_and_hands_answers_back_in_order():
    items = [dict(row) for row in make_arithmetic_dataset(12, seed=13)]
    judge, threads = ArithmeticJudge(), set()
    release = threading.Event()

    def annotate(batch):
        threads.add(threading.current_thread().name)
        release.wait(timeout=30)
        return judge.annotate(batch)

    pipeline = JudgePipeline(annotate, max_batches_in_flight=2)
    pipeline.send([0, 1], items[0:2])
    pipeline.send([2, 3], items[2:4])
    assert list(pipeline.answered()) == [] and pipeline.rows_in_flight == [0, 1, 2, 3]
    release.set()
    pipeline.send([4, 5], items[4:6])  # waits for room: the oldest batch is answered first
    answered = list(pipeline.answered(max_outstanding=0))
    assert [rows for rows, _ in answered] == [[0, 1], [2, 3], [4, 5]]
    truth = [row["label"] for row in items[:6]]
    assert [result.first_error for _, results in answered for result in results] == truth
    assert all(name.startswith("actprm-judge") for name in threads)
    pipeline.close()

    synchronous = JudgePipeline(judge.annotate, max_batches_in_flight=0)
    synchronous.send([6], items[6:7])
    assert [rows for rows, _ in synchronous.answered()] == [[6]]  # judged where it was sent


def test_a_judge_error_in_the_background_is_raised_where_answers_are_taken():
    pipeline = JudgePipeline(ArithmeticJudge().annotate, max_batches_in_flight=2)
    pipeline.send([0], [{"problem": "no steps"}])
    with pytest.raises(StepDataError, match="record 0, field 'steps': missing"):
        list(pipeline.answered(max_outstanding=0))
    pipeline.close()
