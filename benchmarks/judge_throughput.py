"""Judge throughput: `OpenAIJudge` at concurrency 16 against concurrency 1, and a cached re-run.

The harness is a local OpenAI-compatible endpoint that answers every request after a fixed delay,
as a remote API or a busy vLLM server does. Both runs judge the same items; the script prints the
speed-up (goal: at least 8x) and checks that re-running with the sqlite cache makes zero requests.

    python benchmarks/judge_throughput.py [--items 48] [--delay 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from pathlib import Path

from aiohttp import web

from actprm.data import make_arithmetic_dataset
from actprm.judges import Annotation, OpenAIJudge

GOAL = 8.0


class FixedDelayEndpoint:
    """``POST /v1/chat/completions`` answering ``\\boxed{-1}`` after ``delay`` seconds, in a thread."""

    def __init__(self, delay: float):
        self.delay = delay
        self.requests = 0
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),), daemon=True)

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests += 1
        await asyncio.sleep(self.delay)
        message = {"role": "assistant", "content": "Every paragraph checks out. \\boxed{-1}"}
        return web.json_response(
            {
                "id": f"r{self.requests}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
                "usage": {"prompt_tokens": 200, "completion_tokens": 50, "total_tokens": 250},
            }
        )

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"
        self._ready.set()
        self._stop = asyncio.Event()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> FixedDelayEndpoint:
        self._thread.start()
        self._ready.wait(timeout=30)
        return self

    def __exit__(self, *exc_info) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)


def timed_run(
    endpoint: FixedDelayEndpoint, items: list[dict], concurrency: int, cache_path: Path | None
) -> tuple[float, int]:
    """Seconds to judge ``items`` and the requests the endpoint received meanwhile."""
    judge = OpenAIJudge(endpoint.base_url, "fixed-delay", concurrency=concurrency, cache_path=cache_path)
    requests_before = endpoint.requests
    start = time.perf_counter()
    results = judge.annotate(items)
    elapsed = time.perf_counter() - start
    if not all(isinstance(result, Annotation) and result.first_error == -1 for result in results):
        raise RuntimeError(f"unexpected results: {results[:3]}")
    return elapsed, endpoint.requests - requests_before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=48, help="trajectories judged in each run")
    parser.add_argument("--delay", type=float, default=0.2, help="seconds the endpoint takes per request")
    args = parser.parse_args()

    items = list(make_arithmetic_dataset(args.items, seed=0, split="test").remove_columns(["error_kind"]))
    with FixedDelayEndpoint(args.delay) as endpoint, tempfile.TemporaryDirectory() as folder:
        cache_path = Path(folder) / "judge-cache.sqlite"
        serial, serial_requests = timed_run(endpoint, items, concurrency=1, cache_path=None)
        parallel, parallel_requests = timed_run(endpoint, items, concurrency=16, cache_path=cache_path)
        cached, cached_requests = timed_run(endpoint, items, concurrency=16, cache_path=cache_path)

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
