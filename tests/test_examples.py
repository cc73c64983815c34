"""The examples that need GPUs or the Hub, checked here for syntax and argument parsing.

Each training config is parsed by ``actprm train --dry_run`` with the model and data swapped for
tiny local stand-ins; every ``actprm`` command line in the shell scripts must use only flags its
command knows; the accelerate config must load with accelerate's own reader.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from actprm.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SAMPLE = Path(__file__).resolve().parents[1] / "actprm" / "resources" / "samples" / "processbench_gsm8k_sample.json"
SCRIPTS = sorted(EXAMPLES.rglob("*.sh"))
TRAIN_CONFIGS = sorted((EXAMPLES / "paper_replication").glob("*_mode.yaml"))


@pytest.mark.parametrize("config", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_training_configs_parse_on_local_stand_ins(config, tiny_backbone, tmp_path, capsys):
    settings = yaml.safe_load(config.read_text())
    settings.update(model_name_or_path=tiny_backbone, dataset=str(SAMPLE), output_dir=str(tmp_path / "out"),
                    use_cpu=True)
    settings.pop("dataset_split")  # the stand-in is a single file
    stand_in = tmp_path / config.name
    stand_in.write_text(yaml.safe_dump(settings))
    assert main(["train", "--config", str(stand_in), "--dry_run"]) == 0
    plan = capsys.readouterr().out
    assert "on 8 trajectories" in plan and f"{settings['num_ensemble']} heads" in plan
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_accelerate_config_loads_with_accelerate():
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(EXAMPLES / "paper_replication" / "accelerate_zero3.yaml")
    assert config.distributed_type == "DEEPSPEED" and config.deepspeed_config["zero_stage"] == 3


def actprm_commands(script: Path) -> list[list[str]]:
    """The ``actprm`` command lines of a shell script, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", script.read_text())
    commands = []
    for line in text.splitlines():
        line = line.split(" #")[0].strip()
        match = re.search(r"(?:^|\s)(?:actprm|-m actprm\.cli)\s+(\w+)(.*)", line)
        if match and not line.startswith("#"):
            commands.append([match.group(1), *shlex.split(match.group(2))])
    return commands


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_scripts_are_valid_bash_and_use_known_flags(script, capsys):
    subprocess.run(["bash", "-n", str(script)], check=True)
    commands = actprm_commands(script)
    assert commands, f"{script} runs no actprm command"
    for command, *rest in commands:
        with pytest.raises(SystemExit):
            main([command, "--help-all" if command == "train" else "--help"])  # train's --help omits TrainingArguments
        known = capsys.readouterr().out + " --config"  # TrlParser reads --config before parsing
        for flag in (token.split("=")[0] for token in rest if token.startswith("--")):
            assert re.search(rf"{re.escape(flag)}\b", known), f"{script.name}: `actprm {command}` has no flag {flag}"
