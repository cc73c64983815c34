"""Annotation efficiency on the embedded default: test F1 against annotations used.

Runs, on one synthetic pool, full annotation (`all`), uncertainty selection, and random selection at
the rate uncertainty ended with, evaluating on the synthetic test split as annotations accumulate.
Goals: uncertainty's curve reaches full annotation's final F1 (within 1 point) with at most 50% of
full annotation's labels, and beats random at every budget. Writes a plot and a JSON of the curves.

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
    pool_size: int = field(default=16000, metadata={"help": "Trajectories in the unlabelled synthetic pool."})
    test_size: int = field(default=1000, metadata={"help": "Labelled synthetic test trajectories."})


def interpolate(curve: list[tuple[int, float]], budgets: np.ndarray) -> np.ndarray:
    """F1 of a run at each budget (linear between evaluations; NaN outside the run)."""
    xs, ys = np.array([a for a, _ in curve], float), np.array([f for _, f in curve], float)
    return np.interp(budgets, xs, ys, left=np.nan, right=np.nan)


def main(argv: list[str]) -> int:
    (config,) = TrlParser(EfficiencyConfig).parse_args_and_config(argv)
    pool = make_arithmetic_dataset(config.pool_size, config.seed, error_rate=config.error_rate)
    pool = pool.map(lambda row: {"label": None, "step_labels": None})
    test = make_arithmetic_dataset(config.test_size, config.seed, split="test")

    full = train_one("all", pool, test, config, budget=None)
    uncertainty = train_one("uncertainty", pool, test, config, budget=None)
    rate = uncertainty.annotations / uncertainty.seen
    random = train_one("random", pool, test, config, budget=None, random_rate=rate)
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
    # The fewest annotations from which uncertainty's curve stays at full annotation's final F1 (within 1 point).
    curve = uncertainty.curve
    reached = [a for i, (a, _) in enumerate(curve) if all(f1 >= full.f1 - 0.01 for _, f1 in curve[i:])]
    fraction = min(reached) / full.annotations if reached else float("nan")
    print(format_results(runs))
    print(f"\nfull annotation: F1 {full.f1:.3f} with {full.annotations} annotations; uncertainty: F1 {uncertainty.f1:.3f} "
          f"with {uncertainty.annotations} ({uncertainty.annotations / full.annotations:.0%})")
    print("uncertainty stays at or above full F1 - 0.01 from " + (f"{min(reached)} annotations ({fraction:.0%})" if reached else "never"))
    print(f"uncertainty minus random F1 at shared budgets: min {ahead.min():+.3f}, mean {ahead.mean():+.3f} "
          f"over {len(ahead)} budgets")
    goal_parity = bool(reached) and fraction <= 0.5
    goal_random = bool(len(ahead)) and bool((ahead > 0).all())
    print(f"goal 'full F1 within 1 point at <=50% annotations': {'met' if goal_parity else 'NOT met'}")
    print(f"goal 'beats random at every budget': {'met' if goal_random else 'NOT met'}")
    print(f"plot: {output / 'annotation_efficiency.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
