"""`OpenAIJudge`: any OpenAI-compatible chat endpoint, through huggingface_hub's async client."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Awaitable, Mapping, Sequence, TypeVar

import httpx2
from huggingface_hub import AsyncInferenceClient
from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError

from .base import Emit, JudgeResult, JudgeUnavailableError
from .prompt import CritiqueJudge, UnparseableOutputError, build_critique_messages, parse_first_error

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
"""HTTP statuses worth retrying: rate limits, overload and transient server errors."""

T = TypeVar("T")


def run_sync(coroutine: Awaitable[T]) -> T:
    """Run ``coroutine`` to completion, also from code that already runs an event loop (notebooks, UIs)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)  # type: ignore[arg-type]
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()  # type: ignore[arg-type]


class _RequestFailed(Exception):
    """A request that cannot succeed: its retries are spent, or its error is not worth retrying."""


@dataclass
class _Spend:
    """What one item cost so far."""

    attempts: int = 0
    tokens: int = 0


@dataclass
class _BatchState:
    """Shared by the items of one `annotate` call, to notice a server that stopped answering."""

    last_success: float = float("-inf")
    unreachable: str | None = None


class OpenAIJudge(CritiqueJudge):
    """A judge served by an OpenAI-compatible chat endpoint (vLLM, SGLang, TGI, `transformers serve`,
    hosted APIs).

    Each item is asked the critique prompt ``num_samples`` times (independent requests, so servers
    that ignore ``n`` work too); the answer is the majority over the parseable samples (a tie goes
    to the answer given first). An unparseable sample is asked again up to ``parse_retries`` times;
    an item with no parseable sample becomes a `JudgeFailure`. Requests that meet a timeout, a
    dropped connection or a 408/409/425/429/5xx status are retried up to ``max_retries`` times with
    exponential backoff and jitter (honouring ``Retry-After``). When a request exhausts its retries
    and no other request got an answer meanwhile, the server is taken to be down: the items still
    waiting fail at once, so a dead server ends a batch quickly.

    Args:
        base_url: the server's OpenAI base URL, e.g. ``http://localhost:8000/v1``.
        model: the model name the server expects.
        api_key: sent as a bearer token. ``None`` sends a placeholder, so that a stored Hugging Face
            token never leaks to a third-party server; pass it explicitly for HF endpoints.
        concurrency: requests in flight at once.
        timeout: seconds before a request is abandoned (and retried).
        max_retries: retries of a failed request.
        parse_retries: extra requests for a sample whose answer is unparseable.
        backoff: first retry delay in seconds, doubled at each retry, up to ``max_backoff``.
        num_samples: samples per item for the majority vote; above 1 needs ``temperature > 0``.
        temperature, max_tokens, extra_body: sampling parameters sent with every request.
        cache_path: sqlite cache file (see `JudgeCache`).
    """

    concurrent_batches = True  # each `annotate` call has its own client and event loop

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        concurrency: int = 16,
        timeout: float = 300.0,
        max_retries: int = 4,
        parse_retries: int = 2,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        num_samples: int = 1,
        temperature: float = 0.0,
        max_tokens: int = 4096,
        extra_body: Mapping[str, Any] | None = None,
        cache_path: str | os.PathLike | None = None,
    ):
        super().__init__(cache_path=cache_path)
        if concurrency < 1 or num_samples < 1 or max_retries < 0 or parse_retries < 0:
            raise ValueError("concurrency and num_samples must be >= 1, max_retries and parse_retries >= 0")
        if num_samples > 1 and temperature <= 0:
            raise ValueError(
                f"a majority vote over {num_samples} greedy samples is one answer repeated: set temperature > 0"
            )
        self.base_url = base_url
        self.model = model
        self.api_key = api_key if api_key is not None else "EMPTY"
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.parse_retries = parse_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.num_samples = num_samples
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.extra_body = dict(extra_body or {})

    @property
    def identity(self) -> str:
        return self._make_identity(
            "openai",
            self.model,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            num_samples=self.num_samples,
            **({"extra_body": json.dumps(self.extra_body, sort_keys=True)} if self.extra_body else {}),
        )

    def check_available(self) -> None:
        """Ask for one token; raise `JudgeUnavailableError` naming the server if that fails."""

        async def probe() -> None:
            async with self._client() as client:
                await client.chat_completion([{"role": "user", "content": "Say OK."}], model=self.model, max_tokens=1)

        try:
            run_sync(probe())
        except (httpx2.HTTPError, ValueError) as error:
            raise JudgeUnavailableError(
                f"judge model {self.model!r} at {self.base_url} is not available: {_describe(error)}"
            ) from error

    def _client(self) -> AsyncInferenceClient:
        return AsyncInferenceClient(base_url=self.base_url, api_key=self.api_key, timeout=self.timeout)

    def _annotate(self, items: Sequence[dict[str, Any]], emit: Emit) -> None:
        run_sync(self._annotate_all(items, emit))

    async def _annotate_all(self, items: Sequence[dict[str, Any]], emit: Emit) -> None:
        semaphore = asyncio.Semaphore(self.concurrency)
        state = _BatchState()
        async with self._client() as client:

            async def judge(position: int, item: dict[str, Any]) -> None:
                emit(position, await self._judge_item(client, semaphore, state, item))

            await asyncio.gather(*(judge(position, item) for position, item in enumerate(items)))

    async def _judge_item(
        self, client: AsyncInferenceClient, semaphore: asyncio.Semaphore, state: _BatchState, item: dict[str, Any]
    ) -> JudgeResult:
        messages = build_critique_messages(item["problem"], item["steps"])
        num_steps = len(item["steps"])
        spend = _Spend()
        votes: list[int] = []
        outputs: list[str] = []
        reason = ""
        try:
            for _ in range(self.num_samples):
                for _ in range(self.parse_retries + 1):
                    output = await self._complete(client, semaphore, state, messages, spend)
                    outputs.append(output)
                    try:
                        votes.append(parse_first_error(output, num_steps))
                        break
                    except UnparseableOutputError as error:
                        reason = f"unparseable answer: {error}"
        except _RequestFailed as error:
            raw_output = outputs[-1] if outputs else str(error)
            return self._failure(
                str(error), raw_output=raw_output, attempts=spend.attempts, tokens=spend.tokens, server_error=True
            )
        if not votes:
            return self._failure(reason, raw_output=outputs[-1], attempts=spend.attempts, tokens=spend.tokens)
        first_error = Counter(votes).most_common(1)[0][0]
        raw_output = (
            outputs[0]
            if len(outputs) == 1
            else "\n\n".join(f"=== sample {i} ===\n{output}" for i, output in enumerate(outputs))
        )
        return self._annotation(item, first_error, tokens=spend.tokens, raw_output=raw_output)

    async def _complete(
        self,
        client: AsyncInferenceClient,
        semaphore: asyncio.Semaphore,
        state: _BatchState,
        messages: list[dict[str, str]],
        spend: _Spend,
    ) -> str:
        """One answer to ``messages``, retrying transient errors; its reasoning kept in a think block."""
        started = time.monotonic()
        for retry in range(self.max_retries + 1):
            try:
                async with semaphore:
                    if state.unreachable is not None:
                        raise _RequestFailed(state.unreachable)
                    spend.attempts += 1
                    self.stats.requests += 1
                    response = await client.chat_completion(
                        messages,
                        model=self.model,
                        max_tokens=self.max_tokens,
                        temperature=self.temperature,
                        extra_body=self.extra_body or None,
                    )
            except HfHubHTTPError as error:
                if error.response.status_code not in RETRYABLE_STATUS:
                    raise _RequestFailed(f"request failed: {_describe(error)}") from error
                failure = f"request failed after {retry + 1} attempts: {_describe(error)}"
                delay = _retry_after(error)
            except (InferenceTimeoutError, httpx2.TransportError) as error:
                failure = f"request failed after {retry + 1} attempts: {_describe(error)}"
                delay = None
            except ValueError as error:  # a reply that is not a chat completion
                raise _RequestFailed(f"request failed: malformed response: {error}") from error
            else:
                state.last_success = time.monotonic()
                if response.usage is not None:
                    spend.tokens += response.usage.prompt_tokens + response.usage.completion_tokens
                return _response_text(response)
            if retry < self.max_retries:
                await asyncio.sleep(self._backoff_delay(retry, delay))
        if state.last_success < started:  # nothing got through while this request was retried
            state.unreachable = f"judge server unreachable: {failure}"
        raise _RequestFailed(failure)

    def _backoff_delay(self, retry: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter, at least the server's ``Retry-After``, at most ``max_backoff``."""
        delay = min(self.max_backoff, self.backoff * 2**retry) * random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_backoff))
        return delay


def _describe(error: Exception) -> str:
    """One line about a request error; for an HTTP error, its status and what the server said."""
    if isinstance(error, HfHubHTTPError):
        return f"HTTP {error.response.status_code}: {' '.join(error.response.text.split())[:500]}"
    return f"{type(error).__name__}: {error}"


def _retry_after(error: HfHubHTTPError) -> float | None:
    try:
        return float(error.response.headers.get("retry-after", ""))
    except ValueError:
        return None


def _response_text(response: Any) -> str:
    """The first choice's content, with a separately returned reasoning trace put back in a think block."""
    message = response.choices[0].message if response.choices else None
    if message is None:
        return ""
    content = message.content or ""
    reasoning = message.reasoning or message.get("reasoning_content")
    return f"<think>{reasoning}</think>{content}" if reasoning else content
