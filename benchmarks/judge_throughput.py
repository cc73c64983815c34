"""Judge throughput: `OpenAIJudge` at concurrency 16 against concurrency 1, and a cached re-run.

The harness is the tests' OpenAI-compatible critic server (tests/critic_server.py), answering every
request after a fixed delay, as a remote API or a busy vLLM server does. Both runs judge the same items; the script prints the
speed-up (goal: at least 8x) and checks that re-running with the sqlite cache makes zero requests.

    python benchmarks/judge_throughput.py [--items 48] [--delay 0.2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from actprm.data import make_arithmetic_dataset
from actprm.judges import Annotation, OpenAIJudge

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from critic_server import serving  # noqa: E402  (the tests' server, shared)

GOAL = 8.0


def timed_run(
    base_url: str, stats: Callable[[], dict], items: list[dict], concurrency: int, cache_path: Path | None
) -> tuple[float, int]:
    """Seconds to judge ``items`` and the requests the server received meanwhile."""
    judge = OpenAIJudge(base_url, "critic", concurrency=concurrency, cache_path=cache_path)
    requests_before = stats()["requests"]
    start = time.perf_counter()
    results = judge.annotate(items)
    elapsed = time.perf_counter() - start
    if not all(isinstance(r, Annotation) and r.first_error == item["label"] for r, item in zip(results, items)):
        raise RuntimeError(f"unexpected results: {results[:3]}")
    return elapsed, stats()["requests"] - requests_before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=48, help="trajectories judged in each run")
    parser.add_argument("--delay", type=float, default=0.2, help="seconds the endpoint takes per request")
    args = parser.parse_args()

    items = list(make_arithmetic_dataset(args.items, seed=0, split="test").remove_columns(["error_kind"]))
    with serving(args.delay) as (base_url, stats, _), tempfile.TemporaryDirectory() as folder:
        cache_path = Path(folder) / "judge-cache.sqlite"
        serial, serial_requests = timed_run(base_url, stats, items, concurrency=1, cache_path=None)
        parallel, parallel_requests = timed_run(base_url, stats, items, concurrency=16, cache_path=cache_path)
        cached, cached_requests = timed_run(base_url, stats, items, concurrency=16, cache_path=cache_path)

    speedup = serial / parallel
    print(f"{args.items} items, endpoint delay {args.delay:.2f} s per request")
    print(f"{'run':<26}{'seconds':>9}{'requests':>10}{'items/s':>10}")
    for name, seconds, requests in [
        ("concurrency 1", serial, serial_requests),
        ("concurrency 16", parallel, parallel_requests),
        ("concurrency 16, cached", cached, cached_requests),
    ]:
        print(f"{name:<26}{seconds:>9.2f}{requests:>10}{args.items / seconds:>10.1f}")
    print(f"speed-up 16 vs 1: {speedup:.1f}x (goal >= {GOAL:.0f}x): {'PASS' if speedup >= GOAL else 'FAIL'}")
    print(f"cached re-run requests: {cached_requests} (goal 0): {'PASS' if cached_requests == 0 else 'FAIL'}")


if __name__ == "__main__":
    main()
