"""The main job (`actprm quickstart`) on a small pool: three runs at one budget, a table, saved PRMs."""

import json

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
    assert table.count("\n| ") == 3 and table in capsys.readouterr().out
