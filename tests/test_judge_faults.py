"""Real judges misbehave: the run survives them, never pays for garbage, and resumes from the command line."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from trl import TrlParser

from actprm import make_arithmetic_dataset
from actprm.cli import main as cli_main
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
