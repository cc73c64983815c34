"""``import actprm`` and the commands' ``--help`` load no heavy library (times: benchmarks/cli_startup.py)."""

import json
import re
import subprocess
import sys

import pytest

from actprm.cli import COMMANDS

HEAVY = ("torch", "transformers", "datasets", "accelerate", "gradio")
PROBE = """
import contextlib, io, json, sys
import actprm, actprm.cli
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        code = actprm.cli.main(sys.argv[1:])
    except SystemExit as exit:
        code = exit.code
print(json.dumps({"code": code, "out": out.getvalue(), "loaded": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


def help_of(*argv: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_actprm_help_lists_every_command_without_heavy_imports():
    result = help_of("--help")
    assert result["code"] == 0 and result["loaded"] == []
    for name in COMMANDS:
        assert f"\n  {name} " in result["out"]


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_imports_no_heavy_library(command):
    result = help_of(command, "--help")
    assert result["code"] == 0 and "--" in result["out"]
    assert result["loaded"] == []


def test_public_names_load_on_first_use():
    import actprm

    assert callable(actprm.default_backbone) and actprm.EnsemblePRMModel.__name__ == "EnsemblePRMModel"
    assert set(actprm.__all__) <= set(dir(actprm))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        actprm.nothing


ACTPRM_GROUPS = ["options:", "data:", "model (TRL's ModelConfig):", "judge:", "active PRM training (ActivePRMConfig):",
                 "run:"]  # fmt: skip


def headings(help_text: str) -> list[str]:
    lines = help_text.splitlines()
    return [line for line in lines if line[:1].isalpha() and line.endswith(":") and not line.startswith("usage")]


def test_train_help_lists_actprm_options_each_once_marks_the_required_and_points_to_help_all():
    out = help_of("train", "--help")["out"]
    assert headings(out) == ACTPRM_GROUPS and "`actprm train --help-all` lists them" in out
    flags = re.findall(r"^  (--\w+)", out, re.M)
    assert len(flags) == len(set(flags)) and "--judge_cache_path" in flags and "--judge_cache" not in flags
    assert "--selection_strategy" in flags and "--learning_rate" not in flags
    assert out.startswith("usage: actprm train [-h] [--config CONFIG.yaml] --dataset DATASET --model_name_or_path")
    for flag in ("--dataset", "--model_name_or_path"):
        assert "(required) " in out.split(f"\n  {flag} ", 1)[1].split("\n  --", 1)[0], flag
    assert out.count("(required)") == 2


def test_train_help_all_adds_the_training_arguments_after_actprm_options():
    out = help_of("train", "--help-all")["out"]
    assert headings(out) == ACTPRM_GROUPS + ["transformers' TrainingArguments (as in any Trainer):"]
    flags = re.findall(r"^  (--\w+)", out, re.M)
    assert len(flags) == len(set(flags)) and flags.count("--judge_cache_path") == 1 and "--judge_cache" not in flags
    assert flags.index("--selection_strategy") < flags.index("--learning_rate")
