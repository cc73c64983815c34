"""A real OpenAI-compatible chat server that critiques synthetic arithmetic solutions, and can misbehave.

It reads actprm's critique prompt, checks the paragraphs with the arithmetic checker and answers
like a reasoning model (a think block, then ``\\boxed{k}``). Run as a process:
``python tests/critic_server.py [--delay SECONDS] [--fault_rate P] [--garbage]``; it prints its port on the
first line. With ``--fault_rate``, each request (the availability probe included) is, with probability P, one
of `FAULTS` instead (drawn from ``--seed``); with ``--garbage`` every critique is answered without a verdict;
with ``--fail_on TEXT`` every request whose prompt holds TEXT gets a 503.
``GET /stats`` returns how many chat requests it served, how many were critiques, the faults by kind, the
most critiques it was answering at once and how many distinct critique prompts it answered with a verdict.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import sys
from collections import Counter

from aiohttp import web

from actprm.judges.arithmetic import first_arithmetic_error

PROBLEM = re.compile(r"\[Problem\]\s*(.*?)\s*\[Proposed solution\]", re.S)
PARAGRAPH = re.compile(r"<paragraph_(\d+)>\n(.*?)\n</paragraph_\1>", re.S)
FAULTS = ("500", "503", "429", "slow", "reset", "unparseable", "out_of_range", "no_choices", "not_json")
"""HTTP 500/503, 429 with Retry-After, an answer after ``--slow`` seconds, a dropped connection, a text
without a verdict, a step index past the last step, an empty ``choices`` list, a 200 whose body is not JSON."""
GARBAGE = "<think>Let me look at each paragraph carefully.</think>\nOverall the solution looks reasonable to me."


def critique(content: str) -> str:
    """The server's answer to one critique prompt."""
    problem = PROBLEM.search(content)
    if problem is None:  # e.g. an availability probe
        return "\\boxed{-1}"
    steps = [text for _, text in PARAGRAPH.findall(content)]
    index, reason = first_arithmetic_error(problem.group(1), steps)
    return f"<think>Checking each paragraph in order. {reason}</think>\n\nThe answer is \\boxed{{{index}}}."


def completion(body: dict, text: str, number: int, choices: bool = True) -> web.Response:
    prompt_tokens = len(body["messages"][-1]["content"]) // 4
    return web.json_response(
        {
            "id": f"critique-{number}",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]
            if choices else [],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 30, "total_tokens": prompt_tokens + 30},
        }
    )


async def serve(delay: float, fault_rate: float, seed: int, slow: float, garbage: bool, fail_on: str | None) -> None:
    served = {"requests": 0, "critiques": 0, "faults": Counter(), "peak_concurrent_critiques": 0, "questions_answered": 0}
    answered: set[str] = set()
    answering = 0
    draw = random.Random(seed)

    async def chat(request: web.Request) -> web.Response:
        nonlocal answering
        body = await request.json()
        content = body["messages"][-1]["content"]
        is_critique = PROBLEM.search(content) is not None
        served["requests"] += 1
        served["critiques"] += int(is_critique)
        answering += is_critique
        served["peak_concurrent_critiques"] = max(served["peak_concurrent_critiques"], answering)
        try:
            await asyncio.sleep(delay)
        finally:
            answering -= is_critique
        fault = draw.choice(FAULTS) if draw.random() < fault_rate else None
        fault = "503" if fail_on is not None and fail_on in content else fault
        served["faults"][fault or "none"] += 1
        if fault in ("500", "503", "429"):
            headers = {"Retry-After": "0.01"} if fault == "429" else {}
            return web.json_response({"error": {"message": f"injected {fault}"}}, status=int(fault), headers=headers)
        if fault == "slow":
            await asyncio.sleep(slow)
        if fault == "reset":
            request.transport.close()
            return web.Response()
        if fault == "not_json":
            return web.Response(text="<html><body>upstream busy</body></html>", content_type="text/html")
        if fault == "unparseable" or (garbage and is_critique):
            return completion(body, GARBAGE, served["requests"])
        if fault == "out_of_range":
            return completion(body, "<think>Checked.</think> \\boxed{99}", served["requests"])
        if is_critique and fault is None:
            answered.add(content)
            served["questions_answered"] = len(answered)
        return completion(body, critique(content), served["requests"], choices=fault != "no_choices")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(served)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/stats", stats)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--fault_rate", type=float, default=0.0, help="share of requests answered with a fault")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    parser.add_argument("--slow", type=float, default=2.0, help="extra seconds of a slow answer")
    parser.add_argument("--garbage", action="store_true", help="answer every critique without a verdict")
    parser.add_argument("--fail_on", default=None, help="answer 503 to every request whose prompt holds this text")
    options = parser.parse_args(sys.argv[1:])
    asyncio.run(serve(options.delay, options.fault_rate, options.seed, options.slow, options.garbage, options.fail_on))
