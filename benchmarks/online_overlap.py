"""Online mode against a slow judge: judge batches in flight (asynchronous) vs waiting for each (synchronous).

Online active learning on the embedded default (uncertainty selection, an annotation budget) against
a real OpenAI-compatible critic server (tests/critic_server.py: it checks the arithmetic and answers
after a set delay per request). The instant judge is the same server answering at once, so every
run pays the same HTTP work on the same cores and only the latency differs. The instant run is timed
first; its seconds of training per batch of labels set the server's delay, so that judging one batch
takes about as long as training on it (1x), then twice as long (2x). At each latency an asynchronous
run (``--in_flight`` batches) and a synchronous one (``max_judge_batches_in_flight=0``) train to the
same budget, one after the other. With ``--rounds``, the whole set runs again on the next seeds (the
delays stay those of the first round): on shared cores the load drifts, so each ratio is taken
within a round, side by side, and the median over rounds is reported.

Reported: trajectories trained per second (trained / ``train_runtime``), the time training waited
for the judge, and test F1 at the budget. Goals: asynchronous >= 0.9 of the instant judge's
throughput (median over rounds) whenever the judge's capacity (in flight x concurrency / delay)
covers what training asks for; asynchronous F1 within 1 point of synchronous F1 at the same labels
(the mean paired difference over rounds, with its standard error).

    python benchmarks/online_overlap.py [--pool_size 1000] [--budget 320] [--in_flight 4] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
import torch
from transformers import PrinterCallback

from actprm.data.synthetic import make_arithmetic_dataset
from actprm.default_backbone import default_backbone
from actprm.judges import OpenAIJudge
from actprm.trainer import ActivePRMTrainer
from actprm.training_args import ActivePRMConfig

CRITIC_SERVER = Path(__file__).resolve().parents[1] / "tests" / "critic_server.py"
THROUGHPUT_GOAL, F1_TOLERANCE = 0.9, 0.01


@dataclass
class Run:
    name: str
    seed: int
    delay: float
    in_flight: int
    trained: int
    annotations: int
    seen: int
    seconds: float
    judge_wait_seconds: float
    f1: float

    @property
    def throughput(self) -> float:
        return self.trained / self.seconds


@contextmanager
def critic_server(delay: float):
    """tests/critic_server.py in its own process; yields its OpenAI base URL."""
    process = subprocess.Popen([sys.executable, str(CRITIC_SERVER), "--delay", str(delay)], stdout=subprocess.PIPE,
                               text=True)
    try:
        yield f"http://127.0.0.1:{int(process.stdout.readline())}/v1"
    finally:
        process.kill()
        process.wait(timeout=30)


def train(name: str, url: str, options: argparse.Namespace, pool, test, folder: Path, *, seed: int, delay: float,
          in_flight: int) -> Run:
    """One online run to the budget against the server at ``url``; throughput from the trainer's `train_runtime`."""
    judge = OpenAIJudge(url, "critic", concurrency=options.concurrency, max_tokens=64)
    args = ActivePRMConfig(
        output_dir=str(folder / f"{name} seed {seed}"), per_device_train_batch_size=8, per_device_eval_batch_size=64,
        num_train_epochs=1, learning_rate=3e-4, lr_scheduler_type="cosine", num_ensemble=8, pred_threshold=0.95,
        active_warmup_steps=20, max_annotations=options.budget, judge_batch_size=8,
        max_judge_batches_in_flight=in_flight, save_strategy="no", report_to="none", seed=seed, use_cpu=True,
        disable_tqdm=True, logging_steps=10_000,
    )
    trainer = ActivePRMTrainer(default_backbone(), args=args, train_dataset=pool, eval_dataset=test, judge=judge)
    trainer.remove_callback(PrinterCallback)
    output = trainer.train()
    summary = trainer.active_learning_summary()
    run = Run(name, seed, delay, in_flight, summary["trained"], summary["annotations"], summary["seen"],
              output.metrics["train_runtime"], trainer.active.judge_wait_seconds, trainer.evaluate()["eval_f1"])
    print(f"{name} (seed {seed}): {run.trained} trained in {run.seconds:.1f} s ({run.throughput:.1f}/s), waited "
          f"{run.judge_wait_seconds:.1f} s for the judge, {run.seen} seen, test F1 {run.f1:.3f}", flush=True)
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool_size", type=int, default=1000, help="unlabelled synthetic trajectories")
    parser.add_argument("--test_size", type=int, default=300, help="labelled synthetic test trajectories")
    parser.add_argument("--budget", type=int, default=320, help="annotations every run trains to")
    parser.add_argument("--in_flight", type=int, default=4, help="judge batches in flight in the asynchronous runs")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight per judge batch")
    parser.add_argument("--factors", type=float, nargs="+", default=[1.0, 2.0],
                        help="judge latency per batch, in multiples of the instant run's training time per batch")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first round; round r uses seed + r")
    parser.add_argument("--rounds", type=int, default=1, help="sets of runs, each on its own seed, side by side")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier timings on shared cores)")
    parser.add_argument("--output", default=None, help="JSON of every run")
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    datasets.disable_progress_bars()

    runs, delays = [], {}
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(options.seed, options.seed + options.rounds):
            pool = make_arithmetic_dataset(options.pool_size, seed, split="pool", error_rate=0.7)
            pool = pool.map(lambda row: {"label": None, "step_labels": None})
            test = make_arithmetic_dataset(options.test_size, seed, split="test")
            data = (options, pool, test, Path(folder))
            with critic_server(0.0) as url:
                runs.append(train("instant", url, *data, seed=seed, delay=0.0, in_flight=options.in_flight))
            if not delays:
                seconds_per_batch = runs[0].seconds / (runs[0].trained / 8)
                delays = {factor: factor * seconds_per_batch for factor in options.factors}
            for factor, delay in delays.items():
                with critic_server(delay) as url:
                    for name, in_flight in ((f"async {factor:g}x", options.in_flight), (f"sync {factor:g}x", 0)):
                        runs.append(train(name, url, *data, seed=seed, delay=delay, in_flight=in_flight))

    instants = {run.seed: run for run in runs if run.name == "instant"}
    print(f"\nfirst instant run: {seconds_per_batch:.3f} s of training per batch of 8 labels; budget {options.budget}")
    print(f"{'run':<11}{'seed':>5}{'delay s':>8}{'trained/s':>10}{'vs instant':>11}{'waited s':>9}{'F1':>7}")
    for run in runs:
        print(f"{run.name:<11}{run.seed:>5}{run.delay:>8.3f}{run.throughput:>10.2f}"
              f"{run.throughput / instants[run.seed].throughput:>11.2f}{run.judge_wait_seconds:>9.1f}{run.f1:>7.3f}")
    met = True
    for factor, delay in delays.items():
        asynchronous = [r for r in runs if r.name == f"async {factor:g}x"]
        synchronous = [r for r in runs if r.name == f"sync {factor:g}x"]
        ratio = statistics.median(r.throughput / instants[r.seed].throughput for r in asynchronous)
        sync_ratio = statistics.median(r.throughput / instants[r.seed].throughput for r in synchronous)
        f1_gaps = [a.f1 - s.f1 for a, s in zip(asynchronous, synchronous)]
        f1_gap = statistics.mean(f1_gaps)
        f1_error = statistics.stdev(f1_gaps) / len(f1_gaps) ** 0.5 if len(f1_gaps) > 1 else float("nan")
        capacity = options.in_flight * min(options.concurrency, 8) / delay
        demand = statistics.median(run.throughput for run in instants.values())
        covered = capacity >= demand
        speed_met, f1_met = ratio >= THROUGHPUT_GOAL or not covered, abs(f1_gap) <= F1_TOLERANCE
        met &= speed_met and f1_met
        print(f"{factor:g}x: judge capacity {capacity:.1f} rows/s vs {demand:.1f} asked; async/instant {ratio:.2f} "
              f"(goal >= {THROUGHPUT_GOAL}{'' if covered else ', not applicable'}): {'met' if speed_met else 'NOT met'}; "
              f"sync/instant {sync_ratio:.2f}; F1 async - sync {f1_gap:+.3f} (s.e. {f1_error:.3f}, {len(f1_gaps)} seeds) at "
              f"{asynchronous[0].annotations} vs {synchronous[0].annotations} labels (goal within {F1_TOLERANCE}): "
              f"{'met' if f1_met else 'NOT met'}")
    if options.output:
        Path(options.output).write_text(json.dumps([asdict(r) for r in runs], indent=2))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
