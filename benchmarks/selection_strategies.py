"""Acquisition strategies against random selection at the same label count, on cached frozen features.

Every strategy of `actprm.selection` runs at a fixed rate (the most uncertain share of each batch, so
that every run uses exactly ``floor(budget * pool)`` labels), at each budget, against random selection
of the same count, paired by seed (same pool order, same initial heads). Some strategies also run with
an epsilon-greedy random share, with and without importance weighting of the loss. Full annotation is
the ceiling.

The setting is the frozen-backbone one of ``benchmarks/real_data.py``: the backbone's step-end hidden
states are computed once, and each run trains only an ensemble of MLP heads (actprm's `EnsembleHead`,
anchored to its initial weights) in one streaming pass the way `ActivePRMTrainer` does: candidate
batches in a seeded random order, scored without gradients, the selected ones buffered, one AdamW step
per full buffered batch, a linear learning-rate decay over the pass. A run takes about a second, so
every setting has 10 paired seeds. Selection goes through `actprm.selection.SelectionSettings.select`,
the function the trainer calls. Fine-tuning the backbone is not measured here.

- ``--setting real``: PRM800K phase 1 with SmolLM2-135M-Instruct (the splits of ``real_data.py``: the
  pool and a validation split from disjoint train problems, test trajectories), human step ratings.
- ``--setting synthetic``: the synthetic arithmetic pool with the embedded tiny default backbone
  (features of its last layer), first-error labels.

Metrics of each run: step AUROC on test over rated steps (primary), and ProcessBench-style F1 on test
at the threshold chosen on the validation split. Writes ``runs.json``, ``results.md`` (the table) and
``selection_strategies.png`` (test AUROC against labels used) to `--output_dir`.

    python benchmarks/selection_strategies.py --setting synthetic --output_dir bench-strategies/synthetic
    python benchmarks/selection_strategies.py --setting real --cache_dir real-data-cache \\
        --output_dir bench-strategies/real
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from trl import TrlParser

from actprm.metrics import calibrate_threshold, first_error_from_scores, processbench_scores
from actprm.modeling import EnsembleHead, EnsembleLinear
from actprm.selection import STRATEGIES, SelectionSettings, acquire
from actprm.tokenization import IGNORE_INDEX
from real_data import RealDataConfig, auroc, build_step_tokenizer, load_splits  # this script's folder

RANDOM, FULL = "random", "all"
THRESHOLDS = [round(t, 2) for t in np.arange(0.02, 0.99, 0.02)]
"""Candidate F1 thresholds tried on the validation split."""


@dataclass
class StrategiesConfig:
    setting: Literal["synthetic", "real"] = field(
        default="synthetic", metadata={"help": "`real`: PRM800K and SmolLM2 features; `synthetic`: the embedded default."}
    )
    output_dir: str = field(default="bench-strategies", metadata={"help": "Where runs.json, results.md and the plot go."})
    budgets: list[float] = field(default_factory=lambda: [0.2, 0.4, 0.6], metadata={"help": "Shares of the pool labelled."})
    seeds: list[int] = field(default_factory=lambda: list(range(10)), metadata={"help": "Paired seeds of every setting."})
    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES), metadata={"help": "Strategies to compare."})
    mixed_strategies: list[str] = field(
        default_factory=lambda: ["actprm", "bald_max"],
        metadata={"help": "Strategies also run with `random_share`, plain and importance-weighted."},
    )
    random_share: float = field(default=0.2, metadata={"help": "Epsilon-greedy share of the mixed runs."})
    pred_threshold: float = field(default=0.9, metadata={"help": "The `actprm` score's confidence scale."})
    std_threshold: float = field(default=0.01, metadata={"help": "The `actprm` score's spread scale."})
    num_ensemble: int = field(default=8, metadata={"help": "Heads."})
    head_hidden_size: int = field(default=128, metadata={"help": "Hidden width of each head."})
    regularization_lambda: float = field(default=0.5, metadata={"help": "Weight of the anchor term."})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate, decayed linearly over the pass."})
    batch_size: int = field(default=8, metadata={"help": "Trajectories per candidate batch and per training batch."})
    workers: int = field(default=2, metadata={"help": "Processes (one thread each); seeds are spread over them."})
    pool_size: int = field(default=2000, metadata={"help": "Trajectories in the pool (real: as the cache was built)."})
    validation_size: int = field(default=300, metadata={"help": "Validation trajectories, for the F1 threshold."})
    test_size: int = field(default=600, metadata={"help": "Test trajectories."})
    max_length: int = field(default=768, metadata={"help": "Real: longest trajectory in tokens (as the cache was built)."})
    cache_dir: str = field(default="real-data-cache", metadata={"help": "Real: the step-feature cache."})
    shared_dir: str = field(default="../shared", metadata={"help": "Real: folder with data/ and models/."})
    layer: int = field(default=20, metadata={"help": "Real: the hidden layer the heads read."})
    runs: str | None = field(default=None, metadata={"help": "A runs.json of an earlier run: summarise it again."})


@dataclass
class Split:
    """Step features of a split: per trajectory ``[steps, hidden]`` states, step labels (-100: unknown) and
    the first-error reference (-1: none)."""

    features: list[torch.Tensor]
    labels: list[torch.Tensor]

    @property
    def references(self) -> list[int]:
        return [int((lab == 0).nonzero()[0]) if (lab == 0).any() else -1 for lab in self.labels]


# ----- features -----


def step_labels_at_separators(record: dict, separator_id: int) -> list[int]:
    return [label for token, label in zip(record["input_ids"], record["labels"]) if token == separator_id]


def synthetic_splits(config: StrategiesConfig) -> dict[str, Split]:
    """Last-layer states of the embedded default backbone at every step of the synthetic pool, validation and test."""
    from actprm import EnsemblePRMModel, make_arithmetic_dataset
    from actprm.default_backbone import default_backbone
    from actprm.tokenization import DEFAULT_SEPARATOR, StepTokenizer
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_backbone())
    model = EnsemblePRMModel.from_backbone(default_backbone(), tokenizer=tokenizer).eval()
    step_tokenizer = StepTokenizer(tokenizer, DEFAULT_SEPARATOR)
    data = {
        "pool": make_arithmetic_dataset(config.pool_size, seed=0),
        "validation": make_arithmetic_dataset(config.validation_size, seed=1),
        "test": make_arithmetic_dataset(config.test_size, seed=0, split="test"),
    }
    splits = {}
    for name, dataset in data.items():
        records = [step_tokenizer(record) for record in dataset]
        features = []
        with torch.no_grad():
            for record in records:
                ids = torch.tensor([record["input_ids"]])
                states = model.model(input_ids=ids).last_hidden_state[0]
                features.append(states[ids[0] == step_tokenizer.separator_id].float())
        labels = [torch.tensor(step_labels_at_separators(r, step_tokenizer.separator_id)) for r in records]
        splits[name] = Split(features, labels)
    return splits


def real_splits(config: StrategiesConfig) -> dict[str, Split]:
    """`real_data.py`'s PRM800K splits (at most the given sizes), their states of `layer` read from the step-feature
    cache; trajectories the cache lacks are left out."""
    from transformers import AutoTokenizer

    from actprm.features import StepFeatureCache, trajectory_key
    from actprm.tokenization import add_separator_token

    real = RealDataConfig(
        shared_dir=config.shared_dir, cache_dir=config.cache_dir, max_length=config.max_length,
        pool_size=config.pool_size, validation_size=config.validation_size, test_size=config.test_size,
        processbench_sizes=[0, 0, 0, 0], prmbench_size=0,
    )  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(Path(real.shared_dir) / real.model_dir, gguf_file=real.gguf_file)
    add_separator_token(tokenizer, "<extra_0>")  # as `EnsemblePRMModel.from_backbone` did for the cache
    step_tokenizer = build_step_tokenizer(real, tokenizer)
    cache = StepFeatureCache(config.cache_dir)
    splits = {}
    for name, dataset in load_splits(real, step_tokenizer).items():
        if name not in ("pool", "validation", "test"):
            continue
        records = [step_tokenizer(record) for record in dataset]
        records = [r for r in records if cache.has(trajectory_key(r["input_ids"]), config.layer)]  # cached ones only
        splits[name] = Split(
            [cache.get(trajectory_key(r["input_ids"]), config.layer) for r in records],
            [torch.tensor(step_labels_at_separators(r, step_tokenizer.separator_id)) for r in records],
        )
    return splits


def pad(split: Split, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[B, S, H]`` features, ``[B, S]`` labels (-100 on padding) and the step mask of ``rows``."""
    features = torch.nn.utils.rnn.pad_sequence([split.features[r] for r in rows], batch_first=True)
    labels = torch.nn.utils.rnn.pad_sequence([split.labels[r] for r in rows], batch_first=True, padding_value=IGNORE_INDEX)
    lengths = torch.tensor([len(split.labels[r]) for r in rows])
    return features, labels, torch.arange(features.shape[1]) < lengths.unsqueeze(1)


# ----- one run -----


def new_heads(config: StrategiesConfig, hidden_size: int, seed: int) -> EnsembleHead:
    """Heads initialised as `EnsemblePRMModel` does (truncated normal, zero biases), the anchor a copy."""
    torch.manual_seed(seed)
    heads = EnsembleHead(config.num_ensemble, hidden_size, config.head_hidden_size)
    with torch.no_grad():
        for trained, anchor in zip(heads.model.modules(), heads.reg_model.modules()):
            if isinstance(trained, EnsembleLinear):
                std = 1 / (2 * math.sqrt(trained.in_features))
                torch.nn.init.trunc_normal_(trained.weight, std=std, a=-2 * std, b=2 * std)
                torch.nn.init.zeros_(trained.bias)
                anchor.weight.copy_(trained.weight)
                anchor.bias.copy_(trained.bias)
    return heads


def train_step(heads, optimizer, config, split: Split, rows: list[int], weights: list[float]) -> None:
    """One AdamW step on ``rows``: per head the (weighted) mean BCE over rated steps, plus the anchor term."""
    features, labels, _ = pad(split, rows)
    logits = heads(features)  # [E, B, S]
    kept = (labels != IGNORE_INDEX).float() * torch.tensor(weights).unsqueeze(1)
    per_position = F.binary_cross_entropy_with_logits(logits, labels.clamp(min=0).float().expand_as(logits), reduction="none")
    loss = (per_position * kept).sum(dim=(1, 2)).mean() / kept.sum().clamp(min=1e-12)
    loss = loss + config.regularization_lambda * heads.regularization()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def one_pass(
    config: StrategiesConfig, splits: dict[str, Split], seed: int, rate: float, settings: SelectionSettings | None
) -> EnsembleHead:
    """One streaming pass over the pool selecting ``rate`` of it with ``settings`` (None: at random)."""
    pool = splits["pool"]
    heads = new_heads(config, pool.features[0].shape[1], seed)
    optimizer = torch.optim.AdamW(heads.model.parameters(), lr=config.learning_rate)
    order = torch.randperm(len(pool.features), generator=torch.Generator().manual_seed(seed)).tolist()
    batches = [order[start : start + config.batch_size] for start in range(0, len(order), config.batch_size)]
    generator = torch.Generator().manual_seed(seed + 1)
    buffer, seen = [], 0
    for step, rows in enumerate(batches):
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate * (1 - step / len(batches))
        if settings is None:
            selected, probability = acquire(torch.rand(len(rows), generator=generator), rate=rate, seen_before=seen)
        else:
            features, _, mask = pad(pool, rows)
            with torch.no_grad():
                probabilities = torch.sigmoid(heads(features))
            decision = settings.select(
                probabilities.mean(0), probabilities.std(0), mask, probabilities, seen_before=seen, generator=generator
            )
            selected, probability = decision.selected, decision.probability
        seen += len(rows)
        weight = settings is not None and settings.importance_weighting
        buffer += [(r, 1 / p if weight else 1.0) for r, s, p in zip(rows, selected.tolist(), probability.tolist()) if s]
        last = step == len(batches) - 1
        while len(buffer) >= config.batch_size or (last and buffer):
            taken, buffer = buffer[: config.batch_size], buffer[config.batch_size :]
            train_step(heads, optimizer, config, pool, [r for r, _ in taken], [w for _, w in taken])
            if not last:
                break
    return heads


@torch.no_grad()
def step_scores(heads: EnsembleHead, split: Split) -> list[list[float]]:
    return [torch.sigmoid(heads(states)).mean(0).tolist() for states in split.features]


def evaluate(heads: EnsembleHead, splits: dict[str, Split]) -> dict[str, float]:
    """Test step AUROC over rated steps; test F1 at the validation split's best threshold."""
    test = step_scores(heads, splits["test"])
    flat = np.concatenate([np.asarray(s) for s in test])
    labels = torch.cat(splits["test"].labels).numpy()
    rated = labels != IGNORE_INDEX
    validation = step_scores(heads, splits["validation"])
    threshold, _ = calibrate_threshold(validation, splits["validation"].references, THRESHOLDS)
    predictions = [first_error_from_scores(s, threshold) for s in test]
    return {
        "auroc": auroc(flat[rated], labels[rated]),
        "f1": processbench_scores(predictions, splits["test"].references)["f1"],
        "threshold": threshold,
    }


# ----- all runs -----

_SPLITS: dict[str, Split] = {}


def _load_worker(path: str) -> None:
    torch.set_num_threads(1)
    _SPLITS.update({name: Split(**split) for name, split in torch.load(path).items()})


def run_names(config: StrategiesConfig) -> list[tuple[str, float, SelectionSettings | None]]:
    """``(name, rate, settings)`` of every run of one seed."""
    runs = [(FULL, 1.0, None)]
    common = {"pred_threshold": config.pred_threshold, "std_threshold": config.std_threshold}
    for budget in config.budgets:
        runs.append((f"{RANDOM}@{budget}", budget, None))
        for strategy in config.strategies:
            runs.append((f"{strategy}@{budget}", budget, SelectionSettings(strategy, selection_rate=budget, **common)))
        for strategy in config.mixed_strategies:
            for weighted in (False, True):
                name = f"{strategy}+random{config.random_share:g}{'+iw' if weighted else ''}@{budget}"
                settings = SelectionSettings(
                    strategy, selection_rate=budget, random_share=config.random_share, importance_weighting=weighted,
                    **common,
                )  # fmt: skip
                runs.append((name, budget, settings))
    return runs


def run_seed(config: StrategiesConfig, seed: int) -> dict[str, dict[str, float]]:
    results = {}
    pool_size = len(_SPLITS["pool"].features)
    for name, rate, settings in run_names(config):
        heads = one_pass(config, _SPLITS, seed, rate, settings)
        results[name] = {**evaluate(heads, _SPLITS), "labels": math.floor(rate * pool_size + 1e-9)}
    print(f"seed {seed}: {len(results)} runs", flush=True)
    return results


def run_all(config: StrategiesConfig, output: Path) -> dict[int, dict[str, dict[str, float]]]:
    """Every run of every seed; ``features.pt`` (the splits' features) is reused when `output_dir` has it, and
    ``runs.json`` is rewritten as each seed finishes."""
    path = output / "features.pt"
    if not path.exists():
        splits = synthetic_splits(config) if config.setting == "synthetic" else real_splits(config)
        torch.save({name: asdict(split) for name, split in splits.items()}, path)
    for name, split in torch.load(path).items():
        steps = torch.cat(split["labels"])
        print(f"{name}: {len(split['features'])} trajectories, {int((steps != IGNORE_INDEX).sum())} rated steps", flush=True)
    runs = {}
    with ProcessPoolExecutor(
        config.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_load_worker, initargs=(str(path),)
    ) as executor:
        futures = {executor.submit(run_seed, config, seed): seed for seed in config.seeds}
        for future in as_completed(futures):
            runs[futures[future]] = future.result()
            (output / "runs.json").write_text(json.dumps(dict(sorted(runs.items())), indent=1))
    return dict(sorted(runs.items()))


# ----- summary -----


def summarise(runs: dict[int, dict[str, dict[str, float]]], config: StrategiesConfig) -> tuple[str, dict]:
    """The markdown table (every strategy at every budget against random) and, per budget, the paired numbers."""
    seeds = list(runs)
    names = [name for name, _, _ in run_names(config) if "@" in name and not name.startswith(RANDOM)]
    full = np.array([runs[s][FULL]["auroc"] for s in seeds])
    full_f1 = np.array([runs[s][FULL]["f1"] for s in seeds])
    lines = [
        f"Full annotation ({runs[seeds[0]][FULL]['labels']} labels): test AUROC {full.mean():.3f} "
        f"(s.d. {full.std(ddof=1):.3f}), F1 {full_f1.mean():.3f}; {len(seeds)} paired seeds.",
        "",
        "| strategy | budget | labels | AUROC | − random (s.e.) | seeds won | F1 | F1 − random (s.e.) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    paired = {}
    for budget in config.budgets:
        random = {m: np.array([runs[s][f"{RANDOM}@{budget}"][m] for s in seeds]) for m in ("auroc", "f1")}
        lines.append(
            f"| random | {budget:.0%} | {runs[seeds[0]][f'{RANDOM}@{budget}']['labels']} | {random['auroc'].mean():.3f} "
            f"| | | {random['f1'].mean():.3f} | |"
        )
        for name in (n for n in names if n.endswith(f"@{budget}")):
            values = {m: np.array([runs[s][name][m] for s in seeds]) for m in ("auroc", "f1")}
            gap = {m: values[m] - random[m] for m in values}
            se = {m: gap[m].std(ddof=1) / math.sqrt(len(seeds)) for m in gap}
            paired[name] = {"gap": float(gap["auroc"].mean()), "se": float(se["auroc"]), "auroc": float(values["auroc"].mean())}
            lines.append(
                f"| {name.split('@')[0]} | {budget:.0%} | {runs[seeds[0]][name]['labels']} | {values['auroc'].mean():.3f} "
                f"| {gap['auroc'].mean():+.3f} ({se['auroc']:.3f}) | {int((gap['auroc'] > 0).sum())}/{len(seeds)} "
                f"| {values['f1'].mean():.3f} | {gap['f1'].mean():+.3f} ({se['f1']:.3f}) |"
            )
    return "\n".join(lines), paired


def plot(runs: dict[int, dict[str, dict[str, float]]], config: StrategiesConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = list(runs)
    figure, axis = plt.subplots(figsize=(8, 5))
    strategies = [RANDOM, *config.strategies]
    strategies += [f"{s}+random{config.random_share:g}{w}" for s in config.mixed_strategies for w in ("", "+iw")]
    for index, strategy in enumerate(strategies):
        keys = [f"{strategy}@{b}" for b in config.budgets]
        labels = [runs[seeds[0]][k]["labels"] for k in keys]
        means = [np.mean([runs[s][k]["auroc"] for s in seeds]) for k in keys]
        errors = [np.std([runs[s][k]["auroc"] for s in seeds], ddof=1) / math.sqrt(len(seeds)) for k in keys]
        style = {"color": "black", "linewidth": 2.5} if strategy == RANDOM else {"color": f"C{index % 10}"}
        axis.errorbar(labels, means, yerr=errors, marker="o", capsize=3, label=strategy,
                      linestyle="--" if "+random" in strategy else "-", **style)  # fmt: skip
    full = np.mean([runs[s][FULL]["auroc"] for s in seeds])
    axis.axhline(full, color="grey", linestyle=":", label=f"full annotation ({runs[seeds[0]][FULL]['labels']} labels)")
    axis.set_xlabel("labels used (trajectories)")
    axis.set_ylabel("test step AUROC (mean over seeds, ± s.e.)")
    axis.set_title(f"Selection strategies, {config.setting} setting, {len(seeds)} seeds")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: list[str]) -> int:
    (config,) = TrlParser(StrategiesConfig).parse_args_and_config(argv)
    for budget in config.budgets:
        if not 0 < budget <= 1:
            raise ValueError(f"budgets must be in (0, 1], got {budget}")
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    if config.runs:
        runs = {int(seed): value for seed, value in json.loads(Path(config.runs).read_text()).items()}
    else:
        runs = run_all(config, output)
    table, paired = summarise(runs, config)
    (output / "results.md").write_text(table + "\n")
    plot(runs, config, output / "selection_strategies.png")
    print(table)
    winners = sorted(
        {n.split("@")[0] for n in paired}
        - {n.split("@")[0] for n, p in paired.items() if not p["gap"] > 2 * p["se"]}
    )
    print(f"\nbeats random by > 2 s.e. at every budget: {', '.join(winners) or 'none'}")
    for budget in config.budgets:
        best = max((n for n in paired if n.endswith(f"@{budget}")), key=lambda n: paired[n]["auroc"])
        print(f"  best at {budget:.0%}: {best.split('@')[0]} {paired[best]['gap']:+.3f} (s.e. {paired[best]['se']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
