"""A real OpenAI-compatible chat server that critiques synthetic arithmetic solutions.

It reads actprm's critique prompt, checks the paragraphs with the arithmetic checker and answers
like a reasoning model (a think block, then ``\\boxed{k}``). Run as a process:
``python tests/critic_server.py [--delay SECONDS]``; it prints its port on the first line.
``GET /stats`` returns how many chat requests it served, how many of them were critiques, and the
most critiques it was answering at once.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys

from aiohttp import web

from actprm.judges.arithmetic import first_arithmetic_error

PROBLEM = re.compile(r"\[Problem\]\s*(.*?)\s*\[Proposed solution\]", re.S)
PARAGRAPH = re.compile(r"<paragraph_(\d+)>\n(.*?)\n</paragraph_\1>", re.S)


def critique(content: str) -> str:
    """The server's answer to one critique prompt."""
    problem = PROBLEM.search(content)
    if problem is None:  # e.g. an availability probe
        return "\\boxed{-1}"
    steps = [text for _, text in PARAGRAPH.findall(content)]
    index, reason = first_arithmetic_error(problem.group(1), steps)
    return f"<think>Checking each paragraph in order. {reason}</think>\n\nThe answer is \\boxed{{{index}}}."


async def serve(delay: float) -> None:
    served = {"requests": 0, "critiques": 0, "peak_concurrent_critiques": 0}
    answering = 0

    async def chat(request: web.Request) -> web.Response:
        nonlocal answering
        body = await request.json()
        is_critique = PROBLEM.search(body["messages"][-1]["content"]) is not None
        served["requests"] += 1
        served["critiques"] += is_critique
        answering += is_critique
        served["peak_concurrent_critiques"] = max(served["peak_concurrent_critiques"], answering)
        try:
            await asyncio.sleep(delay)
        finally:
            answering -= is_critique
        text = critique(body["messages"][-1]["content"])
        return web.json_response(
            {
                "id": f"critique-{served['requests']}",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": len(body["messages"][-1]["content"]) // 4, "completion_tokens": 30,
                          "total_tokens": len(body["messages"][-1]["content"]) // 4 + 30},
            }
        )

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
    asyncio.run(serve(parser.parse_args(sys.argv[1:]).delay))
