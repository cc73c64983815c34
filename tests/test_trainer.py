"""ActivePRMTrainer: pool and online modes, budgets, judge faults, resume, and two processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from conftest import free_port
from critic_server import serving as critic_server

from actprm import make_arithmetic_dataset
from actprm.cli import main as cli_main
from actprm.judges import AnnotationStore, ArithmeticJudge, JudgeCache, JudgeUnavailableError, OpenAIJudge
from actprm.scoring import StepScorer
from actprm.trainer import ActivePRMTrainer
from actprm.training_args import ActivePRMConfig


def make_config(tmp_path: Path, **overrides) -> ActivePRMConfig:
    options = dict(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=8,
        num_train_epochs=1,
        learning_rate=1e-3,
        num_ensemble=4,
        head_hidden_size=32,
        max_length=256,
        logging_steps=2,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    return ActivePRMConfig(**{**options, **overrides})


def unlabelled(dataset):
    return dataset.map(lambda row: {"label": None, "step_labels": None})


@dataclass
class ForwardRecord:
    """Rows of every backbone forward, split by whether gradients were being recorded."""

    grad_batches: list[int] = field(default_factory=list)
    no_grad_rows: int = 0


def record_forwards(trainer) -> ForwardRecord:
    record = ForwardRecord()

    def hook(module, args, kwargs):
        rows = kwargs["input_ids"].shape[0]
        if torch.is_grad_enabled():
            record.grad_batches.append(rows)
        else:
            record.no_grad_rows += rows

    trainer.model.model.register_forward_pre_hook(hook, with_kwargs=True)
    return record


def test_confident_trajectories_are_skipped_and_cost_no_update(tiny_backbone, tmp_path):
    pool = make_arithmetic_dataset(32, seed=1)
    # every step counts as decided: the rule finds every trajectory confident
    args = make_config(tmp_path, std_threshold=1.0, pred_threshold=0.5 + 1e-6)
    trainer = ActivePRMTrainer(tiny_backbone, args=args, train_dataset=pool)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    recorder = record_forwards(trainer)
    trainer.train()
    summary = trainer.active_learning_summary()
    assert summary["seen"] == 32 and summary["selected"] == 0 and summary["trained"] == 0
    assert recorder.grad_batches == [] and recorder.no_grad_rows == 32
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


def test_uncertain_trajectories_train_in_full_batches_only(tiny_backbone, tmp_path):
    pool = make_arithmetic_dataset(44, seed=2)
    args = make_config(tmp_path, std_threshold=0.0)  # heads always disagree a little: all uncertain
    trainer = ActivePRMTrainer(tiny_backbone, args=args, train_dataset=pool)
    recorder = record_forwards(trainer)
    trainer.train()
    summary = trainer.active_learning_summary()
    assert summary["selected"] == 44 and summary["annotations"] == 44  # pool mode still counts annotations
    assert recorder.no_grad_rows == 44  # selection scored every candidate once, without gradients
    assert recorder.grad_batches == [8] * 5 + [4]  # full batches, then what is left on the last step
    assert summary["trained"] == 44 and trainer.active.buffer == []
    logged = {k for entry in trainer.state.log_history for k in entry}
    assert {"active/selected_fraction", "active/annotations", "classification_loss", "regularization_loss"} <= logged


def test_random_selection_trains_only_the_selected_rows(tiny_backbone, tmp_path):
    pool = make_arithmetic_dataset(64, seed=3)
    args = make_config(tmp_path, selection="random", random_selection_rate=0.5)
    trainer = ActivePRMTrainer(tiny_backbone, args=args, train_dataset=pool)
    recorder = record_forwards(trainer)
    trainer.train()
    summary = trainer.active_learning_summary()
    assert 16 <= summary["selected"] <= 48
    assert recorder.no_grad_rows == 0  # random selection needs no scoring pass
    assert sum(recorder.grad_batches) == summary["trained"] == summary["selected"]
    assert all(rows == 8 for rows in recorder.grad_batches[:-1])


def test_chat_template_layout_trains_and_is_saved_with_the_model(tiny_backbone, tmp_path):
    pool = make_arithmetic_dataset(16, seed=5)
    system_prompt = "Check every step."
    args = make_config(tmp_path, selection="all", use_chat_template=True, system_prompt=system_prompt)
    trainer = ActivePRMTrainer(tiny_backbone, args=args, train_dataset=pool)
    trainer.train()
    trainer.save_model()
    first_row = trainer.processing_class.decode(trainer.train_dataset[0]["input_ids"])
    assert first_row.index(system_prompt) < first_row.index(pool[0]["problem"])
    scorer = StepScorer.from_pretrained(args.output_dir)  # follows the layout the model was trained with
    assert scorer.settings["use_chat_template"] and scorer.settings["system_prompt"] == system_prompt
    row = pool[0]
    assert scorer.encode(row["problem"], row["steps"]).input_ids == trainer.train_dataset[0]["input_ids"]


def test_pseudo_label_accuracy_is_measured_on_confident_labelled_rows(tiny_backbone, tmp_path):
    """At learning rate 0 the model that selected is the saved one: its pseudo-labels are counted here, by hand."""
    pool = make_arithmetic_dataset(24, seed=4)
    args = make_config(tmp_path, std_threshold=1.0, pred_threshold=0.5 + 1e-6, logging_steps=1, learning_rate=0.0)
    trainer = ActivePRMTrainer(tiny_backbone, args=args, train_dataset=pool)
    trainer.train()
    trainer.save_model()
    assert trainer.active_learning_summary()["confident_with_label"] == 24
    results = StepScorer.from_pretrained(args.output_dir).score(pool, show_progress=False)
    pseudo_labels = [next((step for step, p in enumerate(result["scores"]) if p < 0.5), -1) for result in results]
    correct = sum(pseudo == label for pseudo, label in zip(pseudo_labels, pool["label"]))
    accuracies = [e["active/pseudo_label_accuracy"] for e in trainer.state.log_history if "active/pseudo_label_accuracy" in e]
    assert accuracies and accuracies[-1] == correct / 24


def test_online_mode_stores_judge_labels_and_never_pays_twice(tiny_backbone, tmp_path):
    generated = make_arithmetic_dataset(24, seed=5)
    args = make_config(tmp_path, selection="all", judge_batch_size=8)
    trainer = ActivePRMTrainer(tiny_backbone, args=args, train_dataset=unlabelled(generated), judge=ArithmeticJudge())
    trainer.train()
    assert trainer.active_learning_summary()["judge_calls"] == 24
    stored = AnnotationStore(trainer.annotations_path).to_dataset()
    assert sorted(stored["id"]) == sorted(generated["id"])
    truth = dict(zip(generated["id"], generated["label"]))
    assert all(row["label"] == truth[row["id"]] and row["judge"] == "arithmetic" for row in stored)

    again = ActivePRMTrainer(tiny_backbone, args=args, train_dataset=unlabelled(generated), judge=ArithmeticJudge())
    again.train()
    summary = again.active_learning_summary()
    assert summary["judge_calls"] == 0 and summary["judge_cache_hits"] == 24
    assert len(AnnotationStore(trainer.annotations_path).rows()) == 24  # no duplicates


@pytest.mark.parametrize("mode", ["pool", "online"])
def test_a_later_epoch_trains_on_known_labels_without_new_annotations(tiny_backbone, tmp_path, mode):
    pool = make_arithmetic_dataset(24, seed=8)
    args = make_config(tmp_path, selection="all", num_train_epochs=3, judge_batch_size=8)
    dataset = pool if mode == "pool" else unlabelled(pool)
    trainer = ActivePRMTrainer(tiny_backbone, args=args, train_dataset=dataset, judge=ArithmeticJudge())
    trainer.train()
    summary = trainer.active_learning_summary()
    # Every trajectory is annotated once and trained on in every epoch.
    assert (summary["seen"], summary["annotations"], summary["trained"]) == (72, 24, 72)
    assert trainer.state.global_step == 9
    if mode == "online":
        assert (summary["judge_calls"], summary["judge_cache_hits"]) == (24, 48)
        assert len(AnnotationStore(trainer.annotations_path).rows()) == 24


def test_annotation_budget_stops_training(tiny_backbone, tmp_path):
    pool = make_arithmetic_dataset(64, seed=6)
    args = make_config(tmp_path, selection="all", max_annotations=20, per_device_train_batch_size=4)
    trainer = ActivePRMTrainer(tiny_backbone, args=args, train_dataset=unlabelled(pool), judge=ArithmeticJudge())
    trainer.train()
    summary = trainer.active_learning_summary()
    assert summary["annotations"] == 20
    assert summary["seen"] < 64 and trainer.state.global_step < 16


def test_new_heads_start_from_the_run_seed(tiny_backbone, tmp_path):
    """Heads put on a backbone given by name depend on `args.seed`, not on what the process drew before."""

    def heads(seed: int, earlier_draws: int) -> torch.Tensor:
        torch.manual_seed(earlier_draws)
        trainer = ActivePRMTrainer(tiny_backbone, args=make_config(tmp_path / f"{seed}-{earlier_draws}", seed=seed))
        return trainer.model.score.model.nn1.weight.detach().clone()

    torch.testing.assert_close(heads(0, earlier_draws=1), heads(0, earlier_draws=2), rtol=0, atol=0)
    assert not torch.equal(heads(0, earlier_draws=1), heads(1, earlier_draws=1))


def test_unlabelled_rows_need_a_judge(tiny_backbone, tmp_path):
    with pytest.raises(ValueError, match="24 training rows have no label: pass a `judge`"):
        ActivePRMTrainer(tiny_backbone, args=make_config(tmp_path), train_dataset=unlabelled(make_arithmetic_dataset(24)))


def test_judge_down_at_start_fails_before_training(tiny_backbone, tmp_path):
    judge = OpenAIJudge("http://127.0.0.1:9/v1", "critic", timeout=2, max_retries=0)
    with pytest.raises(JudgeUnavailableError, match="127.0.0.1:9"):
        ActivePRMTrainer(tiny_backbone, args=make_config(tmp_path), train_dataset=unlabelled(make_arithmetic_dataset(8)),
                         judge=judge)
    assert not (tmp_path / "run" / "annotations.jsonl").exists() or not (tmp_path / "run" / "annotations.jsonl").read_text()


# ----- real processes: a critic server, a killed trainer, two training processes -----


def critic_judge(base_url: str) -> OpenAIJudge:
    return OpenAIJudge(base_url, "critic", concurrency=4, timeout=5, max_retries=1, backoff=0.01, max_tokens=64)


@pytest.mark.parametrize("killed_after", [20, 41], ids=["mid-run", "last-step"])
def test_judge_server_dying_stops_cleanly_and_resumes(tiny_backbone, tmp_path, killed_after):
    # rows 40-47 go out only on the last (12th) step, so the 41st critique is the last step waiting for the judge
    generated = make_arithmetic_dataset(48, seed=7)
    args = make_config(tmp_path, selection="all", judge_batch_size=8, per_device_train_batch_size=4)
    with critic_server(delay=0.05) as (url, stats, process):
        trainer = ActivePRMTrainer(tiny_backbone, args=args, train_dataset=unlabelled(generated), judge=critic_judge(url))
        killer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import json, time, urllib.request, os, signal
            while True:
                with urllib.request.urlopen("{url[:-3]}/stats") as r:
                    if json.load(r)["critiques"] >= {killed_after}:
                        os.kill({process.pid}, signal.SIGKILL); break
                time.sleep(0.01)
            """)])
        with pytest.raises(JudgeUnavailableError, match="resume"):
            trainer.train()
        killer.wait(timeout=30)
    first_run = AnnotationStore(trainer.annotations_path).rows()
    assert 0 < len(first_run) < 48  # several batches were in flight when the server died
    checkpoint = Path(args.output_dir) / f"checkpoint-{trainer.state.global_step}"
    assert (checkpoint / "model.safetensors").exists() and (checkpoint / "active_learning_state_rank0.json").exists()

    with critic_server() as (url, stats, _):
        resumed = ActivePRMTrainer(tiny_backbone, args=args, train_dataset=unlabelled(generated), judge=critic_judge(url))
        resumed.train(resume_from_checkpoint=True)
        asked_again = stats()["critiques"]
    rows = AnnotationStore(trainer.annotations_path).rows()
    assert sorted(r["id"] for r in rows) == sorted(generated["id"])  # nothing lost, no duplicates
    assert asked_again == 48 - len(first_run)  # nothing asked twice
    summary = resumed.active_learning_summary()
    assert summary["trained"] == 48  # and every label trained on
    # answers that came in after the checkpoint, before the server died, are the run's own, not cache hits
    assert summary["annotations"] == summary["judge_calls"] == 48 and summary["judge_cache_hits"] == 0
    truth = dict(zip(generated["id"], generated["label"]))
    assert all(r["label"] == truth[r["id"]] for r in rows)


TRAIN_SCRIPT = """
import json
import sys
from actprm import make_arithmetic_dataset
from actprm.distributed import end_process_group
from actprm.judges import OpenAIJudge
from actprm.trainer import ActivePRMTrainer
from actprm.training_args import ActivePRMConfig

def main():
    backbone, output_dir, judge_url = sys.argv[1], sys.argv[2], sys.argv[3]
    pool = make_arithmetic_dataset({n}, seed=8).map(lambda row: {{"label": None, "step_labels": None}})
    args = ActivePRMConfig(output_dir=output_dir, per_device_train_batch_size=4, num_train_epochs=1, learning_rate=1e-3,
        num_ensemble=4, head_hidden_size=32, max_length=256, save_steps=2, report_to="none", use_cpu=True, seed=0,
        selection="all", judge_batch_size=4, disable_tqdm=True, logging_steps=1)
    judge = OpenAIJudge(judge_url, "critic", concurrency=4, timeout=10)
    trainer = ActivePRMTrainer(backbone, args=args, train_dataset=pool, judge=judge)
    trainer.train(resume_from_checkpoint=len(sys.argv) > 4)
    summary = trainer.active_learning_summary()
    if trainer.is_world_process_zero():
        print("SUMMARY", json.dumps(summary), flush=True)

main()
end_process_group()  # once the trainer is gone, as README's "Scaling out" says
"""


def printed_summary(stdout: str) -> dict[str, int]:
    """The active-learning summary TRAIN_SCRIPT printed."""
    return json.loads(next(line for line in stdout.splitlines() if line.startswith("SUMMARY ")).removeprefix("SUMMARY "))


def test_killed_run_resumes_without_lost_or_repeated_annotations(tiny_backbone, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT.format(n=64))
    output_dir = tmp_path / "run"
    with critic_server(delay=0.1) as (url, stats, _):
        run = subprocess.Popen([sys.executable, str(script), tiny_backbone, str(output_dir), url])
        deadline = time.time() + 240
        # by step 6, sending the 5th and 6th batches waited for the first two (at most 4 in flight)
        while not (output_dir / "checkpoint-6").exists() and run.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        run.kill()  # SIGKILL: no cleanup of any kind
        run.wait()
        assert (output_dir / "checkpoint-6").exists()
        asked_before = stats()["critiques"]
        answered_before = len(JudgeCache(output_dir / "judge_cache.sqlite"))  # cached the moment each arrived
        assert 4 <= answered_before <= asked_before < 64

        resumed = subprocess.run([sys.executable, str(script), tiny_backbone, str(output_dir), url, "resume"],
                                 capture_output=True, text=True, timeout=600)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        # what was answered before the kill is never asked again; only answers lost in flight are
        assert stats()["critiques"] - asked_before == 64 - answered_before
        answered = stats()["questions_answered"]
    rows = AnnotationStore(output_dir / "annotations.jsonl").rows()
    assert len(rows) == len({r["id"] for r in rows}) == 64
    # the answers paid before the kill come back from the cache, and still count as the run's own judge calls
    summary = printed_summary(resumed.stdout)
    assert summary["annotations"] == summary["judge_calls"] == answered == 64 and summary["judge_cache_hits"] == 0


def test_two_processes_judge_each_trajectory_once(tiny_backbone, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT.format(n=32))
    output_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with critic_server(delay=0.3) as (url, stats, _):  # slow enough that each process has batches in flight
        result = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
             str(script), tiny_backbone, str(output_dir), url],
            capture_output=True, text=True, timeout=600, env=env,
        )
        asked = stats()["critiques"]
    errors = [line for line in result.stderr.splitlines() if "Error" in line or "terminate" in line]
    assert result.returncode == 0, "\n".join(errors)[-3000:] or result.stderr[-3000:]
    summary = printed_summary(result.stdout)
    # counters gathered over both processes; each waited for its own outstanding answers and trained on them
    assert (summary["annotations"], summary["seen"], summary["trained"], asked) == (32, 32, 32, 32)
    ranks = [{r["id"] for r in AnnotationStore(output_dir / f"annotations.rank{k}.jsonl").rows()} for k in (0, 1)]
    assert ranks[0] and ranks[1] and not ranks[0] & ranks[1]  # each trajectory judged by one process
    merged = AnnotationStore(output_dir / "annotations.jsonl").rows()
    assert sorted(r["id"] for r in merged) == sorted(ranks[0] | ranks[1]) and len(merged) == 32


def test_cli_ends_the_process_group_it_ran_in(tmp_path):
    """A command launched in a process group leaves none behind, whether it succeeds or not."""
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        assert cli_main(["score", "--model", str(tmp_path / "missing"), "--data", str(tmp_path / "missing")]) == 2
        assert not torch.distributed.is_initialized()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def test_lora_adapters_train_the_backbone_cheaply_and_the_heads_fully(tiny_backbone, tmp_path):
    from peft import LoraConfig

    pool = make_arithmetic_dataset(16, seed=9)
    trainer = ActivePRMTrainer(tiny_backbone, args=make_config(tmp_path, selection="all"), train_dataset=pool,
                               peft_config=LoraConfig(r=4, lora_alpha=8))
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any("score" in n and "nn1" in n for n in trainable)
    assert not any(n.endswith("embed_tokens.weight") for n in trainable)
    heads_before = {n: p.clone() for n, p in trainer.model.named_parameters() if "score" in n and p.requires_grad}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(before, after[n]) for n, before in heads_before.items())
    assert trainer.active_learning_summary()["trained"] == 16
