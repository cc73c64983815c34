"""The main job (`actprm quickstart`) on a small pool: three runs at one budget, a table, saved PRMs."""

import json
import re

import pytest

from actprm.cli import main as cli_main
from actprm.modeling import EnsemblePRMModel


def test_quickstart_compares_strategies_at_the_uncertainty_budget(tmp_path, capsys):
    output = tmp_path / "quickstart"
    code = cli_main(
        ["quickstart", "--output_dir", str(output), "--pool_size", "96", "--test_size", "40", "--eval_steps", "2",
         "--active_warmup_steps", "2"]
    )
    assert code == 0
    results = json.loads((output / "results.json").read_text())
    assert [r["selection"] for r in results] == ["uncertainty", "all", "random"]
    uncertainty, full, random = results
    assert uncertainty["seen"] == 96 and 0 < uncertainty["annotations"] <= 96
    # The baselines get exactly the annotations uncertainty used; all annotates everything it sees.
    assert full["annotations"] == uncertainty["annotations"] == full["seen"]
    assert random["annotations"] <= uncertainty["annotations"]
    for result in results:
        assert result["judge_calls"] == result["annotations"]
        assert 0 <= result["f1"] <= 1 and result["curve"]
        EnsemblePRMModel.from_pretrained(output / result["selection"])
    table = (output / "results.md").read_text()
    printed = capsys.readouterr()
    assert table.count("\n| ") == 3 and table in printed.out
    for result in results:  # a progress bar per run, and where its PRM went
        assert f"PRM saved in {output / result['selection']}" in printed.out
        assert re.search(rf"{result['selection']}: 100%.*annotations {result['annotations']}, selected \d+%", printed.err)


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--budget", "-5"], "--budget must be >= 1, got -5"),
        (["--pool_size", "-3"], "--pool_size must be >= 1, got -3"),
        (["--error_rate", "1.5"], "--error_rate must be in [0, 1]"),
        (["--pred_threshold", "0.3"], "--pred_threshold must be in (0.5, 1]"),
        (["--lr_scheduler_type", "wavy"], "--lr_scheduler_type must be one of"),
        (["--selections", "uncertainty", "greedy"], "--selections must be some of"),
    ],
    ids=["budget", "pool_size", "error_rate", "pred_threshold", "schedule", "selections"],
)
def test_quickstart_checks_every_option_before_any_work(tmp_path, capsys, flags, named):
    output = tmp_path / "quickstart"
    assert cli_main(["quickstart", "--output_dir", str(output), *flags]) == 2
    error = capsys.readouterr().err
    assert error.startswith("actprm quickstart: error: ") and error.count("\n") == 1 and named in error
    assert not output.exists()
