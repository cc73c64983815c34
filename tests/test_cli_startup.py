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


@pytest.mark.parametrize("command", [name for name in COMMANDS if name != "train"])
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


def test_train_help_lists_actprm_options_first_each_once_and_marks_the_required():
    out = help_of("train", "--help")["out"]
    headings = [line for line in out.splitlines() if line.endswith(":") and not line.startswith((" ", "usage"))]
    assert headings == ["options:", "data:", "model (TRL's ModelConfig):", "judge:",
                        "active PRM training (ActivePRMConfig):", "run:",
                        "transformers' TrainingArguments (as in any Trainer):"]  # fmt: skip
    assert out.index("\n  --selection_strategy") < out.index("\n  --learning_rate")
    flags = re.findall(r"^  (--\w+)", out, re.M)
    assert len(flags) == len(set(flags)) and "--judge_cache_path" in flags and "--judge_cache" not in flags
    assert out.startswith("usage: actprm train [-h] [--config CONFIG.yaml] --dataset DATASET --model_name_or_path")
    for flag in ("--dataset", "--model_name_or_path"):
        assert "(required) " in out.split(f"\n  {flag} ", 1)[1].split("\n  --", 1)[0], flag
    assert out.count("(required)") == 2
