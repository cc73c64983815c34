"""``actprm quickstart``: the main job on the embedded default (offline, CPU)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from trl import TrlParser

from ..quickstart import QuickstartConfig

HELP = "online active learning on the embedded default vs full and random annotation"


def main(argv: list[str]) -> int:
    parser = TrlParser(QuickstartConfig, prog="actprm quickstart", description=HELP)
    (config,) = parser.parse_args_and_config(argv)
    from ..quickstart import format_results, run_quickstart

    results = run_quickstart(config)
    table = format_results(results)
    output = Path(config.output_dir)
    (output / "results.md").write_text(table + "\n")
    (output / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    print(table)
    print(f"\nresults written to {output / 'results.md'} and {output / 'results.json'}")
    return 0
