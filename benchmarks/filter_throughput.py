"""Throughput of `filter_pool` against the step scorer alone, on the same data, model and batch size.

The pool is synthetic arithmetic trajectories written as jsonl shards; the model an ensemble PRM
on the embedded default backbone. The scorer alone loads the whole pool with `load_steps` and scores
it in one call (length grouping over all of it); the filter reads it shard by shard, scores each,
applies the selection rule and writes the kept trajectories and the done markers (with the untrained
ensemble nearly every trajectory is uncertain, so nearly all are written: the costliest case). Runs of
the two alternate, each going first in turn; the ratio of each back-to-back pair (both under the same
load from whatever else runs on the machine) is taken and their median reported, with the best times.
Goal: filter time <= 1.10 x scorer time.

    python benchmarks/filter_throughput.py                  # about a minute and a half on 2 CPU cores
    python benchmarks/filter_throughput.py --items 20000 --shards 16 --device cuda --batch-size 64
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from actprm import default_backbone, load_steps, make_arithmetic_dataset
from actprm.filtering import SUMMARY_FILE, filter_pool
from actprm.modeling import EnsemblePRMModel
from actprm.scoring import StepScorer


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000, help="trajectories in the pool")
    parser.add_argument("--shards", type=int, default=8, help="jsonl shards the pool is written as")
    parser.add_argument("--batch-size", type=int, default=8, help="solutions per forward pass (both)")
    parser.add_argument("--runs", type=int, default=6, help="timed runs of each, alternating")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads for torch (1 keeps timings steady on a shared machine)"
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def write_pool(folder: Path, items: int, shards: int, seed: int) -> None:
    dataset = make_arithmetic_dataset(items, seed=seed)
    for index in range(shards):
        dataset.shard(shards, index, contiguous=True).to_json(folder / f"pool-{index:05d}.jsonl")


def build_scorer(device: str, seed: int) -> StepScorer:
    backbone = default_backbone()
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    torch.manual_seed(seed)
    model = EnsemblePRMModel.from_backbone(backbone, tokenizer=tokenizer).to(device)
    return StepScorer(model, tokenizer)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    scorer = build_scorer(args.device, args.seed)
    times: dict[str, list[float]] = {"scorer": [], "filter": []}
    with tempfile.TemporaryDirectory() as workdir:
        pool = Path(workdir) / "pool"
        pool.mkdir()
        write_pool(pool, args.items, args.shards, args.seed)
        scorer.score(load_steps(pool).select(range(args.batch_size)), batch_size=args.batch_size, show_progress=False)
        runners = {
            "scorer": lambda run: scorer.score(load_steps(pool), batch_size=args.batch_size, show_progress=False),
            "filter": lambda run: filter_pool(
                scorer, pool, output_dir=Path(workdir) / f"filtered-{run}", batch_size=args.batch_size,
                show_progress=False,
            ),
        }
        for run in range(args.runs):
            for name in sorted(runners, reverse=run % 2 == 1):  # alternate which goes first
                start = time.perf_counter()
                runners[name](run)
                times[name].append(time.perf_counter() - start)
        summary = json.loads((Path(workdir) / "filtered-0" / SUMMARY_FILE).read_text())

    best = {name: min(values) for name, values in times.items()}
    paired = statistics.median(f / s for f, s in zip(times["filter"], times["scorer"]))
    print(
        f"{args.items} trajectories in {args.shards} shards, batch size {args.batch_size}, device {args.device}, "
        f"{args.threads} thread(s); kept {summary['kept']} ({100 * summary['fraction_kept']:.1f}%)"
    )
    print("| | best s | median s | trajectories/s (best) |\n| --- | --- | --- | --- |")
    for name, values in times.items():
        print(f"| {name} | {best[name]:.2f} | {statistics.median(values):.2f} | {args.items / best[name]:.0f} |")
    print(f"filter / scorer time: {best['filter'] / best['scorer']:.3f} (best runs), {paired:.3f} (median of pairs)")
    print(f"goal <= 1.10 on the median of pairs: {'met' if paired <= 1.10 else 'NOT met'}")


if __name__ == "__main__":
    main()
