"""Annotation efficiency on the embedded default: test F1 against annotations used.

For each seed (each in its own process), on that seed's synthetic pool: full annotation (`all`),
uncertainty selection, and random selection at the rate uncertainty ended with, each evaluated on
one synthetic test split as annotations accumulate. Curves are averaged over seeds at the first
seed's uncertainty evaluation budgets. Goals: uncertainty's curve stays at full annotation's final
F1 (within 1 point) from at most 50% of full annotation's labels, and beats random at every budget.
Writes a plot and a JSON of the curves.

    python benchmarks/annotation_efficiency.py --output_dir bench-annotation  # seeds 0, 1, 2
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from trl import TrlParser

from actprm.data.synthetic import make_arithmetic_dataset
from actprm.quickstart import QuickstartConfig, RunResult, format_results, train_one

STRATEGIES = ("all", "uncertainty", "random")


@dataclass
class EfficiencyConfig(QuickstartConfig):
    output_dir: str = field(default="bench-annotation", metadata={"help": "Where curves and the plot go."})
    pool_size: int = field(default=32000, metadata={"help": "Trajectories in the unlabelled synthetic pool."})
    test_size: int = field(default=1000, metadata={"help": "Labelled synthetic test trajectories."})
    eval_steps: int = field(default=250, metadata={"help": "Evaluate on the test split every this many steps."})
    seeds: list[int] = field(
        default_factory=lambda: [0, 1, 2], metadata={"help": "Seeds of the pool and of training to average over; run side by side."}
    )


def interpolate(curve: list[tuple[int, float]], budgets: np.ndarray) -> np.ndarray:
    """F1 of a run at each budget (linear between evaluations; NaN outside the run)."""
    xs, ys = np.array([a for a, _ in curve], float), np.array([f for _, f in curve], float)
    return np.interp(budgets, xs, ys, left=np.nan, right=np.nan)


def run_seed(config: EfficiencyConfig, seed: int, threads: int) -> dict[str, RunResult]:
    """The three strategies on one seed's pool; random runs at the rate uncertainty ended with.

    Every seed is scored on the same test split (``config.seed``'s).
    """
    torch.set_num_threads(threads)
    datasets.disable_progress_bars()
    test = make_arithmetic_dataset(config.test_size, config.seed, split="test")
    config = EfficiencyConfig(**{**asdict(config), "seed": seed, "output_dir": f"{config.output_dir}/seed{seed}"})
    pool = make_arithmetic_dataset(config.pool_size, seed, error_rate=config.error_rate)
    pool = pool.map(lambda row: {"label": None, "step_labels": None})
    runs = {"all": train_one("all", pool, test, config, budget=None)}
    runs["uncertainty"] = train_one("uncertainty", pool, test, config, budget=None)
    rate = runs["uncertainty"].annotations / runs["uncertainty"].seen
    runs["random"] = train_one("random", pool, test, config, budget=None, random_rate=rate)
    print(f"seed {seed}:\n{format_results(list(runs.values()))}")
    return runs


def main(argv: list[str]) -> int:
    (config,) = TrlParser(EfficiencyConfig).parse_args_and_config(argv)
    workers = len(config.seeds)
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as executor:
        seeds = list(executor.map(run_seed, [config] * workers, config.seeds, [threads] * workers))
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "curves.json").write_text(
        json.dumps({str(seed): {name: asdict(run) for name, run in runs.items()} for seed, runs in zip(config.seeds, seeds)}, indent=2)
    )

    # Every strategy's curve, averaged over seeds, at the first seed's uncertainty evaluation budgets.
    budgets = np.array(sorted({a for a, _ in seeds[0]["uncertainty"].curve if a > 0}), float)
    mean = {name: np.mean([interpolate(runs[name].curve, budgets) for runs in seeds], axis=0) for name in STRATEGIES}
    full_f1 = float(np.mean([runs["all"].f1 for runs in seeds]))
    full_annotations = float(np.mean([runs["all"].annotations for runs in seeds]))
    final = {name: (np.mean([r[name].annotations for r in seeds]), np.mean([r[name].f1 for r in seeds])) for name in STRATEGIES}

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for name in STRATEGIES:
        for runs in seeds:
            axis.plot(*zip(*runs[name].curve), color=f"C{STRATEGIES.index(name)}", alpha=0.3 if len(seeds) > 1 else 1)
        axis.plot([], [], color=f"C{STRATEGIES.index(name)}", label=name)
    axis.axhline(full_f1 - 0.01, color="grey", linestyle=":", label="full F1 - 1 point")
    axis.set_xlabel("annotations used")
    axis.set_ylabel("ProcessBench-style F1 (synthetic test)")
    axis.set_title(f"Annotation efficiency on the embedded default ({len(seeds)} seed{'s' * (len(seeds) > 1)})")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(output / "annotation_efficiency.png", dpi=120)

    # The fewest annotations from which uncertainty's mean curve stays at full annotation's final F1 (within 1 point).
    reached = [b for i, b in enumerate(budgets) if (mean["uncertainty"][i:] >= full_f1 - 0.01).all()]
    fraction = min(reached) / full_annotations if reached else float("nan")
    ahead = mean["uncertainty"] - mean["random"]
    ahead = ahead[~np.isnan(ahead)]
    print(f"\nmeans over seeds {config.seeds}:")
    for name, (annotations, f1) in final.items():
        print(f"  {name}: F1 {f1:.3f} with {annotations:.0f} annotations ({annotations / full_annotations:.0%})")
    print("uncertainty stays at or above full F1 - 0.01 from " + (f"{min(reached):.0f} annotations ({fraction:.0%})" if reached else "never"))
    print(f"uncertainty minus random F1 at {len(ahead)} budgets: min {ahead.min():+.3f}, mean {ahead.mean():+.3f}")
    goal_parity = bool(reached) and fraction <= 0.5
    goal_random = bool(len(ahead)) and bool((ahead > 0).all())
    print(f"goal 'full F1 within 1 point at <=50% annotations': {'met' if goal_parity else 'NOT met'}")
    print(f"goal 'beats random at every budget': {'met' if goal_random else 'NOT met'}")
    print(f"plot: {output / 'annotation_efficiency.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
