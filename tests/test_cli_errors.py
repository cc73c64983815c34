"""Bad input to the commands: one line naming what is wrong, exit code 2, before any work."""

import json
import subprocess
import sys

import pytest
from huggingface_hub import constants

from actprm.cli import main as cli
from actprm.cli.eval import same_verdict_note
from conftest import free_port


def one_line_error(capsys, command: str) -> str:
    captured = capsys.readouterr()
    assert captured.err.startswith(f"actprm {command}: error: ") and captured.err.count("\n") == 1, captured.err
    return captured.err


@pytest.mark.parametrize("budget", ["-1", "0"])
def test_train_refuses_an_empty_annotation_budget(tiny_backbone, tmp_path, capsys, budget):
    argv = ["train", "--model_name_or_path", tiny_backbone, "--dataset", str(tmp_path / "pool.jsonl"),
            "--output_dir", str(tmp_path / "run"), "--max_annotations", budget]  # fmt: skip
    assert cli(argv) == 2
    assert f"max_annotations must be >= 1 (or unset: no budget), got {budget}" in one_line_error(capsys, "train")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind", ["text file", "empty folder"])
def test_train_names_a_model_path_that_is_not_a_model(tmp_path, capsys, kind):
    model = tmp_path / "model"
    model.write_text("not a model") if kind == "text file" else model.mkdir()
    argv = ["train", "--model_name_or_path", str(model), "--dataset", str(tmp_path / "pool.jsonl"),
            "--output_dir", str(tmp_path / "run")]  # fmt: skip
    assert cli(argv) == 2
    error = one_line_error(capsys, "train")
    assert str(model) in error and "config.json" in error


def test_eval_offline_without_data_says_which_data_to_pass(monkeypatch, capsys):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert cli(["eval", "--model", "any/prm", "--benchmark", "processbench"]) == 2
    error = one_line_error(capsys, "eval")
    assert "--data" in error and "processbench" in error and "Qwen/ProcessBench" in error


@pytest.mark.parametrize("evaluated", [["--model", "any/prm"], ["--judge", "openai", "--judge_model", "any"]])
def test_eval_without_data_when_the_hub_is_unreachable_says_which_data_to_pass(monkeypatch, capsys, evaluated):
    endpoint = f"http://127.0.0.1:{free_port()}"  # HF_ENDPOINT where nothing listens: the connection is refused
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert cli(["eval", *evaluated, "--benchmark", "processbench"]) == 2
    error = one_line_error(capsys, "eval")  # one line: no retries
    assert error.startswith(f"actprm eval: error: the Hub ({endpoint}) is unreachable")
    assert "--data" in error and "Qwen/ProcessBench" in error


def test_space_without_gradio_says_which_extra_to_install():
    probe = "import sys; sys.modules['gradio'] = None; from actprm.cli import main; sys.exit(main(['space']))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr == 'actprm space: error: the Space needs gradio: pip install "actprm[space]"\n'


def write_predictions(path, first_errors):
    path.write_text("".join(json.dumps({"id": str(i), "first_error": e}) + "\n" for i, e in enumerate(first_errors)))
    return path


def test_eval_notes_a_prm_that_gives_nearly_every_solution_the_same_verdict(tmp_path):
    note = same_verdict_note(write_predictions(tmp_path / "p.jsonl", [-1] * 96 + [2, 0, 1, 3]))
    assert note.startswith("note: the PRM predicted no error for 96 of 100 solutions")
    assert "an error for 40 of 40" in same_verdict_note(write_predictions(tmp_path / "p.jsonl", [0] * 40))
    assert same_verdict_note(write_predictions(tmp_path / "p.jsonl", [-1] * 90 + [1] * 10)) is None


def write_validity(path, validity):
    path.write_text("".join(json.dumps({"id": str(i), "validity": v}) + "\n" for i, v in enumerate(validity)))
    return path


def test_eval_notes_a_prm_that_calls_nearly_every_prmbench_step_valid_or_invalid(tmp_path):
    note = same_verdict_note(write_validity(tmp_path / "p.jsonl", [[1] * 10] * 19 + [[1, 0, 1, 1, 1, 1, 1, 1, 1, 1]]))
    assert note.startswith("note: the PRM predicted valid for 199 of 200 steps") and "--threshold" in note
    assert "invalid for 12 of 12 steps" in same_verdict_note(write_validity(tmp_path / "p.jsonl", [[0, 0, 0]] * 4))
    assert same_verdict_note(write_validity(tmp_path / "p.jsonl", [[1, 1, 1, 1, 0]] * 4)) is None
