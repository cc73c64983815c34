"""Annotation efficiency on the embedded default: test F1 against annotations used.

For each seed (each in its own process), on that seed's synthetic pool: full annotation (`all`),
uncertainty selection, and random selection at the rate uncertainty ended with, each evaluated on
one synthetic test split as annotations accumulate. Goals, on means over seeds: uncertainty ends
within 1 point of full annotation's F1 with at most 50% of its labels, and its curve beats random's
at every uncertainty evaluation budget that all runs cover. Writes a plot and a JSON of the curves.

    python benchmarks/annotation_efficiency.py --output_dir bench-annotation  # seeds 0-4
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
from actprm.quickstart import QuickstartConfig, RunResult, format_results, train_one, unlabelled_pool

STRATEGIES = ("all", "uncertainty", "random")


@dataclass
class EfficiencyConfig(QuickstartConfig):
    output_dir: str = field(default="bench-annotation", metadata={"help": "Where curves and the plot go."})
    pool_size: int = field(default=16000, metadata={"help": "Trajectories in the unlabelled synthetic pool."})
    test_size: int = field(default=1000, metadata={"help": "Labelled synthetic test trajectories."})
    eval_steps: int = field(default=200, metadata={"help": "Evaluate on the test split every this many steps."})
    pred_threshold: float = field(
        default=0.97, metadata={"help": "Confidence threshold of the selection rule (stricter than the main job's)."}
    )
    seeds: list[int] = field(
        default_factory=lambda: [0, 1, 2, 3, 4], metadata={"help": "Seeds of the pool and of training to average over; run side by side."}
    )
    curves: str | None = field(
        default=None, metadata={"help": "A `curves.json` of an earlier run: summarise and plot it again without training."}
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
    pool = unlabelled_pool(config)
    runs = {"all": train_one("all", pool, test, config, budget=None)}
    runs["uncertainty"] = train_one("uncertainty", pool, test, config, budget=None)
    rate = runs["uncertainty"].annotations / runs["uncertainty"].seen
    runs["random"] = train_one("random", pool, test, config, budget=None, random_rate=rate)
    print(f"seed {seed}:\n{format_results(list(runs.values()))}")
    return runs


def main(argv: list[str]) -> int:
    (config,) = TrlParser(EfficiencyConfig).parse_args_and_config(argv)
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    if config.curves:
        stored = json.loads(Path(config.curves).read_text())
        seeds = [{name: RunResult(**run) for name, run in runs.items()} for runs in stored.values()]
        config.seeds = [int(seed) for seed in stored]
    else:
        workers = len(config.seeds)
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as executor:
            seeds = list(executor.map(run_seed, [config] * workers, config.seeds, [threads] * workers))
        curves = {str(seed): {name: asdict(run) for name, run in runs.items()} for seed, runs in zip(config.seeds, seeds)}
        (output / "curves.json").write_text(json.dumps(curves, indent=2))

    # Means over seeds: final results, and curves at every uncertainty evaluation budget all runs cover.
    final = {name: (np.mean([r[name].annotations for r in seeds]), np.mean([r[name].f1 for r in seeds])) for name in STRATEGIES}
    full_annotations, full_f1 = final["all"]
    first = max(min(a for a, _ in runs[name].curve) for runs in seeds for name in ("uncertainty", "random"))
    last = min(runs[name].annotations for runs in seeds for name in ("uncertainty", "random"))
    budgets = np.array(sorted({a for runs in seeds for a, _ in runs["uncertainty"].curve if first <= a <= last}), float)
    mean = {name: np.mean([interpolate(runs[name].curve, budgets) for runs in seeds], axis=0) for name in ("uncertainty", "random")}

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

    annotations, f1 = final["uncertainty"]
    ahead = mean["uncertainty"] - mean["random"]
    print(f"\nmeans over seeds {config.seeds}:")
    for name, (used, score) in final.items():
        print(f"  {name}: F1 {score:.3f} with {used:.0f} annotations ({used / full_annotations:.0%})")
    print(f"uncertainty minus random F1 at {len(ahead)} budgets from {first} to {last} annotations: "
          f"min {ahead.min():+.3f}, mean {ahead.mean():+.3f}; behind at {[int(b) for b in budgets[ahead <= 0]]}")
    goal_parity = f1 >= full_f1 - 0.01 and annotations <= 0.5 * full_annotations
    goal_random = bool(len(ahead)) and bool((ahead > 0).all())
    print(f"goal 'full F1 within 1 point at <=50% annotations': {'met' if goal_parity else 'NOT met'}")
    print(f"goal 'beats random at every budget': {'met' if goal_random else 'NOT met'}")
    print(f"plot: {output / 'annotation_efficiency.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
