"""The paper's experiment on real data: PRM800K phase 1 human step labels, SmolLM2-135M-Instruct backbone.

Pool mode (the paper's setting): PRM800K phase 1 train is the labelled pool, each selected
trajectory trains on its own human step ratings (``label_mode="per_step"``). Runs, each a complete
`ActivePRMTrainer` run with its own learning-rate schedule: full annotation (`all`), uncertainty
selection at each `pred_threshold`, and random selection at the rate each uncertainty run ended
with, paired by seed; plus the untrained ensemble.

`--cpu` (the setting measured here) trains the heads on a frozen backbone from step-end hidden
states computed once into `--cache_dir` (`ActivePRMConfig.step_features_dir`): the backbone's
no-grad forward is the whole cost, and every run after it takes seconds. Without `--cpu` the
backbone is fine-tuned too (`--full_finetune`, meant for a GPU).

Metrics of every run: step AUROC on PRM800K phase 1 test over rated steps (primary); F1 of first-
error prediction on the test trajectories at the threshold chosen on a validation split of train
problems; ProcessBench (four subsets) and PRMBench through the shipped `evaluate` modules at that
threshold. Writes ``runs.json``, ``results.md`` (the table) and ``real_data.png`` (AUROC and F1
against labels used) to `--output_dir`.

    python benchmarks/real_data.py --cpu --cache_dir /work/cache/real_data --output_dir bench-real
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from transformers import AutoTokenizer, HfArgumentParser
from transformers.utils import logging as hf_logging

from actprm import ActivePRMConfig, ActivePRMTrainer, EnsemblePRMModel, load_metric, load_steps
from actprm.features import StepFeatureCache, backbone_fingerprint, compute_step_features, trajectory_key
from actprm.metrics import calibrate_threshold, first_error_from_scores
from actprm.tokenization import StepTokenizer

PROCESSBENCH_SUBSETS = ("gsm8k", "math", "olympiadbench", "omnimath")


@dataclass
class RealDataConfig:
    shared_dir: str = field(default="../shared", metadata={"help": "Folder with data/ and models/ (see their READMEs)."})
    gguf_file: str = field(default="SmolLM2-135M-Instruct.Q4_1.gguf", metadata={"help": "GGUF file of the backbone."})
    model_dir: str = field(default="models/smollm2-135m-instruct", metadata={"help": "Its folder under shared_dir."})
    cache_dir: str = field(default="real-data-cache", metadata={"help": "Step-feature cache (reused between runs)."})
    output_dir: str = field(default="bench-real", metadata={"help": "Where runs.json, results.md and the plot go."})
    cpu: bool = field(default=False, metadata={"help": "Frozen backbone, heads on cached step features (the CPU setting)."})
    layers: list[int] = field(
        default_factory=lambda: [20, -1], metadata={"help": "Hidden layers the heads read; all are cached in one pass."}
    )
    selection_layer: int = field(default=20, metadata={"help": "The layer the selection comparison runs on."})
    max_length: int = field(default=768, metadata={"help": "Trajectories longer than this (in tokens) are left out."})
    pool_size: int = field(default=1800, metadata={"help": "Train trajectories in the pool (from 90% of train problems)."})
    validation_size: int = field(default=300, metadata={"help": "Trajectories of the other train problems (threshold)."})
    test_size: int = field(default=768, metadata={"help": "PRM800K phase 1 test trajectories."})
    processbench_sizes: list[int] = field(
        default_factory=lambda: [200, 60, 60, 60], metadata={"help": "Items per ProcessBench subset (gsm8k, math, ...)."}
    )
    prmbench_size: int = field(default=240, metadata={"help": "PRMBench samples."})
    pred_thresholds: list[float] = field(
        default_factory=lambda: [0.9, 0.95, 0.97], metadata={"help": "Uncertainty runs; each sets a random run's rate."}
    )
    std_threshold: float = field(default=0.01, metadata={"help": "The selection rule's std threshold."})
    seeds: list[int] = field(default_factory=lambda: list(range(10)), metadata={"help": "Seeds of every setting."})
    num_ensemble: int = field(default=8, metadata={"help": "Heads."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Heads' learning rate (cached features)."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the pool per run."})
    batch_size: int = field(default=8, metadata={"help": "Trajectories per training batch."})
    features_only: bool = field(default=False, metadata={"help": "Only compute the step-feature cache."})


def sample_fitting(dataset: datasets.Dataset, rows: list[int], size: int, step_tokenizer: StepTokenizer,
                   seed: int = 0) -> datasets.Dataset:
    """`size` of ``rows`` drawn at random (``seed``) among those whose whole trajectory fits in `max_length`."""
    order = random.Random(seed).sample(rows, len(rows))
    chosen = []
    for row in order:
        if len(chosen) == size:
            break
        if step_tokenizer(dataset[row])["num_dropped_steps"] == 0:
            chosen.append(row)
    return dataset.select(sorted(chosen))


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
    processbench = load_steps(data / "processbench")
    for subset, size in zip(PROCESSBENCH_SUBSETS, config.processbench_sizes):
        rows = [i for i, name in enumerate(processbench["subset"]) if name == subset]
        splits[f"processbench/{subset}"] = sample_fitting(processbench, rows, size, step_tokenizer)
    prmbench = load_steps(data / "prmbench")
    splits["prmbench"] = sample_fitting(prmbench, list(range(len(prmbench))), config.prmbench_size, step_tokenizer)
    return splits


def load_backbone(config: RealDataConfig) -> tuple[EnsemblePRMModel, Any]:
    """SmolLM2 from its GGUF file with a new ensemble head (seed 0: the separator's new embedding)."""
    model_dir = Path(config.shared_dir) / config.model_dir
    tokenizer = AutoTokenizer.from_pretrained(model_dir, gguf_file=config.gguf_file)
    torch.manual_seed(0)
    model = EnsemblePRMModel.from_backbone(
        model_dir, tokenizer=tokenizer, gguf_file=config.gguf_file, num_ensemble=config.num_ensemble
    )
    return model, tokenizer


def build_step_tokenizer(config: RealDataConfig, tokenizer: Any, label_mode: str = "per_step") -> StepTokenizer:
    return StepTokenizer(
        tokenizer, "<extra_0>", max_length=config.max_length, label_mode=label_mode, use_chat_template=True
    )


def cache_features(config: RealDataConfig, model: EnsemblePRMModel, splits: dict[str, datasets.Dataset],
                   step_tokenizer: StepTokenizer) -> StepFeatureCache:
    """Step features of every split, in the order of the splits (test first): one pass, all `layers`."""
    cache = StepFeatureCache(config.cache_dir, backbone=backbone_fingerprint(model))
    for name, split in splits.items():
        started = time.monotonic()

        def progress(done: int, total: int) -> None:
            if done % 80 == 0 or done == total:
                rate = done / (time.monotonic() - started)
                print(f"  {name}: {done}/{total} trajectories, {rate:.2f}/s", flush=True)

        ids = [step_tokenizer(record)["input_ids"] for record in split]
        computed = compute_step_features(model, ids, cache, config.layers, progress=progress)
        print(f"{name}: {len(split)} trajectories, {computed} computed in {time.monotonic() - started:.0f} s", flush=True)
    return cache


def main(config: RealDataConfig) -> None:
    hf_logging.set_verbosity_error()
    datasets.disable_progress_bars()
    model, tokenizer = load_backbone(config)
    step_tokenizer = build_step_tokenizer(config, tokenizer)
    splits = load_splits(config, step_tokenizer)
    for name, split in splits.items():
        print(f"{name}: {len(split)} trajectories", flush=True)
    cache_features(config, model, splits, step_tokenizer)
    if config.features_only:
        return


if __name__ == "__main__":
    main(HfArgumentParser(RealDataConfig).parse_args_into_dataclasses()[0])
