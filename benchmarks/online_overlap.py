"""Online mode against a slow judge: judge batches in flight (asynchronous) vs waiting for each (synchronous).

Online active learning on the embedded default (uncertainty selection, an annotation budget) against
a real OpenAI-compatible critic server (tests/critic_server.py: it checks the arithmetic and answers
after a set delay per request). The instant judge is the same server answering at once, so every
run pays the same HTTP work on the same cores and only the latency differs. The instant run is timed
first; its seconds of training per batch of labels set the server's delay, so that judging one batch
takes about as long as training on it (1x), then twice as long (2x). At each latency an asynchronous
run (``--in_flight`` batches) and a synchronous one (``max_judge_batches_in_flight=0``) train to the
same budget, one after the other.

Reported: trajectories trained per second (trained / ``train_runtime``), the time training waited
for the judge, and test F1 at the budget. Goals: asynchronous >= 0.9 of the instant judge's
throughput whenever the judge's capacity (in flight x concurrency / delay) covers what training asks
for; asynchronous F1 within 1 point of synchronous F1 at the same labels.

    python benchmarks/online_overlap.py [--pool_size 1000] [--budget 320] [--in_flight 4]
"""

from __future__ import annotations

import argparse
import json
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


def train(name: str, url: str, options: argparse.Namespace, pool, test, folder: Path, *, delay: float,
          in_flight: int) -> Run:
    """One online run to the budget against the server at ``url``; throughput from the trainer's `train_runtime`."""
    judge = OpenAIJudge(url, "critic", concurrency=options.concurrency, max_tokens=64)
    args = ActivePRMConfig(
        output_dir=str(folder / name), per_device_train_batch_size=8, per_device_eval_batch_size=64,
        num_train_epochs=1, learning_rate=3e-4, lr_scheduler_type="cosine", num_ensemble=8, pred_threshold=0.95,
        active_warmup_steps=20, max_annotations=options.budget, judge_batch_size=8,
        max_judge_batches_in_flight=in_flight, save_strategy="no", report_to="none", seed=options.seed, use_cpu=True,
        disable_tqdm=True, logging_steps=10_000,
    )
    trainer = ActivePRMTrainer(default_backbone(), args=args, train_dataset=pool, eval_dataset=test, judge=judge)
    trainer.remove_callback(PrinterCallback)
    output = trainer.train()
    summary = trainer.active_learning_summary()
    run = Run(name, delay, in_flight, summary["trained"], summary["annotations"], summary["seen"],
              output.metrics["train_runtime"], trainer.active.judge_wait_seconds, trainer.evaluate()["eval_f1"])
    print(f"{name}: {run.trained} trained in {run.seconds:.1f} s ({run.throughput:.1f}/s), waited "
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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier timings on shared cores)")
    parser.add_argument("--output", default=None, help="JSON of every run")
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    datasets.disable_progress_bars()
    pool = make_arithmetic_dataset(options.pool_size, options.seed, split="pool", error_rate=0.7)
    pool = pool.map(lambda row: {"label": None, "step_labels": None})
    test = make_arithmetic_dataset(options.test_size, options.seed, split="test")

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        with critic_server(0.0) as url:
            instant = train("instant", url, options, pool, test, folder, delay=0.0, in_flight=options.in_flight)
        seconds_per_batch = instant.seconds / (instant.trained / 8)
        runs = [instant]
        for factor in options.factors:
            delay = factor * seconds_per_batch
            with critic_server(delay) as url:
                for name, in_flight in ((f"async {factor:g}x", options.in_flight), (f"sync {factor:g}x", 0)):
                    runs.append(train(name, url, options, pool, test, folder, delay=delay, in_flight=in_flight))

    print(f"\ninstant run: {seconds_per_batch:.3f} s of training per batch of 8 labels; budget {options.budget}")
    print(f"{'run':<11}{'delay s':>8}{'trained/s':>10}{'vs instant':>11}{'waited s':>9}{'F1':>7}")
    for run in runs:
        print(f"{run.name:<11}{run.delay:>8.3f}{run.throughput:>10.2f}{run.throughput / instant.throughput:>11.2f}"
              f"{run.judge_wait_seconds:>9.1f}{run.f1:>7.3f}")
    met = True
    for factor in options.factors:
        asynchronous = next(r for r in runs if r.name == f"async {factor:g}x")
        synchronous = next(r for r in runs if r.name == f"sync {factor:g}x")
        capacity = options.in_flight * min(options.concurrency, 8) / asynchronous.delay
        demand = instant.throughput
        ratio = asynchronous.throughput / instant.throughput
        f1_gap = abs(asynchronous.f1 - synchronous.f1)
        covered = capacity >= demand
        speed_met, f1_met = ratio >= THROUGHPUT_GOAL or not covered, f1_gap <= F1_TOLERANCE
        met &= speed_met and f1_met
        print(f"{factor:g}x: judge capacity {capacity:.1f} rows/s vs {demand:.1f} asked; async/instant {ratio:.2f} "
              f"(goal >= {THROUGHPUT_GOAL}{'' if covered else ', not applicable'}): {'met' if speed_met else 'NOT met'}; "
              f"sync/instant {synchronous.throughput / instant.throughput:.2f}; |F1 async - sync| {f1_gap:.3f} at "
              f"{asynchronous.annotations} vs {synchronous.annotations} labels (goal <= {F1_TOLERANCE}): "
              f"{'met' if f1_met else 'NOT met'}")
    if options.output:
        Path(options.output).write_text(json.dumps([asdict(r) for r in runs], indent=2))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
