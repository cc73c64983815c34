"""Speed of `StepScorer` on real ProcessBench solutions with the tiny default backbone.

1. One pass per solution against the per-prefix approach of the public TRL evaluation script
   (QwenLM/ProcessBench ``code/run_eval_prm_trl.py``): a ``token-classification`` pipeline called on
   every prefix ``sep.join((problem, *steps[:i])) + sep``, each step's score read at the prefix's last
   token. Same TRL-style model (2 labels, separator ``"\\n"``) and same texts: the scorer gets the
   problem with the separator appended, which is exactly the script's layout. Scores must agree to
   1e-5. Goal: a speedup of at least the mean number of steps per solution.
2. Length-grouped against unsorted batching of the scorer on each of the four subsets, same items,
   same batch size. Goal: at least 1.3x.

    python benchmarks/scorer_speed.py                            # a few minutes on CPU
    python benchmarks/scorer_speed.py --prefix-items 100 --grouping-items 400 --device cuda
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

from actprm import default_backbone, load_steps
from actprm.data import PROCESSBENCH_SUBSETS
from actprm.modeling import EnsemblePRMModel
from actprm.scoring import StepScorer

SEPARATOR = "\n"
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "processbench"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="ProcessBench folder or Hub id")
    parser.add_argument("--prefix-items", type=int, default=6, help="solutions per subset for part 1")
    parser.add_argument("--grouping-items", type=int, default=48, help="solutions per subset for part 2")
    parser.add_argument("--batch-size", type=int, default=8, help="scorer batch size (solutions)")
    parser.add_argument("--pipeline-chunk", type=int, default=32, help="prefixes per pipeline call, as the script's")
    parser.add_argument("--max-length", type=int, default=8192, help="context in tokens (no solution is cut)")
    parser.add_argument(
        "--runs", type=int, default=2, help="timed runs per setting in part 2, interleaved (best kept)"
    )
    parser.add_argument(
        "--part", choices=["both", "prefix", "grouping"], default="both", help="which comparison to run"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads for torch (1 keeps timings steady on a shared machine)"
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def sample(dataset, per_subset: int, seed: int) -> dict[str, list[dict]]:
    """``per_subset`` random solutions of every subset, in random order."""
    rng = random.Random(seed)
    rows = {subset: [] for subset in PROCESSBENCH_SUBSETS}
    for row in dataset:
        rows[row["subset"]].append(row)
    return {subset: rng.sample(subset_rows, min(per_subset, len(subset_rows))) for subset, subset_rows in rows.items()}


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, result


def per_prefix_scores(classify, items: list[dict], chunk: int) -> list[list[float]]:
    """The TRL script's loop: every prefix text, ``chunk`` per pipeline call, P(LABEL_1) at the last token."""
    texts, owners = [], []
    for index, item in enumerate(items):
        for step in range(1, len(item["steps"]) + 1):
            texts.append(SEPARATOR.join((item["problem"], *item["steps"][:step])) + SEPARATOR)
            owners.append(index)
    scores: list[list[float]] = [[] for _ in items]
    for start in range(0, len(texts), chunk):
        for owner, entities in zip(owners[start : start + chunk], classify(texts[start : start + chunk])):
            last = entities[-1]
            scores[owner].append(float(last["score"]) if last["entity"] == "LABEL_1" else 1 - float(last["score"]))
    return scores


def one_pass_against_per_prefix(args: argparse.Namespace, dataset, device: torch.device) -> None:
    backbone = default_backbone()
    tokenizer = AutoTokenizer.from_pretrained(backbone, model_max_length=args.max_length)
    torch.manual_seed(args.seed)
    model = AutoModelForTokenClassification.from_pretrained(backbone, num_labels=2).to(device).eval()
    scorer = StepScorer(model, tokenizer, separator=SEPARATOR, max_length=args.max_length)
    classify = pipeline("token-classification", model=model, tokenizer=tokenizer, device=device)
    items = [item for subset_items in sample(dataset, args.prefix_items, args.seed).values() for item in subset_items]
    script_layout = [{"problem": item["problem"] + SEPARATOR, "steps": item["steps"]} for item in items]
    mean_steps = statistics.mean(len(item["steps"]) for item in items)

    with torch.inference_mode():
        prefix_time, expected = timed(lambda: per_prefix_scores(classify, items, args.pipeline_chunk), device)
    batched_time, results = timed(
        lambda: scorer.score(script_layout, batch_size=args.batch_size, show_progress=False), device
    )
    single_time, single = timed(lambda: scorer.score(script_layout, batch_size=1, show_progress=False), device)
    difference = max(
        abs(a - b)
        for result, reference in zip(results + single, expected + expected)
        for a, b in zip(result["scores"], reference)
    )
    assert all(len(r["scores"]) == len(e) for r, e in zip(results, expected)), "a solution was truncated"
    assert difference <= 1e-5, f"scores differ by {difference:.2e}"

    threads = f", {torch.get_num_threads()} CPU thread(s)" if device.type == "cpu" else ""
    print(f"## One pass per solution vs the per-prefix pipeline ({len(items)} solutions, device {device}{threads})\n")
    print(f"mean steps per solution: {mean_steps:.2f}; largest score difference: {difference:.1e}\n")
    print("| approach | forward passes | seconds | speedup |")
    print("| --- | --- | --- | --- |")
    num_prefixes = sum(len(item["steps"]) for item in items)
    print(f"| per-prefix pipeline (TRL script) | {num_prefixes} | {prefix_time:.2f} | 1.00x |")
    print(f"| StepScorer, batch 1 | {len(items)} | {single_time:.2f} | {prefix_time / single_time:.2f}x |")
    batches = -(-len(items) // args.batch_size)
    print(
        f"| StepScorer, batch {args.batch_size} | {batches} | {batched_time:.2f} | {prefix_time / batched_time:.2f}x |"
    )
    best = prefix_time / min(single_time, batched_time)
    verdict = "met" if best >= mean_steps else "NOT met"
    print(f"\ngoal (best speedup {best:.2f}x >= mean steps {mean_steps:.2f}): {verdict}")
    print("(on CPU, PyTorch attention has no fast kernel for padded batches, so batch 1 is the quicker there)\n")


def padding_share(scorer: StepScorer, items: list[dict], batch_size: int, grouped: bool) -> float:
    lengths = [len(scorer.encode(item["problem"], item["steps"]).input_ids) for item in items]
    if grouped:
        lengths.sort(reverse=True)
    padded = sum(
        max(lengths[i : i + batch_size]) * len(lengths[i : i + batch_size]) for i in range(0, len(lengths), batch_size)
    )
    return 1 - sum(lengths) / padded


def grouped_against_unsorted(args: argparse.Namespace, dataset, device: torch.device) -> None:
    backbone = default_backbone()
    tokenizer = AutoTokenizer.from_pretrained(backbone, model_max_length=args.max_length)
    torch.manual_seed(args.seed)
    model = EnsemblePRMModel.from_backbone(backbone, tokenizer=tokenizer).to(device)
    scorer = StepScorer(model, tokenizer, max_length=args.max_length)
    heads, batch = model.config.num_ensemble, args.batch_size
    print(f"## Length-grouped vs unsorted batching (ensemble of {heads} heads, batch {batch},")
    print(f"{args.grouping_items} random solutions per subset, best of {args.runs} interleaved runs)\n")
    print("| subset | padding unsorted | padding grouped | unsorted s | grouped s | speedup |")
    print("| --- | --- | --- | --- | --- | --- |")
    totals = {False: 0.0, True: 0.0}
    speedups = []
    for subset, items in sample(dataset, args.grouping_items, args.seed).items():
        times = {False: [], True: []}
        for _ in range(args.runs):
            for grouped in (False, True):
                run = partial(
                    scorer.score, items, batch_size=args.batch_size, group_by_length=grouped, show_progress=False
                )
                times[grouped].append(timed(run, device)[0])
        best = {grouped: min(runs) for grouped, runs in times.items()}
        totals = {grouped: totals[grouped] + best[grouped] for grouped in totals}
        speedups.append(best[False] / best[True])
        shares = [padding_share(scorer, items, args.batch_size, grouped) for grouped in (False, True)]
        seconds = f"{best[False]:.2f} | {best[True]:.2f}"
        print(f"| {subset} | {shares[0]:.0%} | {shares[1]:.0%} | {seconds} | {speedups[-1]:.2f}x |")
    overall = totals[False] / totals[True]
    print(f"| all four | | | {totals[False]:.2f} | {totals[True]:.2f} | {overall:.2f}x |")
    verdict = "met" if min(speedups) >= 1.3 else "NOT met"
    print(
        f"\ngoal (>= 1.3x on every subset): {verdict} (lowest {min(speedups):.2f}x, all four together {overall:.2f}x)"
    )


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    dataset = load_steps(args.data, format="processbench")
    if args.part in ("both", "prefix"):
        one_pass_against_per_prefix(args, dataset, device)
    if args.part in ("both", "grouping"):
        grouped_against_unsorted(args, dataset, device)


if __name__ == "__main__":
    main()
