"""The fake OpenAI-compatible chat server of the tests and benchmarks: it critiques synthetic arithmetic
solutions, and misbehaves on request.

It reads actprm's critique prompt, checks the paragraphs with the arithmetic checker and answers
like a reasoning model (a think block, then ``\\boxed{k}``). Run as a process:
``python tests/critic_server.py [--delay SECONDS] [--fault_rate P] [--garbage] ...``; it prints its port on the
first line; `serving` starts it in a forked process from a test or a benchmark. With ``--fault_rate``, each
request (the availability probe included) is, with probability P, one of `FAULTS` instead (drawn from
``--seed``); with ``--garbage`` every critique is answered without a verdict; with ``--fail_on TEXT`` every
request whose prompt holds TEXT gets a 503; the first ``--fail_first N`` requests get a 503.

A prompt that holds ``script=A,B,...`` is answered by its script instead: its n-th request by the n-th action
(the last one repeated), an action being ``ok:K`` (the verdict \\boxed{K}), an HTTP status, or a fault of
`FAULTS` by name.
``GET /stats`` returns how many chat requests it served, how many were critiques, the faults by kind, the
most critiques it was answering at once and how many distinct critique prompts it answered with a verdict.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import re
import sys
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from aiohttp import web

from actprm.judges.arithmetic import first_arithmetic_error

PROBLEM = re.compile(r"\[Problem\]\s*(.*?)\s*\[Proposed solution\]", re.S)
PARAGRAPH = re.compile(r"<paragraph_(\d+)>\n(.*?)\n</paragraph_\1>", re.S)
SCRIPT = re.compile(r"script=(\S+)")
FAULTS = ("500", "503", "429", "slow", "reset", "unparseable", "out_of_range", "no_choices", "not_json")
"""HTTP 500/503, 429 with Retry-After, an answer after ``--slow`` seconds, a dropped connection, a text
without a verdict, a step index past the last step, an empty ``choices`` list, a 200 whose body is not JSON."""
GARBAGE = "<think>Let me look at each paragraph carefully.</think>\nOverall the solution looks reasonable to me."
USAGE = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
"""What every answer costs."""


def critique(content: str) -> str:
    """The server's answer to one critique prompt."""
    problem = PROBLEM.search(content)
    if problem is None:  # e.g. an availability probe
        return "\\boxed{-1}"
    steps = [text for _, text in PARAGRAPH.findall(content)]
    index, reason = first_arithmetic_error(problem.group(1), steps)
    return f"<think>Checking each paragraph in order. {reason}</think>\n\nThe answer is \\boxed{{{index}}}."


def verdict(index: str) -> str:
    return f"<think>Paragraph by paragraph: the first error is {index}.</think>\n\nSo \\boxed{{{index}}}."


def completion(body: dict, text: str, number: int, choices: bool = True) -> web.Response:
    return web.json_response(
        {
            "id": f"critique-{number}",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]
            if choices else [],
            "usage": USAGE,
        }
    )


async def serve(options: argparse.Namespace, announce: Callable[[int], None]) -> None:
    served = {"requests": 0, "critiques": 0, "faults": Counter(), "peak_concurrent_critiques": 0, "questions_answered": 0}
    answered: set[str] = set()
    asked: Counter[str] = Counter()
    answering = 0
    draw = random.Random(options.seed)

    def action(content: str, number: int) -> str | None:
        """What the ``number``-th request gets: None (the critique), ``ok:K``, an HTTP status or a fault."""
        scripted = SCRIPT.search(content)
        if scripted:
            script = scripted.group(1).split(",")
            chosen = script[min(asked[content], len(script) - 1)]
        else:
            chosen = draw.choice(FAULTS) if draw.random() < options.fault_rate else None
        asked[content] += 1
        if options.fail_on is not None and options.fail_on in content:
            return "503"
        return "503" if number <= options.fail_first else chosen

    async def chat(request: web.Request) -> web.Response:
        nonlocal answering
        body = await request.json()
        content = body["messages"][-1]["content"]
        is_critique = PROBLEM.search(content) is not None
        served["requests"] += 1
        number = served["requests"]
        served["critiques"] += int(is_critique)
        answering += is_critique
        served["peak_concurrent_critiques"] = max(served["peak_concurrent_critiques"], answering)
        try:
            await asyncio.sleep(options.delay)
        finally:
            answering -= is_critique
        fault = action(content, number)
        if fault == "slow":
            await asyncio.sleep(options.slow)
        served["faults"][fault if fault and not fault.startswith("ok:") else "none"] += 1
        if fault is not None and fault.isdigit():
            headers = {"Retry-After": "0.01"} if fault == "429" else {}
            return web.json_response({"error": {"message": f"injected {fault}"}}, status=int(fault), headers=headers)
        if fault == "reset":
            request.transport.close()
            return web.Response()
        if fault == "not_json":
            return web.Response(text="<html><body>upstream busy</body></html>", content_type="text/html")
        if fault == "unparseable" or (options.garbage and is_critique):
            return completion(body, GARBAGE, number)
        if fault == "no_choices":
            return completion(body, "", number, choices=False)
        if fault == "out_of_range":
            return completion(body, "<think>Checked.</think> \\boxed{99}", number)
        if is_critique and (fault is None or fault.startswith("ok:")):
            answered.add(content)
            served["questions_answered"] = len(answered)
        text = verdict(fault[3:]) if fault and fault.startswith("ok:") else critique(content)
        return completion(body, text, number)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(served)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/stats", stats)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    announce(site._server.sockets[0].getsockname()[1])
    await asyncio.Event().wait()


def parse_options(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--fault_rate", type=float, default=0.0, help="share of requests answered with a fault")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    parser.add_argument("--slow", type=float, default=2.0, help="extra seconds of a slow answer")
    parser.add_argument("--garbage", action="store_true", help="answer every critique without a verdict")
    parser.add_argument("--fail_on", default=None, help="answer 503 to every request whose prompt holds this text")
    parser.add_argument("--fail_first", type=int, default=0, help="answer 503 to the first N requests")
    return parser.parse_args(argv)


def _run(argv: list[str], ports: multiprocessing.Queue) -> None:
    asyncio.run(serve(parse_options(argv), ports.put))


@contextmanager
def serving(delay: float = 0.0, *flags: str) -> Iterator[tuple[str, Callable[[], dict], multiprocessing.Process]]:
    """The server (with the command-line ``flags``) in a process of its own; yields (base_url, stats(), process).

    Forked from a fork server (a clean process that has imported this module once), not from the test process:
    a fork of a process that runs threads (servers, thread pools) can inherit a lock another thread held, and
    hang on it; a spawned process would import this module anew each time."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    ports = context.Queue()
    process = context.Process(target=_run, args=(["--delay", str(delay), *flags], ports), daemon=True)
    process.start()
    try:
        port = ports.get(timeout=30)

        def stats() -> dict:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as response:
                return json.load(response)

        yield f"http://127.0.0.1:{port}/v1", stats, process
    finally:
        process.kill()
        process.join(timeout=10)


if __name__ == "__main__":
    asyncio.run(serve(parse_options(sys.argv[1:]), lambda port: print(port, flush=True)))
