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
from .failures import GarbageJudgeError, RateLimitedLog, UnparseableWindow, fault_kind
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
    """A request that cannot succeed: its retries are spent, or its error is not worth retrying.

    ``judge_down``: the judge as a whole is unusable (down, or answering garbage), not just this item.
    """

    def __init__(self, message: str, judge_down: bool = False):
        super().__init__(message)
        self.judge_down = judge_down


@dataclass
class _Spend:
    """What one item cost so far."""

    attempts: int = 0
    tokens: int = 0


@dataclass
class _BatchState:
    """Shared by the items of one `annotate` call, to notice a server that stopped answering."""

    last_success: float = float("-inf")
    stopped: str | None = None
    """Why nothing more is asked in this batch (the server is down, or answers garbage)."""
    probe: asyncio.Future[None] | None = None
    """The latest probe of whether the server answers at all (see `OpenAIJudge._server_answers`)."""


class OpenAIJudge(CritiqueJudge):
    """A judge served by an OpenAI-compatible chat endpoint (vLLM, SGLang, TGI, `transformers serve`,
    hosted APIs).

    Each item is asked the critique prompt ``num_samples`` times (independent requests, so servers
    that ignore ``n`` work too); the answer is the majority over the parseable samples (a tie goes
    to the answer given first). An unparseable sample is asked again up to ``parse_retries`` times;
    an item with no parseable sample becomes a `JudgeFailure`. Requests that meet a timeout, a
    dropped connection or a 408/409/425/429/5xx status are retried up to ``max_retries`` times with
    exponential backoff and jitter (honouring ``Retry-After``), and so are 200 replies that are not a
    chat completion; retries are logged (rate-limited) and counted by kind in ``stats.faults``. When a
    request exhausts its retries, no other request got an answer meanwhile and the server does not answer a
    one-token probe either, the server is taken to be down: the items still waiting fail at once (``judge_down``), so a dead server ends a batch
    quickly. When more than ``max_unparseable_rate`` of the last ``unparseable_window`` answers could
    not be parsed, the judge is taken to answer garbage and the batch ends the same way, its failures
    saying what the judge wrote and what it cost.

    The endpoint is reached even when ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set: offline
    mode keeps the Hub out, not a server at a URL given here.

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
        max_unparseable_rate, unparseable_window: the garbage check above (``max_unparseable_rate=1``
            disables it).
        cache_path: sqlite cache file (see `JudgeCache`).

    Example:
        ```py
        >>> from actprm import OpenAIJudge, load_steps
        >>> judge = OpenAIJudge("http://localhost:8000/v1", "Qwen/QwQ-32B", concurrency=64, cache_path="judge_cache.sqlite")
        >>> results = judge.annotate(load_steps("Qwen/ProcessBench", subset="gsm8k").select(range(8)))
        >>> [getattr(result, "first_error", None) for result in results]  # None for a `JudgeFailure`
        ```
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
        max_unparseable_rate: float = 0.5,
        unparseable_window: int = 50,
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
        self.unparseable = UnparseableWindow(max_unparseable_rate, unparseable_window)
        self._fault_log = RateLimitedLog()
        self.garbage_stop: str | None = None
        """Set once the garbage check tripped: every later request fails at once, without being sent."""

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
        """Ask for one token (retrying transient errors like any request); raise `JudgeUnavailableError`
        naming the server if that fails."""

        async def probe() -> None:
            async with self._client() as client:
                await self._probe(client, asyncio.Semaphore(1), _BatchState())

        try:
            run_sync(probe())
        except _RequestFailed as error:
            raise JudgeUnavailableError(f"judge model {self.model!r} at {self.base_url} is not available: {error}") from error

    def _client(self) -> AsyncInferenceClient:
        return _EndpointClient(base_url=self.base_url, api_key=self.api_key, timeout=self.timeout)

    def _annotate(self, items: Sequence[dict[str, Any]], emit: Emit) -> None:
        run_sync(self._annotate_all(items, emit))

    async def _annotate_all(self, items: Sequence[dict[str, Any]], emit: Emit) -> None:
        semaphore = asyncio.Semaphore(self.concurrency)
        state = _BatchState(stopped=self.garbage_stop)
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
                str(error), raw_output=raw_output, attempts=spend.attempts, tokens=spend.tokens, server_error=True,
                judge_down=error.judge_down,
            )
        stopped = self._note_answer(state, bool(votes), outputs[-1])
        if not votes:
            return self._failure(
                stopped or reason, raw_output=outputs[-1], attempts=spend.attempts, tokens=spend.tokens,
                judge_down=stopped is not None,
            )
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
        max_tokens: int | None = None,
        down_check: bool = True,
    ) -> str:
        """One answer to ``messages``, retrying transient errors; its reasoning kept in a think block.

        With ``down_check``, a request whose retries are spent while nothing else got an answer, and the server
        then does not answer a probe either, means the server is down (``judge_down``)."""
        started = time.monotonic()
        for retry in range(self.max_retries + 1):
            try:
                async with semaphore:
                    if state.stopped is not None:
                        raise _RequestFailed(state.stopped, judge_down=True)
                    spend.attempts += 1
                    self.stats.add(requests=1)
                    response = await client.chat_completion(
                        messages,
                        model=self.model,
                        max_tokens=max_tokens or self.max_tokens,
                        temperature=self.temperature,
                        extra_body=self.extra_body or None,
                    )
            except HfHubHTTPError as error:
                problem, delay = _describe(error), _retry_after(error)
                if error.response.status_code not in RETRYABLE_STATUS:
                    self._note_fault(problem, "not retried")
                    raise _RequestFailed(f"request failed: {problem}") from error
            except (InferenceTimeoutError, httpx2.TransportError) as error:
                problem, delay = _describe(error), None
            except ValueError as error:  # a 200 whose body is not a chat completion: a faulty reply, retried
                problem, delay = f"malformed response: {' '.join(str(error).split())[:200]}", None
            else:
                state.last_success = time.monotonic()
                if response.usage is not None:
                    spend.tokens += response.usage.prompt_tokens + response.usage.completion_tokens
                return _response_text(response)
            failure = f"request failed after {retry + 1} attempts: {problem}"
            if retry < self.max_retries:
                delay = self._backoff_delay(retry, delay)
                self._note_fault(problem, f"retry {retry + 1} of {self.max_retries} in {delay:.1f} s")
                await asyncio.sleep(delay)
            else:
                self._note_fault(problem, "retries spent")
        if down_check and state.last_success < started and not await self._server_answers(client, semaphore, state):
            state.stopped = state.stopped or f"judge server unreachable: {failure}"
            raise _RequestFailed(state.stopped, judge_down=True)
        raise _RequestFailed(failure)

    async def _probe(self, client: AsyncInferenceClient, semaphore: asyncio.Semaphore, state: _BatchState) -> None:
        """Ask for one token (retried like any request); raises `_RequestFailed` if no answer comes."""
        messages = [{"role": "user", "content": "Say OK."}]
        await self._complete(client, semaphore, state, messages, _Spend(), max_tokens=1, down_check=False)

    async def _server_answers(self, client: AsyncInferenceClient, semaphore: asyncio.Semaphore, state: _BatchState) -> bool:
        """Whether the server answers a probe (one per batch at a time, its answer counting as the batch's
        latest success): when an item's request failed and nothing else got through meanwhile, this tells a
        dead server from an item it keeps failing on (asked alone, as a retried item can be)."""
        if state.stopped is not None:
            return False
        if state.probe is None or state.probe.done():
            state.probe = asyncio.ensure_future(self._probe(client, semaphore, state))
        try:
            await asyncio.shield(state.probe)
        except _RequestFailed:
            return False
        return True

    def _note_fault(self, problem: str, what_next: str) -> None:
        """Count a failed request by kind and log it (rate-limited)."""
        kind = fault_kind(problem)
        self.stats.add_fault(kind)
        self._fault_log.warn(kind, f"judge request to {self.base_url} failed ({what_next}): {problem}")

    def _note_answer(self, state: _BatchState, parseable: bool, output: str) -> str | None:
        """Feed the garbage check with an item's outcome; once it trips, the batch stops like for a dead
        server, and the reason is returned."""
        try:
            self.unparseable.record(parseable, output)
        except GarbageJudgeError as error:
            if self.garbage_stop is None:
                self.garbage_stop = (
                    f"{error}; spent so far by this judge: {self.stats.requests} requests, {self.stats.tokens} tokens"
                )
            state.stopped = self.garbage_stop
            return state.stopped
        return None

    def _backoff_delay(self, retry: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter, at least the server's ``Retry-After``, at most ``max_backoff``."""
        delay = min(self.max_backoff, self.backoff * 2**retry) * random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_backoff))
        return delay


class _EndpointClient(AsyncInferenceClient):
    """huggingface_hub's client on an HTTP session of its own, which offline mode does not block: that
    mode is about the Hub, and the judge is a server the user named."""

    async def _get_async_client(self) -> httpx2.AsyncClient:
        if self._async_client is None:
            session = httpx2.AsyncClient(follow_redirects=True, timeout=None, event_hooks={"response": [_read_error]})
            self._async_client = await self.exit_stack.enter_async_context(session)
        return self._async_client


async def _read_error(response: httpx2.Response) -> None:
    """Read an error reply's body, so that the raised error can say what the server wrote."""
    if response.status_code >= 400:
        await response.aread()


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
