"""``import actprm`` and the commands' ``--help`` load no heavy library (times: benchmarks/cli_startup.py)."""

import json
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
