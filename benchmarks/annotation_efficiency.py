"""Annotation efficiency on the embedded default: test F1 against annotations used.

Runs, on one synthetic pool, full annotation (`all`), uncertainty selection, and random selection at
the rate uncertainty ended with, evaluating on the synthetic test split as annotations accumulate.
Goals: uncertainty reaches the full-annotation F1 (within 1 point) with at most 50% of the
annotations, and beats random at every budget. Writes a plot and a JSON of the curves.

    python benchmarks/annotation_efficiency.py --output_dir bench-annotation
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from trl import TrlParser

from actprm.data.synthetic import make_arithmetic_dataset
from actprm.quickstart import QuickstartConfig, RunResult, format_results, train_one


@dataclass
class EfficiencyConfig(QuickstartConfig):
    output_dir: str = field(default="bench-annotation", metadata={"help": "Where curves and the plot go."})


def interpolate(curve: list[tuple[int, float]], budgets: np.ndarray) -> np.ndarray:
    """F1 of a run at each budget (linear between evaluations; NaN outside the run)."""
    xs, ys = np.array([a for a, _ in curve], float), np.array([f for _, f in curve], float)
    return np.interp(budgets, xs, ys, left=np.nan, right=np.nan)


def main(argv: list[str]) -> int:
    (config,) = TrlParser(EfficiencyConfig).parse_args_and_config(argv)
    pool = make_arithmetic_dataset(config.pool_size, config.seed, error_rate=config.error_rate)
    pool = pool.map(lambda row: {"label": None, "step_labels": None})
    test = make_arithmetic_dataset(config.test_size, config.seed, split="test")

    full = train_one("all", pool, test, config, budget=config.pool_size)
    uncertainty = train_one("uncertainty", pool, test, config, budget=config.pool_size)
    rate = uncertainty.annotations / uncertainty.seen
    random = train_one("random", pool, test, config, budget=config.pool_size, random_rate=rate)
    runs: list[RunResult] = [full, uncertainty, random]

    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "curves.json").write_text(json.dumps([asdict(r) for r in runs], indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for run in runs:
        axis.plot(*zip(*run.curve), marker="o", markersize=3, label=run.selection)
    axis.set_xlabel("annotations used")
    axis.set_ylabel("ProcessBench-style F1 (synthetic test)")
    axis.set_title("Annotation efficiency on the embedded default")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(output / "annotation_efficiency.png", dpi=120)

    shared = np.array(sorted({a for a, _ in uncertainty.curve if a > 0}))
    ahead = interpolate(uncertainty.curve, shared) - interpolate(random.curve, shared)
    ahead = ahead[~np.isnan(ahead)]
    fraction = uncertainty.annotations / full.annotations
    print(format_results(runs))
    print(f"\nuncertainty used {fraction:.0%} of full annotation's labels; "
          f"F1 {uncertainty.f1:.3f} vs full {full.f1:.3f} (gap {full.f1 - uncertainty.f1:+.3f})")
    print(f"uncertainty minus random F1 at shared budgets: min {ahead.min():+.3f}, mean {ahead.mean():+.3f} "
          f"over {len(ahead)} budgets")
    goal_parity = uncertainty.f1 >= full.f1 - 0.01 and fraction <= 0.5
    goal_random = bool(len(ahead)) and bool((ahead > 0).all())
    print(f"goal 'full F1 within 1 point at <=50% annotations': {'met' if goal_parity else 'NOT met'}")
    print(f"goal 'beats random at every budget': {'met' if goal_random else 'NOT met'}")
    print(f"plot: {output / 'annotation_efficiency.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
