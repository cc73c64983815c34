"""Annotation efficiency on the embedded default: test F1 against the annotations a run used.

A budget is what one complete run spends. For each seed, on that seed's synthetic pool: full
annotation (`all`) and, for each confidence threshold, an uncertainty run and a random run at the
rate that uncertainty run ended with. Every run is one pass with its own complete learning-rate
schedule and is scored at its end on one synthetic test split. Goals, on means over seeds:
uncertainty at `pred_threshold` ends within 1 point of full annotation's F1 with at most 50% of its
labels, and at every threshold's budget it ends above random.

Evaluations in the middle of a pass are not budgets: at the same annotation count, random is
further along its cosine schedule than uncertainty (which spends its labels early in the pass), so
those points compare schedules as much as selections. They are plotted, and their gap printed, for
information. Writes the plot and a JSON of every run.

    python benchmarks/annotation_efficiency.py --output_dir bench-annotation  # seeds 0-4
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import datasets
import numpy as np
import torch
from trl import TrlParser

from actprm.data.synthetic import make_arithmetic_dataset
from actprm.quickstart import QuickstartConfig, RunResult, train_one, unlabelled_pool


@dataclass
class EfficiencyConfig(QuickstartConfig):
    output_dir: str = field(default="bench-annotation", metadata={"help": "Where runs, curves and the plot go."})
    pool_size: int = field(default=16000, metadata={"help": "Trajectories in the unlabelled synthetic pool."})
    test_size: int = field(default=1000, metadata={"help": "Labelled synthetic test trajectories."})
    eval_steps: int = field(
        default=400, metadata={"help": "Evaluate on the test split every this many steps (learning curves)."}
    )
    pred_thresholds: list[float] = field(
        default_factory=lambda: [0.9, 0.95, 0.97],
        metadata={"help": "Confidence thresholds of the uncertainty runs; each sets one budget for a random run."},
    )
    pred_threshold: float = field(
        default=0.97,
        metadata={"help": "The threshold (one of `pred_thresholds`) the full-annotation goal is read from."},
    )
    seeds: list[int] = field(
        default_factory=lambda: [0, 1, 2, 3, 4], metadata={"help": "Seeds of the pool and of training to average over."}
    )
    curves: str | None = field(
        default=None,
        metadata={"help": "A `curves.json` of an earlier run: summarise and plot it again without training."},
    )


def run_budget(config: EfficiencyConfig, seed: int, threshold: float | None) -> dict[str, RunResult]:
    """Full annotation (``threshold=None``), or uncertainty at ``threshold`` then random at its rate, on one thread.

    Every seed is scored on the same test split (``config.seed``'s).
    """
    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    test = make_arithmetic_dataset(config.test_size, config.seed, split="test")
    folder = f"{config.output_dir}/seed{seed}" + ("" if threshold is None else f"/threshold{threshold}")
    config = replace(config, seed=seed, output_dir=folder, pred_threshold=threshold or config.pred_threshold)
    pool = unlabelled_pool(config)
    if threshold is None:
        return {"all": train_one("all", pool, test, config, budget=None)}
    uncertainty = train_one("uncertainty", pool, test, config, budget=None)
    rate = uncertainty.annotations / uncertainty.seen
    random = train_one("random", pool, test, config, budget=None, random_rate=rate)
    return {f"uncertainty@{threshold}": uncertainty, f"random@{threshold}": random}


def train_all(config: EfficiencyConfig) -> dict[int, dict[str, RunResult]]:
    """Every run of every seed, one process per core; the longest jobs (uncertainty and random, highest threshold) first."""
    jobs = [
        (seed, threshold)
        for threshold in [*sorted(config.pred_thresholds, reverse=True), None]
        for seed in config.seeds
    ]
    with ProcessPoolExecutor(
        min(len(jobs), os.cpu_count() or 1), mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        results = pool.map(run_budget, [config] * len(jobs), *zip(*jobs))
        runs: dict[int, dict[str, RunResult]] = {seed: {} for seed in config.seeds}
        for (seed, _), result in zip(jobs, results):
            runs[seed].update(result)
    return runs


def mid_pass_gap(seeds: list[dict[str, RunResult]], threshold: float) -> np.ndarray:
    """Uncertainty minus random F1, means over seeds, at the uncertainty runs' own evaluations (linear in between)."""
    uncertainty, random = f"uncertainty@{threshold}", f"random@{threshold}"
    first = max(min(a for a, _ in runs[name].curve) for runs in seeds for name in (uncertainty, random))
    last = min(runs[name].annotations for runs in seeds for name in (uncertainty, random))
    budgets = np.array(sorted({a for runs in seeds for a, _ in runs[uncertainty].curve if first <= a <= last}), float)

    def at_budgets(run: RunResult) -> np.ndarray:
        return np.interp(budgets, *np.array(run.curve, float).T)

    return np.mean([at_budgets(runs[uncertainty]) - at_budgets(runs[random]) for runs in seeds], axis=0)


def plot(seeds: list[dict[str, RunResult]], config: EfficiencyConfig, path: Path) -> None:
    """Final F1 against annotations for every run (left), learning curves at `pred_threshold` (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (budgets, curves) = plt.subplots(1, 2, figsize=(11, 4))
    for color, name in enumerate(("uncertainty", "random")):
        keys = [f"{name}@{t}" for t in config.pred_thresholds] + ["all"]
        points = np.array(
            [[np.mean([r[k].annotations for r in seeds]), np.mean([r[k].f1 for r in seeds])] for k in keys]
        )
        order = points[:, 0].argsort()
        budgets.plot(*points[order].T, marker="o", color=f"C{color}", label=f"{name} (mean)")
        budgets.scatter(
            [r[k].annotations for r in seeds for k in keys],
            [r[k].f1 for r in seeds for k in keys],
            color=f"C{color}",
            alpha=0.3,
            s=10,
        )
    budgets.set_title("End of each run (one budget per threshold)")
    for color, name in enumerate(("uncertainty", "random", "all")):
        key = name if name == "all" else f"{name}@{config.pred_threshold}"
        for runs in seeds:
            curves.plot(*zip(*runs[key].curve), color=f"C{color}", alpha=0.4)
        curves.plot([], [], color=f"C{color}", label=name)
    curves.set_title(f"During the pass, pred_threshold {config.pred_threshold}")
    full_f1 = np.mean([r["all"].f1 for r in seeds])
    for axis in (budgets, curves):
        axis.axhline(full_f1 - 0.01, color="grey", linestyle=":", label="full F1 - 1 point")
        axis.set_xlabel("annotations used")
        axis.set_ylabel("ProcessBench-style F1 (synthetic test)")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(f"Annotation efficiency on the embedded default ({len(seeds)} seeds)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: list[str]) -> int:
    (config,) = TrlParser(EfficiencyConfig).parse_args_and_config(argv)
    if config.pred_threshold not in config.pred_thresholds:
        raise ValueError(
            f"pred_threshold {config.pred_threshold} is not one of pred_thresholds {config.pred_thresholds}"
        )
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    if config.curves:
        stored = json.loads(Path(config.curves).read_text())
        runs = {
            int(seed): {key: RunResult(**run) for key, run in seed_runs.items()} for seed, seed_runs in stored.items()
        }
        config.seeds = sorted(runs)
    else:
        runs = train_all(config)
        (output / "curves.json").write_text(
            json.dumps({seed: {k: asdict(r) for k, r in v.items()} for seed, v in runs.items()}, indent=2)
        )
    seeds = [runs[seed] for seed in config.seeds]
    plot(seeds, config, output / "annotation_efficiency.png")

    def mean(key: str, field: str) -> float:
        return float(np.mean([getattr(r[key], field) for r in seeds]))

    full_annotations, full_f1 = mean("all", "annotations"), mean("all", "f1")
    print(f"\nmeans over seeds {config.seeds}:\n  all: F1 {full_f1:.3f} with {full_annotations:.0f} annotations")
    ahead = {}
    for threshold in config.pred_thresholds:
        uncertainty, random = f"uncertainty@{threshold}", f"random@{threshold}"
        ahead[threshold] = mean(uncertainty, "f1") - mean(random, "f1")
        wins = sum(r[uncertainty].f1 > r[random].f1 for r in seeds)
        print(
            f"  pred_threshold {threshold}: uncertainty F1 {mean(uncertainty, 'f1'):.3f} with {mean(uncertainty, 'annotations'):.0f} "
            f"({mean(uncertainty, 'annotations') / full_annotations:.0%}); random F1 {mean(random, 'f1'):.3f} with "
            f"{mean(random, 'annotations'):.0f}; uncertainty ahead by {ahead[threshold]:+.3f} ({wins} of {len(seeds)} seeds)"
        )
        gap = mid_pass_gap(seeds, threshold)
        print(
            f"    mid-pass evaluations (not budgets), uncertainty minus random at {len(gap)} counts: "
            f"min {gap.min():+.3f}, mean {gap.mean():+.3f}"
        )
    key = f"uncertainty@{config.pred_threshold}"
    goal_parity = mean(key, "f1") >= full_f1 - 0.01 and mean(key, "annotations") <= 0.5 * full_annotations
    goal_random = all(gap > 0 for gap in ahead.values())
    print(
        f"goal 'full F1 within 1 point at <=50% annotations' (pred_threshold {config.pred_threshold}): "
        f"{'met' if goal_parity else 'NOT met'}"
    )
    print(f"goal 'beats random at every budget' ({len(ahead)} budgets): {'met' if goal_random else 'NOT met'}")
    print(f"plot: {output / 'annotation_efficiency.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
