"""Real judges misbehave: the run survives them, never pays for garbage, and resumes from the command line."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from conftest import free_port
from critic_server import FAULTS
from test_trainer import critic_server, make_config, unlabelled
from trl import TrlParser

from actprm import make_arithmetic_dataset
from actprm.cli import main as cli_main
from actprm.judges import AnnotationStore, JudgeUnavailableError, OpenAIJudge
from actprm.trainer import ActivePRMTrainer
from actprm.training_args import ActivePRMConfig


def test_command_line_dict_fields_take_json_and_resume_takes_true(tmp_path):
    (args,) = TrlParser((ActivePRMConfig,)).parse_args_and_config(
        ["--output_dir", str(tmp_path), "--model_init_kwargs", '{"dtype": "bfloat16"}', "--resume_from_checkpoint", "True"]
    )
    assert args.model_init_kwargs == {"dtype": "bfloat16"} and args.resume_from_checkpoint is True


def test_the_hub_token_is_never_pickled(tmp_path):
    args = ActivePRMConfig(output_dir=str(tmp_path), hub_token="hf_notarealsecret123", report_to="none")
    restored = pickle.loads(pickle.dumps(args))
    assert restored.hub_token is None and args.hub_token == "hf_notarealsecret123"
    assert restored.output_dir == args.output_dir


def test_cli_train_resumes_with_resume_from_checkpoint_true(tiny_backbone, tmp_path):
    data = tmp_path / "pool.jsonl"
    make_arithmetic_dataset(16, seed=3).to_json(data)
    output_dir = tmp_path / "run"
    common = ["train", "--model_name_or_path", tiny_backbone, "--dataset", str(data), "--output_dir", str(output_dir),
              "--per_device_train_batch_size", "4", "--num_ensemble", "2", "--head_hidden_size", "16",
              "--max_length", "256", "--selection", "all", "--report_to", "none", "--use_cpu", "true",
              "--save_steps", "2", "--hub_token", "hf_notarealsecret123", "--model_init_kwargs", '{"dtype": "bfloat16"}']
    assert cli_main([*common, "--max_steps", "2"]) == 0
    checkpoint = output_dir / "checkpoint-2"
    assert b"hf_notarealsecret123" not in (checkpoint / "training_args.bin").read_bytes()
    first_run = (checkpoint / "model.safetensors").stat().st_mtime_ns
    assert cli_main([*common, "--max_steps", "4", "--resume_from_checkpoint", "true"]) == 0
    assert (checkpoint / "model.safetensors").stat().st_mtime_ns == first_run  # resumed from it, not redone
    state = torch.load(output_dir / "checkpoint-4" / "training_args.bin", weights_only=False)
    assert state.hub_token is None and state.model_init_kwargs["dtype"] == "bfloat16"
    log = (output_dir / "checkpoint-4" / "trainer_state.json").read_text()
    assert '"global_step": 4' in log and Path(output_dir / "checkpoint-4" / "active_learning_state_rank0.json").exists()


def fault_judge(base_url: str, **options) -> OpenAIJudge:
    settings = dict(concurrency=4, timeout=1.0, max_retries=4, parse_retries=2, backoff=0.01, max_backoff=0.05,
                    max_tokens=64)
    return OpenAIJudge(base_url, "critic", **{**settings, **options})


def test_online_training_under_every_fault_labels_everything_right(tiny_backbone, tmp_path, caplog):
    generated = make_arithmetic_dataset(64, seed=11)
    args = make_config(tmp_path, selection="all", judge_batch_size=16, per_device_train_batch_size=8)
    with critic_server(0.0, "--fault_rate", "0.25", "--seed", "7", "--slow", "1.5") as (url, stats, _):
        judge = fault_judge(url)
        trainer = ActivePRMTrainer(tiny_backbone, args=args, train_dataset=unlabelled(generated), judge=judge)
        with caplog.at_level("WARNING", logger="actprm"):
            trainer.train()
        served = stats()
    rows = AnnotationStore(trainer.annotations_path).rows()
    truth = dict(zip(generated["id"], generated["label"]))
    assert sorted(r["id"] for r in rows) == sorted(truth)  # every question answered, none skipped
    assert all(r["label"] == truth[r["id"]] for r in rows)  # and no faulty answer became a label
    assert set(served["faults"]) == {*FAULTS, "none"}  # every kind of fault was met
    summary = trainer.active_learning_summary()
    assert (summary["annotations"], summary["judge_calls"], summary["trained"]) == (64, 64, 64)
    assert "failed (retry 1 of 4" in caplog.text and sum(judge.stats.faults.values()) > 0
    print(f"requests per question at a 25% fault mix: {served['critiques'] / 64:.2f}; faults {dict(served['faults'])}")


def test_a_garbage_judge_stops_training_loudly_within_its_window(tiny_backbone, tmp_path):
    generated = make_arithmetic_dataset(200, seed=12)
    args = make_config(tmp_path, selection="all", judge_batch_size=8, per_device_train_batch_size=8)
    with critic_server(0.0, "--garbage") as (url, stats, _):
        judge = fault_judge(url, unparseable_window=20)
        trainer = ActivePRMTrainer(tiny_backbone, args=args, train_dataset=unlabelled(generated), judge=judge)
        with pytest.raises(JudgeUnavailableError, match=r"unparseable: 20 of its last 20 .*looks reasonable to me"):
            trainer.train()
        served = stats()
    in_flight = 8 * args.max_judge_batches_in_flight  # items already sent in the batches in flight when it stopped
    assert served["critiques"] <= 3 * (20 + in_flight)  # three answers per item of the window, and of those
    assert trainer.active_learning_summary()["annotations"] == 0
    checkpoint = Path(args.output_dir) / f"checkpoint-{trainer.state.global_step}"
    assert (checkpoint / "active_learning_state_rank0.json").exists()  # stopped with everything saved
    print(f"garbage judge spend before it stopped: {served['critiques']} critiques, {judge.stats.tokens} tokens")


@pytest.mark.parametrize("in_flight", [4, 0], ids=["async", "sync"])
def test_one_trajectory_that_keeps_failing_is_skipped_and_the_run_goes_on(tiny_backbone, tmp_path, caplog, in_flight):
    generated = make_arithmetic_dataset(24, seed=13)
    unlucky = generated[5]["problem"]
    # with batches in flight the failed row is asked again alone at the end: the server still answers
    # a probe, so that is the row failing, not the judge being down
    args = make_config(tmp_path, selection="all", judge_batch_size=8, per_device_train_batch_size=8,
                       judge_item_attempts=2, max_judge_batches_in_flight=in_flight)
    with critic_server(0.0, "--fail_on", unlucky) as (url, stats, _):
        trainer = ActivePRMTrainer(tiny_backbone, args=args, train_dataset=unlabelled(generated),
                                   judge=fault_judge(url, max_retries=1))
        with caplog.at_level("WARNING", logger="actprm"):
            trainer.train()  # no JudgeUnavailableError: the judge kept answering the others
        assert stats()["faults"]["503"] == 2 * 2  # two batches of two attempts, then given up
    rows = AnnotationStore(trainer.annotations_path).rows()
    assert sorted(r["id"] for r in rows) == sorted(set(generated["id"]) - {generated[5]["id"]})
    summary = trainer.active_learning_summary()
    assert (summary["annotations"], summary["judge_failures"]) == (23, 1)
    assert summary["trained"] == 23  # the last, partial batches are trained on too: no paid label left over
    assert list(trainer.active.judge_failed.skipped) == [5] and trainer.active.judge_failed.reasons == {"HTTP 503": 2}
    assert "judge failed on trajectory 5 (will be asked again later)" in caplog.text
    assert "skipped: it gets no label" in caplog.text


def test_a_failed_push_is_one_line_and_a_nonzero_exit(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    from actprm.judges import Annotation

    store = AnnotationStore(tmp_path / "annotations.jsonl")
    store.append({"id": "a", "problem": "1+1?", "steps": ["1+1=2"]}, Annotation(-1, [1], 10, "\\boxed{-1}", "arithmetic"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nobody listens there
    monkeypatch.setenv("HF_TOKEN", "hf_notarealsecret123")
    assert cli_main(["push", "--dataset", str(store.path), "--repo_id", "someone/labels"]) == 1
    stderr = capsys.readouterr().err
    error = stderr.strip().splitlines()[-1]
    assert error.startswith("actprm push: error: pushing to someone/labels failed: ConnectError")
    assert "check the network" in error and "Traceback" not in stderr
    assert "hf_notarealsecret123" not in error


class ReadOnlyHub(BaseHTTPRequestHandler):
    """A Hub where the token may read the repo but not write to it: creating it is refused (403) but it exists,
    and every commit is refused (403)."""

    def do_GET(self):  # repo_info: the repo exists
        self._answer(200, {"id": "user/run", "sha": "0" * 40, "private": False, "siblings": []})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._answer(403, {"error": "You don't have the rights to write to user/run"})

    def _answer(self, status: int, body: dict):
        content = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("hub", ["read-only token", "unreachable"])
def test_cli_train_push_failure_is_one_line_and_keeps_the_trained_model(tiny_backbone, tmp_path, hub):
    data = tmp_path / "pool.jsonl"
    make_arithmetic_dataset(8, seed=3).to_json(data)
    output_dir = tmp_path / "run"
    server = ThreadingHTTPServer(("127.0.0.1", 0), ReadOnlyHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port if hub == 'read-only token' else free_port()}"
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_notarealsecret123"}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "actprm.cli", "train", "--model_name_or_path", tiny_backbone, "--dataset", str(data),
             "--output_dir", str(output_dir), "--per_device_train_batch_size", "4", "--num_ensemble", "2",
             "--head_hidden_size", "8", "--max_length", "256", "--judge", "arithmetic", "--hide_labels", "true",
             "--selection", "all", "--report_to", "none", "--use_cpu", "true", "--disable_tqdm", "true",
             "--push_to_hub", "true", "--hub_model_id", "user/run"],
            capture_output=True, text=True, timeout=300, env=env,
        )
    finally:
        server.shutdown()
    error = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "hf_notarealsecret123" not in result.stderr + result.stdout
    if hub == "unreachable":  # found when the repo is created, before any training
        assert error.startswith("actprm train: error: creating the Hub repo user/run failed: ConnectError")
        assert "check the network" in error and not (output_dir / "model.safetensors").exists()
        return
    assert error.startswith("actprm train: error: pushing to user/run failed: HfHubHTTPError: 403")
    assert "has write access" in error and f"actprm push --model-dir {output_dir} --repo-id user/run" in error
    assert "model saved to" in result.stdout  # trained, saved, and then the push failed
    assert (output_dir / "model.safetensors").exists() and len(AnnotationStore(output_dir / "annotations.jsonl")) == 8


def test_the_judge_is_checked_before_the_model_is_loaded(tmp_path):
    judge = OpenAIJudge("http://127.0.0.1:9/v1", "critic", timeout=2, max_retries=1, backoff=0.01)
    with pytest.raises(JudgeUnavailableError, match="request failed after 2 attempts"):  # not the missing model
        ActivePRMTrainer(str(tmp_path / "no-such-model"), args=make_config(tmp_path),
                         train_dataset=unlabelled(make_arithmetic_dataset(8)), judge=judge)
