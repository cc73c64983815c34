"""Start-up time of the ``actprm`` command: ``--help`` against importing torch and the whole package.

Each probe is a fresh interpreter; probes are interleaved and repeated, and the medians are compared,
so that a busy machine slows all of them alike. Goal: ``actprm --help`` and ``actprm <command> --help``
(``train`` included) at most 1.5x a bare ``import torch`` (no torch at all: see tests/test_cli_startup.py),
i.e. under a second or two; ``actprm train --help-all``, which lists transformers' ``TrainingArguments``
too, is bound by importing them.

    python benchmarks/cli_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

PROBES = {
    "import torch": ["-c", "import torch"],
    "import transformers.TrainingArguments": ["-c", "from transformers import TrainingArguments"],
    "import every actprm module (as before)": ["-c", "import actprm.trainer, actprm.evaluation, actprm.filtering, actprm.scoring"],
    "actprm --help": ["-m", "actprm.cli", "--help"],
    "actprm score --help": ["-m", "actprm.cli", "score", "--help"],
    "actprm quickstart --help": ["-m", "actprm.cli", "quickstart", "--help"],
    "actprm train --help": ["-m", "actprm.cli", "train", "--help"],
    "actprm train --help-all": ["-m", "actprm.cli", "train", "--help-all"],
}
LIGHT = ("actprm --help", "actprm score --help", "actprm quickstart --help", "actprm train --help")
GOAL = 1.5


def wall_time(arguments: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *arguments], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    repeats = parser.parse_args().repeats
    times: dict[str, list[float]] = {name: [] for name in PROBES}
    for _ in range(repeats):
        for name, arguments in PROBES.items():
            times[name].append(wall_time(arguments))
    torch_time = statistics.median(times["import torch"])
    print(f"| probe | median s ({repeats} runs) | vs import torch |\n|---|---:|---:|")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"| {name} | {median:.2f} | {median / torch_time:.2f}x |")
    light = max(statistics.median(times[name]) for name in LIGHT)
    print(f"\n--help of the light commands: {light / torch_time:.2f}x import torch (goal <= {GOAL}x): "
          f"{'met' if light / torch_time <= GOAL else 'NOT met'}")


if __name__ == "__main__":
    main()
