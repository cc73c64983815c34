"""The paper's experiment on real data: PRM800K phase 1 human step labels, SmolLM2-135M-Instruct backbone.

Pool mode (the paper's setting): PRM800K phase 1 train is the labelled pool, each selected
trajectory trains on its own human step ratings (``label_mode="per_step"``). Runs, each a complete
`ActivePRMTrainer` run with its own learning-rate schedule: full annotation (`all`), uncertainty
selection at each `pred_threshold/std_threshold`, and random selection at the rate each uncertainty run ended
with, paired by seed; plus the untrained ensemble.

`--cpu` (the setting measured here) trains the heads on a frozen backbone from step-end hidden
states computed once into `--cache_dir` (`ActivePRMConfig.step_features_dir`, the forward in
bfloat16 autocast): the backbone's no-grad forward is most of the cost, and every run after it
takes seconds. Without `--cpu` every run fine-tunes the whole backbone with its heads (meant for a
GPU; see `--finetune_learning_rate`) and is evaluated by running the fine-tuned model on the tokens.

Metrics of every run: step AUROC on PRM800K phase 1 test over rated steps (primary); F1 of first-
error prediction on the test trajectories at the threshold chosen on a validation split of train
problems; ProcessBench (four subsets) and PRMBench through the shipped `evaluate` modules at that
threshold. Writes ``runs.json``, ``results.md`` (the table) and ``real_data.png`` (AUROC and F1
against labels used) to `--output_dir`.

    python benchmarks/real_data.py --cpu --cache_dir real-data-cache --output_dir bench-real
    bash benchmarks/gpu_finetune/run.sh       # fine-tuning, on a GPU (prepared by its prepare.sh)
"""

from __future__ import annotations

import copy
import json
import math
import random
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import datasets
import numpy as np
import torch
from scipy.stats import rankdata
from torch.nn.utils.rnn import pad_sequence
from transformers import AutoTokenizer, HfArgumentParser
from transformers.utils import logging as hf_logging

from actprm import ActivePRMConfig, ActivePRMTrainer, EnsemblePRMModel, load_metric, load_steps
from actprm.features import (
    StepFeatureCache,
    StepFeatureCollator,
    backbone_fingerprint,
    compute_step_features,
    resolve_layer,
    trajectory_key,
)
from actprm.metrics import calibrate_threshold, first_error_from_scores, validity_labels
from actprm.tokenization import StepTokenizer

PROCESSBENCH_SUBSETS = ("gsm8k", "math", "olympiadbench", "omnimath")


@dataclass
class RealDataConfig:
    shared_dir: str = field(default="../shared", metadata={"help": "Folder with data/ and models/ (see their READMEs)."})
    gguf_file: str = field(default="SmolLM2-135M-Instruct.Q4_1.gguf", metadata={"help": "GGUF file of the backbone."})
    model_dir: str = field(default="models/smollm2-135m-instruct", metadata={"help": "Its folder under shared_dir."})
    cache_dir: str = field(default="real-data-cache", metadata={"help": "Step-feature cache (reused between runs)."})
    splits_dir: str | None = field(
        default=None,
        metadata={"help": "The splits are saved here (`Dataset.save_to_disk`, a folder each) once built, and loaded "
                  "from here when present (the size options then do not apply): a few MB to carry to a machine without "
                  "../shared/data (a GPU one)."},
    )
    output_dir: str = field(default="bench-real", metadata={"help": "Where runs.json, results.md and the plot go."})
    cpu: bool = field(default=False, metadata={"help": "Frozen backbone, heads on cached step features (the CPU setting)."})
    layers: list[int] = field(
        default_factory=lambda: [20, -1], metadata={"help": "Hidden layers the heads read; all are cached in one pass."}
    )
    selection_layer: int = field(default=20, metadata={"help": "The layer the selection comparison runs on."})
    max_length: int = field(default=768, metadata={"help": "Trajectories longer than this (in tokens) are left out."})
    pool_size: int = field(default=1800, metadata={"help": "Train trajectories in the pool (from 90%% of train problems)."})
    validation_size: int = field(default=300, metadata={"help": "Trajectories of the other train problems (threshold)."})
    test_size: int = field(default=768, metadata={"help": "PRM800K phase 1 test trajectories."})
    processbench_sizes: list[int] = field(
        default_factory=lambda: [200, 60, 60, 60], metadata={"help": "Items per ProcessBench subset (gsm8k, math, ...)."}
    )
    prmbench_size: int = field(default=240, metadata={"help": "PRMBench samples."})
    selection_thresholds: list[str] = field(
        default_factory=lambda: ["0.6/0.01", "0.9/0.01", "0.95/0.01", "0.9/0.015"],
        metadata={"help": "Uncertainty runs, each `pred_threshold/std_threshold`; each sets a random run's rate. "
                  "On PRM800K the std threshold sets the share more than the pred threshold does."},
    )
    seeds: list[int] = field(default_factory=lambda: list(range(10)), metadata={"help": "Seeds of every setting."})
    num_ensemble: int = field(default=8, metadata={"help": "Heads."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Heads' learning rate (cached features)."})
    finetune_learning_rate: float = field(
        default=2e-5, metadata={"help": "Learning rate of the backbone and heads when fine-tuning (without --cpu)."}
    )
    autocast: Literal["bfloat16", "float32"] = field(
        default="bfloat16",
        metadata={"help": "dtype of the backbone's forward (torch.autocast): bfloat16 (2.4x faster on CPUs with AMX; "
                  "hidden states within 0.3%% of float32's) or float32. It applies to the feature pass and to "
                  "fine-tuning (bf16 mixed precision); keep one --cache_dir per choice."},
    )
    num_train_epochs: int = field(
        default=4,
        metadata={"help": "Passes over the pool per run. A random run selects each trajectory of a pass with the "
                  "probability that gives the share of the pool its uncertainty run labelled over all passes."},
    )
    batch_size: int = field(default=8, metadata={"help": "Trajectories per training batch."})
    processes: int = field(
        default=2,
        metadata={"help": "With --cpu, processes the runs are spread over after the feature pass, the seeds dealt out between "
                  "them, one torch thread each (on 2 cores, two processes do 1.5x the runs of one with 2 threads); "
                  "their runs.json are merged into output_dir."},
    )
    threads: int | None = field(
        default=None,
        metadata={"help": "Torch threads once the backbone is loaded (on a busy machine one thread per process is "
                  "much faster for the heads' small matrices). Loading keeps the default: the separator's new "
                  "embedding, and so the cache's backbone fingerprint, may depend on it."},
    )
    features_only: bool = field(default=False, metadata={"help": "Only compute the step-feature cache."})
    cached_only: bool = field(
        default=False,
        metadata={"help": "Keep only the trajectories already in the cache (after a feature pass cut short)."},
    )
    runs: list[str] = field(
        default_factory=list,
        metadata={"help": "Output folders of earlier runs (e.g. seeds run in separate processes): summarise their "
                  "runs.json together into output_dir instead of running."},
    )


def sample_fitting(dataset: datasets.Dataset, rows: list[int], size: int, step_tokenizer: StepTokenizer,
                   seed: int = 0) -> datasets.Dataset:
    """`size` of ``rows`` drawn at random (``seed``) among those whose whole trajectory fits in `max_length`, in
    the order drawn: a smaller `size` gives the first of them."""
    order = random.Random(seed).sample(rows, len(rows))
    chosen = []
    for row in order:
        if len(chosen) == size:
            break
        if step_tokenizer(dataset[row])["num_dropped_steps"] == 0:
            chosen.append(row)
    return dataset.select(chosen)


def load_splits(config: RealDataConfig, step_tokenizer: StepTokenizer) -> dict[str, datasets.Dataset]:
    """The pool, validation and test splits of PRM800K phase 1 and the benchmark slices (fixed seed 0)."""
    data = Path(config.shared_dir) / "data"
    train = load_steps(data / "prm800k", split="phase1_train")
    test = load_steps(data / "prm800k", split="phase1_test")
    problems = sorted(set(train["problem"]))
    random.Random(0).shuffle(problems)
    validation_problems = set(problems[: len(problems) // 10])
    in_validation = [problem in validation_problems for problem in train["problem"]]
    splits = {
        "test": sample_fitting(test, list(range(len(test))), config.test_size, step_tokenizer),
        "pool": sample_fitting(train, [i for i, v in enumerate(in_validation) if not v], config.pool_size, step_tokenizer),
        "validation": sample_fitting(
            train, [i for i, v in enumerate(in_validation) if v], config.validation_size, step_tokenizer
        ),
    }
    for name in ("test", "pool", "validation"):  # a trajectory with no step rated good or bad has no label
        splits[name] = splits[name].filter(lambda record: record["label"] is not None)
    processbench = load_steps(data / "processbench")
    for subset, size in zip(PROCESSBENCH_SUBSETS, config.processbench_sizes):
        rows = [i for i, name in enumerate(processbench["subset"]) if name == subset]
        splits[f"processbench/{subset}"] = sample_fitting(processbench, rows, size, step_tokenizer)
    prmbench = load_steps(data / "prmbench")
    splits["prmbench"] = sample_fitting(prmbench, list(range(len(prmbench))), config.prmbench_size, step_tokenizer)
    return splits


def saved_splits(config: RealDataConfig, step_tokenizer: StepTokenizer) -> dict[str, datasets.Dataset]:
    """`load_splits`, through `splits_dir` when it is set (read when it holds them, else written)."""
    if config.splits_dir is None:
        return load_splits(config, step_tokenizer)
    index = Path(config.splits_dir, "splits.json")
    if index.is_file():
        return {name: datasets.load_from_disk(Path(config.splits_dir, name)) for name in json.loads(index.read_text())}
    splits = load_splits(config, step_tokenizer)
    for name, split in splits.items():
        split.flatten_indices().save_to_disk(Path(config.splits_dir, name))
    index.write_text(json.dumps(list(splits)))
    return splits


def load_backbone(config: RealDataConfig) -> tuple[EnsemblePRMModel, Any]:
    """SmolLM2 from its GGUF file with a new ensemble head (seed 0: the separator's new embedding)."""
    model_dir = Path(config.shared_dir) / config.model_dir
    tokenizer = AutoTokenizer.from_pretrained(model_dir, gguf_file=config.gguf_file)
    torch.manual_seed(0)
    model = EnsemblePRMModel.from_backbone(
        model_dir, tokenizer=tokenizer, gguf_file=config.gguf_file, num_ensemble=config.num_ensemble
    )
    return model.to("cuda" if torch.cuda.is_available() else "cpu"), tokenizer


def build_step_tokenizer(config: RealDataConfig, tokenizer: Any, label_mode: str = "per_step") -> StepTokenizer:
    return StepTokenizer(
        tokenizer, "<extra_0>", max_length=config.max_length, label_mode=label_mode, use_chat_template=True
    )


def cache_features(config: RealDataConfig, model: EnsemblePRMModel,
                   input_ids: dict[str, list[list[int]]]) -> StepFeatureCache:
    """Step features of every split's token ids, in the order of the splits (test first): one pass, all `layers`."""
    cache = StepFeatureCache(config.cache_dir, backbone=backbone_fingerprint(model))
    for name, ids in input_ids.items():
        started = time.monotonic()

        def progress(done: int, total: int) -> None:
            if done % 32 == 0 or done == total:
                rate = done / (time.monotonic() - started)
                print(f"  {name}: {done}/{total} trajectories, {rate:.2f}/s", flush=True)

        computed = compute_step_features(model, ids, cache, config.layers, shard_size=16,
                                         autocast_dtype=autocast_dtype(config), progress=progress)
        print(f"{name}: {len(ids)} trajectories, {computed} computed in {time.monotonic() - started:.0f} s", flush=True)
    return cache


def autocast_dtype(config: RealDataConfig) -> torch.dtype | None:
    return torch.bfloat16 if config.autocast == "bfloat16" else None


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the positive ``labels`` (1: a good step), ties averaged."""
    ranks = rankdata(scores)
    positives = labels == 1
    count = positives.sum()
    if count in (0, len(labels)):
        return float("nan")
    return float((ranks[positives].sum() - count * (count + 1) / 2) / (count * (len(labels) - count)))


@dataclass
class Split:
    """One evaluation split: its records and their token ids."""

    records: datasets.Dataset
    input_ids: list[list[int]]


class Evaluator:
    """Every metric of one trained (or untrained) ensemble: from the cached step features of each split when
    ``cache`` is given (a frozen backbone), else by running the model on the tokens (a fine-tuned one)."""

    def __init__(self, splits: dict[str, Split], layer: int, cache: StepFeatureCache | None = None,
                 autocast: torch.dtype | None = None) -> None:
        self.splits, self.layer, self.cache, self.autocast = splits, layer, cache, autocast
        self.keys = {name: [trajectory_key(ids) for ids in split.input_ids] for name, split in splits.items()}
        self.processbench, self.prmbench = load_metric("processbench"), load_metric("prmbench")

    @torch.no_grad()
    def mean_scores(self, model: EnsemblePRMModel, name: str) -> list[list[float]]:
        """Per trajectory of split ``name``, the mean over heads of P(step correct) at each step."""
        model.eval()
        if self.cache is not None:
            collate, keys, scores = StepFeatureCollator(self.cache, self.layer), self.keys[name], []
            for start in range(0, len(keys), 64):
                batch = collate([{"feature_key": key} for key in keys[start : start + 64]])
                scores += [mean.tolist() for mean, _ in model.step_scores(**batch)]
            return scores
        ids, device = self.splits[name].input_ids, model.device
        order, scores = sorted(range(len(ids)), key=lambda i: len(ids[i])), {}
        for start in range(0, len(order), 8):
            rows = order[start : start + 8]
            batch = pad_sequence([torch.tensor(ids[i]) for i in rows], batch_first=True).to(device)
            mask = pad_sequence([torch.ones(len(ids[i]), dtype=torch.long) for i in rows], batch_first=True).to(device)
            with torch.autocast(device.type, dtype=self.autocast, enabled=self.autocast is not None):
                per_row = model.step_scores(batch, mask)
            scores |= {i: mean.tolist() for i, (mean, _) in zip(rows, per_row)}
        return [scores[i] for i in range(len(ids))]

    def __call__(self, model: EnsemblePRMModel) -> dict[str, float]:
        validation, test = self.mean_scores(model, "validation"), self.mean_scores(model, "test")
        threshold, validation_f1 = calibrate_threshold(validation, self.references("validation"))
        metrics = {
            "auroc": self.step_auroc(test, "test"),
            "threshold": threshold,
            "validation_f1": validation_f1,
            "f1": self.f1(test, self.references("test"), threshold),
        }
        for subset in PROCESSBENCH_SUBSETS:
            name = f"processbench/{subset}"
            scores = self.mean_scores(model, name)
            metrics[f"{subset}_f1"] = self.f1(scores, self.references(name), threshold)
            metrics[f"{subset}_auroc"] = self.step_auroc(scores, name)  # threshold-free; the first error is bad
        metrics["processbench_f1"] = float(np.mean([metrics[f"{subset}_f1"] for subset in PROCESSBENCH_SUBSETS]))
        prmbench = self.splits["prmbench"].records
        if len(prmbench) == 0:
            return metrics | {"prmbench_score": float("nan")}
        validity = [validity_labels(scores, threshold) for scores in self.mean_scores(model, "prmbench")]
        result = self.prmbench.compute(
            predictions=validity, references=prmbench["error_steps"], classifications=prmbench["classification"]
        )
        metrics["prmbench_score"] = result["prm_score"]
        return metrics

    def step_auroc(self, scores: list[list[float]], name: str) -> float:
        """Step AUROC of ``scores`` over the labelled steps of split ``name``."""
        rated = [(score, label) for trajectory, record in zip(scores, self.splits[name].records)
                 for score, label in zip(trajectory, record["step_labels"]) if label is not None]
        if not rated:
            return float("nan")
        return auroc(np.array([s for s, _ in rated]), np.array([l for _, l in rated]))

    def references(self, name: str) -> list[int]:
        return list(self.splits[name].records["label"])

    def f1(self, scores: list[list[float]], references: list[int], threshold: float) -> float:
        if not scores:  # a split left out (its feature pass was cut short)
            return float("nan")
        predictions = [first_error_from_scores(s, threshold) for s in scores]
        return self.processbench.compute(predictions=predictions, references=references)["f1"]


def new_model(base: EnsemblePRMModel, layer: int, seed: int, copy_backbone: bool = False) -> EnsemblePRMModel:
    """New heads (initialised from ``seed``) on ``base``'s backbone (a copy of it, to fine-tune), reading ``layer``."""
    torch.manual_seed(seed)
    config = base.config.__class__.from_dict({**base.config.to_dict(), "hidden_layer": layer})
    return EnsemblePRMModel(config, backbone=copy.deepcopy(base.model) if copy_backbone else base.model)


def train_run(config: RealDataConfig, base: EnsemblePRMModel, tokenizer: Any, pool: datasets.Dataset, layer: int,
              seed: int, selection: str, **options: Any) -> tuple[EnsemblePRMModel, dict[str, int]]:
    """One complete `ActivePRMTrainer` run in pool mode; the trained model and its active-learning counters."""
    finetune = not config.cpu
    args = ActivePRMConfig(
        output_dir=f"{config.output_dir}/runs/{selection}-{layer}-{seed}",
        step_features_dir=None if finetune else config.cache_dir,
        selection=selection,
        label_mode="per_step",
        use_chat_template=True,
        max_length=config.max_length,
        num_ensemble=config.num_ensemble,
        learning_rate=config.finetune_learning_rate if finetune else config.learning_rate,
        bf16=finetune and autocast_dtype(config) is not None,
        use_cpu=not torch.cuda.is_available(),
        num_train_epochs=config.num_train_epochs,
        per_device_train_batch_size=config.batch_size,
        lr_scheduler_type="cosine",
        seed=seed,
        save_strategy="no",
        report_to="none",
        logging_strategy="no",
        disable_tqdm=True,
        **options,
    )
    model = new_model(base, layer, seed, copy_backbone=finetune)
    trainer = ActivePRMTrainer(model, args=args, train_dataset=pool, processing_class=tokenizer)
    trainer.train()
    return model, trainer.active_learning_summary()


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.3f}"


def paired(first: list[float], second: list[float]) -> str:
    """Mean paired difference and its standard error."""
    difference = np.array(first) - np.array(second)
    error = difference.std(ddof=1) / math.sqrt(len(difference)) if len(difference) > 1 else float("nan")
    return f"{difference.mean():+.3f} ± {error:.3f}"


METRICS = ("auroc", "f1", "gsm8k_auroc", "gsm8k_f1", "math_f1", "olympiadbench_f1", "omnimath_f1", "processbench_f1",
           "prmbench_score")


def summarise(config: RealDataConfig, runs: list[dict[str, Any]], splits: dict[str, int]) -> str:
    """The table (``results.md``) and the plot (``real_data.png``) of every setting, means over seeds."""
    by_setting = defaultdict(list)
    for run in runs:
        by_setting[run["setting"], run["layer"]].append(run)
    header = ["setting", "layer", "seeds", "labels (share)", *METRICS, "AUROC vs random (paired)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    full = {layer: np.mean([r["auroc"] for r in group]) for (name, layer), group in by_setting.items() if name == "all"}
    smallest = None
    for (name, layer), group in by_setting.items():
        cells = [name, str(layer), str(len(group)),
                 f"{np.mean([r['labels'] for r in group]):.0f} ({np.mean([r['share'] for r in group]):.0%})"]
        cells += [mean_std([r[metric] for r in group]) for metric in METRICS]
        versus = ""
        if name.startswith("uncertainty@"):
            random_runs = {r["seed"]: r for r in by_setting[name.replace("uncertainty", "random"), layer]}
            pairs = [(r["auroc"], random_runs[r["seed"]]["auroc"]) for r in group if r["seed"] in random_runs]
            versus = paired([a for a, _ in pairs], [b for _, b in pairs])
            share = np.mean([r["share"] for r in group])
            if layer in full and np.mean([r["auroc"] for r in group]) >= full[layer] - 0.01:
                smallest = share if smallest is None else min(smallest, share)
        lines.append("| " + " | ".join([*cells, versus]) + " |")
    sizes = ", ".join(f"{name} {size}" for name, size in splits.items())
    table = "\n".join(lines) + f"\n\nTrajectories: {sizes}.\n"
    table += ("Smallest uncertainty label share within 0.01 of full annotation's mean AUROC: "
              + ("none of the thresholds" if smallest is None else f"{smallest:.0%}") + ".\n")
    Path(config.output_dir, "results.md").write_text(table)
    plot(config, by_setting)
    return table


def plot(config: RealDataConfig, by_setting: dict[tuple[str, int], list[dict[str, Any]]]) -> None:
    """AUROC and F1 against labels used: one point per setting (mean over seeds, std as error bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    selection_layers = {layer for name, layer in by_setting if name.startswith("uncertainty")}  # filled markers
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, metric in zip(axes, ("auroc", "f1")):
        for kind, marker, color in (("uncertainty", "o", "C0"), ("random", "s", "C3"), ("all", "*", "C2"),
                                    ("untrained", "x", "C7")):
            for (name, layer), group in sorted(by_setting.items()):
                if name.split("@")[0] != kind:
                    continue
                label = f"{kind} (layer {layer})"
                axis.errorbar(np.mean([r["labels"] for r in group]), np.mean([r[metric] for r in group]),
                              yerr=np.std([r[metric] for r in group]), fmt=marker, color=color, capsize=3,
                              mfc=color if layer in selection_layers else "none",
                              label=label if label not in axis.get_legend_handles_labels()[1] else None)
        axis.set_xlabel("labelled trajectories used")
        axis.set_ylabel({"auroc": "PRM800K test step AUROC", "f1": "PRM800K test F1 (validation threshold)"}[metric])
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(Path(config.output_dir, "real_data.png"), dpi=120)


def summarise_earlier(config: RealDataConfig) -> None:
    """The table and plot of the runs in the `runs` folders (their splits must be the same)."""
    runs = [run for folder in config.runs for run in json.loads(Path(folder, "runs.json").read_text())]
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    Path(config.output_dir, "runs.json").write_text(json.dumps(runs, indent=1))
    print(summarise(config, runs, json.loads(Path(config.runs[0], "splits.json").read_text())))


def run_in_processes(config: RealDataConfig) -> None:
    """The runs in `processes` child processes of this script (features cached), then their merged table."""
    children = {}
    for k in range(config.processes):
        seeds = [str(seed) for seed in config.seeds[k :: config.processes]]
        folder = str(Path(config.output_dir, f"process-{k}"))
        command = [sys.executable, __file__, *sys.argv[1:], "--seeds", *seeds, "--processes", "1", "--threads", "1",
                   "--output_dir", folder]  # later options win
        children[folder] = subprocess.Popen(command)
    failed = [folder for folder, child in children.items() if child.wait() != 0]
    if failed:
        raise RuntimeError(f"the runs of {', '.join(failed)} failed (see their output above); the others are done")
    summarise_earlier(replace(config, runs=list(children)))


def main(config: RealDataConfig) -> None:
    if config.runs:
        return summarise_earlier(config)
    hf_logging.set_verbosity_error()
    datasets.disable_progress_bars()
    model, tokenizer = load_backbone(config)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    step_tokenizer = build_step_tokenizer(config, tokenizer)
    splits = saved_splits(config, step_tokenizer)
    num_layers = model.config.get_text_config().num_hidden_layers
    layers = [resolve_layer(layer, num_layers) for layer in config.layers]
    if config.cached_only:
        cache = StepFeatureCache(config.cache_dir, backbone=backbone_fingerprint(model))

        def cached(record: dict[str, Any]) -> bool:
            key = trajectory_key(step_tokenizer(record)["input_ids"])
            return all(cache.has(key, layer) for layer in layers)

        splits = {name: split.filter(cached) for name, split in splits.items()}
    for name, split in splits.items():
        print(f"{name}: {len(split)} trajectories", flush=True)
    sizes = {name: len(split) for name, split in splits.items()}
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    Path(config.output_dir, "splits.json").write_text(json.dumps(sizes))
    input_ids = {name: [step_tokenizer(record)["input_ids"] for record in split] for name, split in splits.items()}
    cache = cache_features(config, model, input_ids) if config.cpu or config.features_only else None
    if config.features_only:
        return
    if config.cpu and config.processes > 1 and len(config.seeds) > 1:
        return run_in_processes(config)
    evaluated = {name: Split(split, input_ids[name]) for name, split in splits.items() if name != "pool"}
    pool, runs = splits["pool"], []

    def record(setting: str, layer: int, seed: int, trained: EnsemblePRMModel, summary: dict[str, int] | None,
               **extra: Any) -> dict[str, Any]:
        started = time.monotonic()
        metrics = evaluators[layer](trained)
        labels = 0 if summary is None else summary["annotations"]
        run = {"setting": setting, "layer": layer, "seed": seed, "labels": labels, "share": labels / len(pool),
               **extra, **metrics}
        runs.append(run)
        print(json.dumps(run), f"(eval {time.monotonic() - started:.0f} s)", flush=True)
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        Path(config.output_dir, "runs.json").write_text(json.dumps(runs, indent=1))
        return run

    evaluators = {layer: Evaluator(evaluated, layer, cache, autocast_dtype(config)) for layer in layers}
    selection_layer = resolve_layer(config.selection_layer, num_layers)
    thresholds = [tuple(map(float, pair.split("/"))) for pair in config.selection_thresholds]
    for seed in config.seeds:
        for layer in layers:
            record("untrained", layer, seed, new_model(model, layer, seed), None)
            record("all", layer, seed, *train_run(config, model, tokenizer, pool, layer, seed, "all"))
        for (pred_threshold, std_threshold), name in zip(thresholds, config.selection_thresholds):
            trained, summary = train_run(config, model, tokenizer, pool, selection_layer, seed, "uncertainty",
                                         pred_threshold=pred_threshold, std_threshold=std_threshold)
            record(f"uncertainty@{name}", selection_layer, seed, trained, summary)
            share = max(summary["annotations"], 1) / len(pool)
            rate = 1 - (1 - share) ** (1 / config.num_train_epochs)
            trained, summary = train_run(config, model, tokenizer, pool, selection_layer, seed, "random",
                                         random_selection_rate=rate)
            record(f"random@{name}", selection_layer, seed, trained, summary, rate=rate)
    print(summarise(config, runs, sizes))


if __name__ == "__main__":
    main(HfArgumentParser(RealDataConfig).parse_args_into_dataclasses()[0])
