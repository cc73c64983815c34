"""Judges against real servers: `transformers serve` with the tiny backbone, and a scripted endpoint.

The scripted endpoint is the critic server of tests/critic_server.py in its own process. Each item's
problem text holds ``script=a,b,c``: the server answers that item's first request with action ``a``, the
second with ``b``, and repeats the last. Actions: ``ok:N`` (a reasoning-style answer ending in
``\\boxed{N}``), ``unparseable`` (no answer), ``429``/``503``/``400`` (that status), ``slow`` (answers
after 30 s), and the server's other faults.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import socket
import sqlite3
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import free_port, server_process
from critic_server import serving as critic_server

from actprm.data import StepDataError, make_arithmetic_dataset
from actprm.judges import (
    PROMPT_VERSION,
    Annotation,
    AnnotationStore,
    ArithmeticJudge,
    JudgeCache,
    JudgeFailure,
    JudgeUnavailableError,
    OpenAIJudge,
    OracleJudge,
    TransformersJudge,
    UnparseableOutputError,
    build_critique_messages,
    parse_first_error,
)
from actprm.judges.arithmetic import evaluate, first_arithmetic_error

STEPS = ["Mia buys 7 more: 12 + 7 = 19.", "Mia loses 4: 19 - 4 = 15.", "The answer is 15."]


# ---------------------------------------------------------------------------------------------
# Parser


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("Paragraph 0 is right, paragraph 1 subtracts wrongly.\n\n\\boxed{1}", 1),
        ("All paragraphs check out.\n\nFinal answer: \\boxed{-1}", -1),
        ("\\boxed{ 2 }", 2),
        ("The earliest error is in \\boxed{\\text{2}}.", 2),
        ("$\\boxed{\\textbf{0}}$", 0),
        ("\\boxed{{1}}", 1),
        ("\\boxed{\u22121}", -1),
        ("\\boxed {- 1}", -1),
        ("\\boxed{paragraph\\_1}", 1),
        ("\\boxed{Paragraph 2}", 2),
        # reasoning models: the think block is ignored, whatever boxes it holds
        ("<think>Maybe \\boxed{0}? No, paragraph 0 is fine. Paragraph 2 is wrong.</think>\n\n\\boxed{2}", 2),
        ("<think>\nChecking 12 + 7 = 19, correct.\n</think>\nEvery step holds. \\boxed{-1}", -1),
        # the template opened the think block in the prompt: only its end is in the output
        ("paragraph 1 looks off... \\boxed{1} hmm, no.</think>The solution is correct: \\boxed{-1}", -1),
        # several boxes: the last is the final answer
        ("At first I thought \\boxed{0}, but re-checking, the error is in \\boxed{1}.", 1),
        ("\\boxed{2}\n\nWait, paragraph 1 already uses 19 - 5. So the answer is \\boxed{1}", 1),
    ],
)
def test_parse_first_error_reads_real_looking_answers(output, expected):
    assert parse_first_error(output, num_steps=3) == expected


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ("The first error is in paragraph 1.", "no \\\\boxed"),
        ("", "no \\\\boxed"),
        ("\\boxed{3}", "outside"),  # only paragraphs 0..2 exist
        ("\\boxed{-2}", "outside"),
        ("\\boxed{1.5}", "not a paragraph index"),
        ("\\boxed{Incorrect}", "not a paragraph index"),
        ("\\boxed{1, 2}", "not a paragraph index"),
        ("\\boxed{}", "not a paragraph index"),
        ("<think>The error is in paragraph 1, so \\boxed{1}", "never closed"),  # cut off while thinking
        ("<think>paragraph 1 is wrong</think>I conclude that paragraph 1 is wrong.", "no \\\\boxed"),
        ("I first said \\boxed{1} but the final answer is \\boxed{", "never closed"),  # cut at the token limit
        ("åéÄ ¥ 19 19 19 =", "no \\\\boxed"),
    ],
)
def test_parse_first_error_rejects_what_is_not_an_answer(output, reason):
    with pytest.raises(UnparseableOutputError, match=reason):
        parse_first_error(output, num_steps=3)


def test_critique_prompt_tags_every_step_in_order():
    content = build_critique_messages("Mia has 12 shells.", STEPS)[0]["content"]
    positions = [content.index(f"<paragraph_{i}>\n{step}\n</paragraph_{i}>") for i, step in enumerate(STEPS)]
    assert positions == sorted(positions)
    assert "Mia has 12 shells." in content and "\\boxed{-1}" in content and "<paragraph_3>" not in content


# ---------------------------------------------------------------------------------------------
# Oracle and arithmetic judges


def test_oracle_judge_answers_with_the_dataset_labels_and_fails_unlabelled_items():
    items = [
        {"id": "a", "problem": "p", "steps": ["s0", "s1", "s2"], "label": 1},
        {"id": "b", "problem": "q", "steps": ["s0", "s1"], "label": None},
        {"id": "c", "problem": "r", "steps": ["s0", "s1"], "step_labels": [1, 1]},
    ]
    judge = OracleJudge(tokens_per_step=10)
    first, missing, third = judge.annotate(items)
    assert (first.first_error, first.step_labels, first.tokens) == (1, [1, 0, None], 30)
    assert isinstance(missing, JudgeFailure) and "'b' has no label" in missing.reason
    assert (third.first_error, third.step_labels) == (-1, [1, 1])
    assert (judge.stats.requests, judge.stats.annotations, judge.stats.failures, judge.stats.tokens) == (3, 2, 1, 70)


def test_stats_lose_no_update_when_batches_are_judged_from_several_threads():
    """Batches in flight at once (`JudgePipeline` workers) update one judge's counters from several threads."""
    judge, items = ArithmeticJudge(), [dict(row) for row in make_arithmetic_dataset(2, seed=3)]
    threads, rounds = 8, 20_000
    start = threading.Barrier(threads)

    def work():
        start.wait()
        for _ in range(rounds):
            judge.stats.add(tokens=3, requests=1)
            judge.stats.add_fault("HTTP 503")
        judge.annotate(items)

    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can: a read-add-write pair gets split
    try:
        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(switch_interval)
    stats = judge.stats
    assert (stats.tokens, stats.requests, stats.faults) == (3 * threads * rounds, (rounds + 2) * threads, {"HTTP 503": threads * rounds})
    assert (stats.items, stats.annotations, stats.failures) == (2 * threads, 2 * threads, 0)


def test_judge_input_errors_name_the_record_and_field():
    with pytest.raises(StepDataError, match="OracleJudge.annotate input, record x, field 'steps'"):
        OracleJudge().annotate([{"id": "x", "problem": "p", "steps": "not a list"}])


def test_arithmetic_judge_finds_exactly_the_injected_error():
    """Holds for every row because a quantity is never dropped before an identical event, where the
    text would read the same whichever of the two was skipped."""
    dataset = make_arithmetic_dataset(3000, seed=7, error_rate=0.7)
    results = ArithmeticJudge().annotate(dataset)
    assert all(isinstance(result, Annotation) for result in results)
    assert [result.first_error for result in results] == dataset["label"]
    assert set(dataset["error_kind"]) == {"none", "wrong_result", "wrong_operand", "wrong_operation", "dropped_quantity"}


def test_arithmetic_judge_explains_each_kind_of_error():
    problem = "Mia has 12 shells. She buys 7 more. She loses 4. How many shells does Mia have at the end?"
    cases = [  # (first wrong step, its explanation, steps)
        (1, "19 - 4 is not 14", ["Mia buys 7 more: 12 + 7 = 19.", "Mia loses 4: 19 - 4 = 14.", "The answer is 14."]),
        (
            0,
            "starts from 13, but the running total is 12",
            ["Mia buys 7 more: 13 + 7 = 20.", "Mia loses 4: 20 - 4 = 16.", "The answer is 16."],
        ),
        (
            0,
            "applies - 7, but the event is + 7",
            ["Mia buys 7 more: 12 - 7 = 5.", "Mia loses 4: 5 - 4 = 1.", "The answer is 1."],
        ),
        (
            0,
            "applies + 6, but the event is + 7",
            ["Mia buys 7 more: 12 + 6 = 18.", "Mia loses 4: 18 - 4 = 14.", "The answer is 14."],
        ),
        (
            0,
            "describes 'Mia loses 4', but the event is 'Mia buys 7 more'",
            ["Mia loses 4: 12 - 4 = 8.", "The answer is 8."],
        ),
        (
            1,
            "states the answer before the event 'Mia loses 4'",
            ["Mia buys 7 more: 12 + 7 = 19.", "The answer is 19."],
        ),
        (2, "the answer is 15", ["Mia buys 7 more: 12 + 7 = 19.", "Mia loses 4: 19 - 4 = 15.", "The answer is 16."]),
        (3, "a step after the answer", STEPS + ["Mia buys 1 more: 15 + 1 = 16."]),
    ]
    for expected_index, explanation, steps in cases:
        first_error, report = first_arithmetic_error(problem, steps)
        assert first_error == expected_index and report.splitlines()[-1] == f"step {first_error}: wrong: {explanation}"
    assert first_arithmetic_error(problem, STEPS) == (-1, "step 0: correct\nstep 1: correct\nstep 2: correct")


def test_arithmetic_judge_records_unreadable_steps_as_failures():
    problem = "Mia has 12 shells. She buys 7 more. How many shells does Mia have at the end?"
    judge = ArithmeticJudge()
    unreadable, early_end, odd_problem = judge.annotate(
        [
            {"problem": problem, "steps": ["Adding them up gives nineteen.", "The answer is 19."]},
            {"problem": problem, "steps": ["Mia buys 7 more: 12 + 7 = 19."]},
            {"problem": "What is 2 + 2?", "steps": ["2 + 2 = 4."]},
        ]
    )
    assert "not an equation step" in unreadable.reason
    assert "ends before stating its answer" in early_end.reason
    assert "not a synthetic arithmetic problem" in odd_problem.reason


def test_expression_evaluator_is_exact_and_refuses_code():
    assert evaluate("7 / 2") * 2 == 7
    assert evaluate("-(3 - 10) * 2") == 14
    for code in ["__import__('os').getpid()", "2 ** 100", "1.5 + 1", "x + 1", "7 /"]:
        with pytest.raises(ValueError):
            evaluate(code)


# ---------------------------------------------------------------------------------------------
# Cache and annotation store


def _write_cache_entries(path: str, writer: int, barrier) -> None:
    cache = JudgeCache(path)
    barrier.wait()
    for i in range(150):
        answer = {
            "first_error": writer,
            "step_labels": [1],
            "tokens": i,
            "raw_output": f"w{writer}",
            "prompt_version": None,
        }
        cache.put("judge", f"shared-{i}", answer)
        cache.put("judge", f"own-{writer}-{i}", answer)


def test_cache_is_safe_for_several_processes_writing_at_once(tmp_path):
    path = str(tmp_path / "cache.sqlite")
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(3)
    writers = [context.Process(target=_write_cache_entries, args=(path, w, barrier)) for w in range(3)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=60)
    assert [process.exitcode for process in writers] == [0, 0, 0]
    cache = JudgeCache(path)
    assert len(cache) == 150 + 3 * 150
    assert all(cache.get("judge", f"own-{w}-{i}")["raw_output"] == f"w{w}" for w in range(3) for i in range(150))
    shared = cache.get("judge", "shared-7")
    assert shared["raw_output"] == f"w{shared['first_error']}" and shared["tokens"] == 7  # one writer's, whole
    assert cache.get("other judge", "shared-7") is None


def test_cache_tells_a_payers_own_answers_and_reads_files_written_before_payers(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # the schema before answers recorded who paid for them
        db.execute("CREATE TABLE answers (judge TEXT NOT NULL, question TEXT NOT NULL, first_error INTEGER NOT NULL, "
                   "step_labels TEXT NOT NULL, tokens INTEGER NOT NULL, raw_output TEXT NOT NULL, prompt_version TEXT, "
                   "created_at REAL NOT NULL, PRIMARY KEY (judge, question))")
        db.execute("INSERT INTO answers VALUES ('arithmetic', 'old', -1, '[1]', 0, 'ok', NULL, 0)")
    record = make_arithmetic_dataset(1, seed=2)[0]
    items = [{"id": name, "problem": record["problem"], "steps": record["steps"]} for name in ("a", "b")]
    judge = ArithmeticJudge(cache_path=path)
    assert judge.cache.get("arithmetic", "old")["raw_output"] == "ok" and judge.cache.paid_by("arithmetic", "old") == (None, None)
    judge.cache.payer = "run-1"
    assert [r.cached for r in judge.annotate(items)] == [False, True]  # paid once, for item a
    again = ArithmeticJudge(cache_path=path)
    again.cache.payer = "run-1"  # the same run, resumed: its answer for a is its own, b's is a cache hit
    assert [r.cached for r in again.annotate(items[::-1])] == [True, False]
    again.cache.payer = "run-2"
    assert [r.cached for r in again.annotate(items)] == [True, True]


def _open_new_cache(path: str, start: float) -> str:
    while time.time() < start:  # both processes open the file at the same moment
        pass
    try:
        JudgeCache(path)
        return "ok"
    except Exception as error:  # noqa: BLE001 - reported to the test
        return f"{type(error).__name__}: {error}"


def test_processes_opening_a_new_cache_at_once_all_succeed(tmp_path):
    """Two ranks of a run create the cache file together; neither may fail on sqlite's lock."""
    with multiprocessing.get_context("fork").Pool(2) as pool:
        for attempt in range(100):
            path = str(tmp_path / f"cache{attempt}.sqlite")
            results = pool.starmap(_open_new_cache, [(path, time.time() + 0.02)] * 2)
            assert results == ["ok", "ok"], f"attempt {attempt}: {results}"


def _annotation(first_error: int, judge: str = "arithmetic") -> Annotation:
    return Annotation(
        first_error, [1] * 3 if first_error < 0 else [1] * first_error + [0], 5, "why", judge, PROMPT_VERSION
    )


def test_store_appends_reloads_and_ignores_repeated_ids(tmp_path):
    path = tmp_path / "out" / "annotations.jsonl"
    store = AnnotationStore(path)
    items = [{"id": f"t{i}", "problem": f"p{i}", "steps": ["a", "b", "c"]} for i in range(3)]
    assert store.extend(items, [_annotation(-1), _annotation(1), _annotation(0)]) == 3
    assert not store.append(items[1], _annotation(2))  # already stored: a no-op
    assert store.extend([items[2], {**items[2], "id": "t3"}], [_annotation(0), _annotation(2)]) == 1

    reloaded = AnnotationStore(path)
    assert len(reloaded) == 4 and "t3" in reloaded and "t9" not in reloaded
    dataset = reloaded.to_dataset()
    assert dataset["id"] == ["t0", "t1", "t2", "t3"]
    assert dataset["label"] == [-1, 1, 0, 2]
    assert dataset[1]["step_labels"] == [1, 0]
    assert dataset[3]["judge"] == "arithmetic" and dataset[3]["prompt_version"] == PROMPT_VERSION
    assert dataset[0]["tokens"] == 5 and dataset[0]["raw_output"] == "why" and dataset[0]["annotated_at"]
    with pytest.raises(TypeError, match="only annotations"):
        store.append({"id": "t9", "problem": "p", "steps": ["a"]}, JudgeFailure("unparseable", "", 3, 0, "j"))


def test_store_survives_a_write_cut_short(tmp_path):
    path = tmp_path / "annotations.jsonl"
    store = AnnotationStore(path)
    store.extend([{"id": "t0", "problem": "p", "steps": ["a"]}], [_annotation(-1)])
    whole_line = path.read_text()
    with open(path, "a") as file:  # a kill in the middle of the next write
        file.write(whole_line.replace("t0", "t1")[: len(whole_line) // 2])
    store = AnnotationStore(path)
    assert len(store) == 1 and path.read_text() == whole_line
    assert store.append({"id": "t1", "problem": "p", "steps": ["a"]}, _annotation(0))
    assert AnnotationStore(path).to_dataset()["id"] == ["t0", "t1"]

    with open(path, "a") as file:  # a complete line that lost only its newline is kept
        file.write(whole_line.replace("t0", "t2").rstrip("\n"))
    assert AnnotationStore(path).to_dataset()["id"] == ["t0", "t1", "t2"]

    path.write_text(whole_line + "{not json\n" + whole_line)
    with pytest.raises(StepDataError, match=f"{path}, record line 2"):
        AnnotationStore(path)


# ---------------------------------------------------------------------------------------------
# OpenAIJudge against a scripted OpenAI-compatible endpoint


@contextmanager
def scripted_endpoint(delay: float = 0.0, fail_first: int = 0):
    """The critic server (tests/critic_server.py) answering each item by the script in its problem text;
    a ``slow`` answer takes 30 s. Yields (base_url, stats(), process)."""
    with critic_server(delay, "--slow", "30", "--fail_first", str(fail_first)) as served:
        yield served


def _items(*scripts: str, steps: list[str] = STEPS) -> list[dict]:
    return [
        {"id": f"i{n}", "problem": f"Problem {n}. script={script}", "steps": steps} for n, script in enumerate(scripts)
    ]


def _judge(base_url: str, **kwargs) -> OpenAIJudge:
    options = {
        "concurrency": 4,
        "timeout": 5.0,
        "max_retries": 2,
        "parse_retries": 1,
        "backoff": 0.01,
        "max_tokens": 64,
    }
    return OpenAIJudge(base_url, "scripted-model", **{**options, **kwargs})


def test_openai_judge_parses_answers_and_counts_tokens():
    with scripted_endpoint() as (base_url, stats, _):
        judge = _judge(base_url)
        judge.check_available()
        results = judge.annotate(_items("ok:1", "ok:-1", "ok:0"))
        assert [result.first_error for result in results] == [1, -1, 0]
        assert results[0].step_labels == [1, 0, None] and results[1].step_labels == [1, 1, 1]
        assert results[0].tokens == 120 and results[0].raw_output.startswith("<think>")
        assert results[0].judge == judge.identity and results[0].prompt_version == PROMPT_VERSION
        assert stats()["requests"] == 4  # the availability probe and one request per item


def test_openai_judge_retries_rate_limits_server_errors_and_unparseable_answers():
    with scripted_endpoint() as (base_url, stats, _):
        judge = _judge(base_url)
        rate_limited, unparseable_once, unparseable, bad_request = judge.annotate(
            _items("429,503,ok:2", "unparseable,ok:1", "unparseable", "400")
        )
        assert rate_limited.first_error == 2 and rate_limited.tokens == 120  # failed attempts cost nothing
        assert unparseable_once.first_error == 1 and unparseable_once.tokens == 240
        assert isinstance(unparseable, JudgeFailure) and unparseable.reason.startswith(
            "unparseable answer: no \\boxed"
        )
        assert not unparseable.server_error and bad_request.server_error
        assert (unparseable.attempts, unparseable.tokens) == (2, 240) and "looks reasonable" in unparseable.raw_output
        assert isinstance(bad_request, JudgeFailure) and "HTTP 400" in bad_request.reason and bad_request.attempts == 1
        assert stats()["requests"] == 3 + 2 + 2 + 1
        assert (judge.stats.requests, judge.stats.annotations, judge.stats.failures) == (8, 2, 2)


def test_openai_judge_retries_every_transient_fault_and_logs_why(caplog):
    with scripted_endpoint() as (base_url, stats, _):
        judge = _judge(base_url, max_retries=3, parse_retries=2)
        with caplog.at_level("WARNING", logger="actprm"):
            results = judge.annotate(
                _items("not_json,not_json,ok:1", "reset,503,ok:2", "no_choices,ok:0", "ok:7,ok:-1", "429,reset,not_json,ok:1")
            )
        assert [r.first_error for r in results] == [1, 2, 0, -1, 1]  # no faulty answer became a label
        assert judge.stats.faults == {"malformed response": 3, "RemoteProtocolError": 2, "HTTP 503": 1, "HTTP 429": 1}
        assert stats()["requests"] == 3 + 3 + 2 + 2 + 4
    logged = caplog.text
    assert "failed (retry 1 of 3 in" in logged and "malformed response" in logged and "HTTP 503" in logged
    assert logged.count("malformed response") == 1  # rate-limited: one warning per kind


def test_check_available_retries_a_transient_error_before_giving_up():
    with scripted_endpoint(fail_first=2) as (base_url, stats, _):
        _judge(base_url).check_available()
        assert stats()["requests"] == 3


def test_a_judge_answering_garbage_stops_within_its_window():
    with scripted_endpoint() as (base_url, stats, _):
        judge = _judge(base_url, concurrency=2, unparseable_window=10, max_unparseable_rate=0.5)
        batches = [judge.annotate(_items(*["unparseable"] * 4)) for _ in range(4)]  # as the trainer asks: batch by batch
        assert all(isinstance(r, JudgeFailure) for batch in batches for r in batch)
        assert not any(r.judge_down for batch in batches[:2] for r in batch)  # 8 items: the window is not full
        stopped = batches[2][-1]
        assert stopped.judge_down and all(r.judge_down for r in batches[3])
        assert "unparseable: 10 of its last 10 (limit 50%)" in stopped.reason
        assert "looks reasonable to me" in stopped.reason and "spent so far by this judge: 2" in stopped.reason
        assert 2 * 10 <= stats()["requests"] <= 2 * 12  # two answers for each item of the window and in flight

        scripts = [f"unparseable,ok:{n % 3}" if n % 2 else "unparseable" for n in range(40)]
        # one item at a time: answers come back in order, so no window ever holds more than 5 failures of 10
        mixed = _judge(base_url, concurrency=1, unparseable_window=10).annotate(_items(*scripts))
        assert all(r.first_error == n % 3 for n, r in enumerate(mixed) if n % 2)  # one item in two fails: no stop
        assert not any(r.judge_down for r in mixed if isinstance(r, JudgeFailure))


def test_offline_mode_does_not_block_a_judge_at_a_given_url(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    with scripted_endpoint() as (base_url, _, _):
        judge = _judge(base_url)
        judge.check_available()
        assert judge.annotate(_items("ok:1"))[0].first_error == 1


def test_openai_judge_gives_up_on_timeouts_after_its_retries():
    with scripted_endpoint() as (base_url, stats, _):
        judge = _judge(base_url, timeout=0.5, max_retries=1)
        recovered, timed_out = judge.annotate(_items("slow,ok:0", "slow"))
        assert recovered.first_error == 0
        assert isinstance(timed_out, JudgeFailure) and "InferenceTimeoutError" in timed_out.reason
        assert timed_out.attempts == 2 and stats()["requests"] == 4

        assert not timed_out.judge_down  # the server answered the other item meanwhile

        # only these items are slow, and nothing else is asked: a probe finds the server answering
        alone = _judge(base_url, concurrency=1, timeout=0.3, max_retries=1).annotate(_items(*["slow"] * 2))
        assert all(r.reason.startswith("request failed after 2 attempts") and not r.judge_down for r in alone)

    with scripted_endpoint(delay=1.0) as (base_url, stats, _):  # nothing answers in time, not even a probe
        first, *others = _judge(base_url, concurrency=1, timeout=0.3, max_retries=1).annotate(_items(*["ok:0"] * 5))
        assert first.reason.startswith("judge server unreachable: request failed after 2 attempts: InferenceTimeoutError")
        assert all(r.reason.startswith("judge server unreachable") and r.attempts <= 2 for r in others)
        assert first.judge_down and all(r.judge_down for r in others)
        assert stats()["requests"] <= 5 * 2 + 2  # each item's two attempts and one probe (of two) for the batch


def test_openai_judge_majority_vote_over_samples():
    with scripted_endpoint() as (base_url, stats, _):
        judge = _judge(base_url, num_samples=3, temperature=0.7)
        majority, with_retry, tie = judge.annotate(
            _items("ok:1,ok:2,ok:1", "ok:2,unparseable,ok:0,ok:2", "ok:0,ok:2,unparseable,unparseable")
        )
        assert majority.first_error == 1 and majority.tokens == 360
        assert with_retry.first_error == 2 and with_retry.raw_output.count("=== sample") == 4
        assert tie.first_error == 0  # 0 and 2 once each, the third sample never parsed: the first answer wins
        assert stats()["requests"] == 3 + 4 + 4
    with pytest.raises(ValueError, match="temperature > 0"):
        OpenAIJudge(base_url, "m", num_samples=3, temperature=0.0)


def test_openai_judge_keeps_concurrency_bounded():
    with scripted_endpoint(delay=0.2) as (base_url, stats, _):
        results = _judge(base_url, concurrency=3).annotate(_items(*["ok:0"] * 12))
        assert all(result.first_error == 0 for result in results)
        assert stats()["peak_concurrent_critiques"] == 3


def test_openai_judge_cache_means_no_question_is_asked_twice(tmp_path):
    cache_path = tmp_path / "judge-cache.sqlite"
    items = _items("ok:1", "ok:-1", "unparseable")
    with scripted_endpoint() as (base_url, stats, _):
        first = _judge(base_url, cache_path=cache_path).annotate(items + [{**items[0], "id": "same question"}])
        assert stats()["requests"] == 1 + 1 + 2  # a question asked twice in a batch is sent once
        assert first[3] == dataclasses.replace(first[0], cached=True)  # paid once: the repeat costs nothing
        assert sum(r.tokens for r in first if isinstance(r, Annotation) and not r.cached) == 240
    with scripted_endpoint() as (base_url, stats, _):  # a new run, a new server
        restarted = _judge(base_url, cache_path=cache_path)
        again = restarted.annotate(items)
        assert stats()["requests"] == 2  # only the failure is asked again
        assert [a.first_error for a in again[:2]] == [a.first_error for a in first[:2]]
        assert all(a.cached for a in again[:2]) and again[0].raw_output == first[0].raw_output
        assert (restarted.stats.cache_hits, restarted.stats.tokens) == (2, 240)
        _judge(base_url, cache_path=cache_path, max_tokens=32).annotate(items[:1])  # other sampling: other key
        assert stats()["requests"] == 3


def test_openai_judge_server_killed_mid_run_then_resumed_from_cache(tmp_path):
    cache_path = tmp_path / "judge-cache.sqlite"
    items = _items(*["ok:1"] * 40)
    with scripted_endpoint(delay=0.1) as (base_url, stats, process):
        judge = _judge(base_url, concurrency=2, cache_path=cache_path)
        killer = threading.Thread(target=_kill_when, args=(lambda: judge.stats.annotations >= 6, process.kill))
        killer.start()
        results = judge.annotate(items)
        killer.join()
    annotated = [r for r in results if isinstance(r, Annotation)]
    failed = [r for r in results if isinstance(r, JudgeFailure)]
    assert 6 <= len(annotated) < 40 and len(annotated) + len(failed) == 40
    assert all(r.first_error == 1 for r in annotated)
    assert all(r.reason.startswith(("request failed after 3 attempts", "judge server unreachable")) for r in failed)
    assert all(r.server_error for r in failed)

    with scripted_endpoint() as (base_url, stats, _):
        resumed = _judge(base_url, cache_path=cache_path).annotate(items)
        assert all(r.first_error == 1 for r in resumed)
        assert stats()["requests"] == len(failed)


def _kill_when(condition, kill, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)
    kill()


def test_check_available_names_the_server_when_it_is_down():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    judge = OpenAIJudge(f"http://127.0.0.1:{port}/v1", "judge-model", timeout=5, max_retries=1, backoff=0.01)
    with pytest.raises(
        JudgeUnavailableError,
        match=rf"'judge-model' at http://127.0.0.1:{port}/v1 is not available: request failed after 2 attempts: ConnectError",
    ):
        judge.check_available()


# ---------------------------------------------------------------------------------------------
# OpenAIJudge against a real `transformers serve` with the tiny backbone


@contextmanager
def transformers_serve(model_path: str, log_path: Path):
    """`transformers serve` pinned to ``model_path`` on a free local port; yields (base_url, process)."""
    port = free_port()
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", model_path]
    command += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with server_process(command, f"http://127.0.0.1:{port}/health", log_path, env=env) as process:
        yield f"http://127.0.0.1:{port}/v1", process


@pytest.fixture(scope="module")
def served_backbone(tiny_backbone, tmp_path_factory):
    with transformers_serve(tiny_backbone, tmp_path_factory.mktemp("serve") / "serve.log") as (base_url, _):
        yield base_url


def _tiny_items(count: int) -> list[dict]:
    return list(make_arithmetic_dataset(count, seed=3, split="test").remove_columns(["error_kind"]))


def _prompt_length(tokenizer, item: dict) -> int:
    messages = build_critique_messages(item["problem"], item["steps"])
    return len(tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"])


def test_openai_judge_against_transformers_serve(served_backbone, tiny_backbone):
    from transformers import AutoTokenizer

    judge = OpenAIJudge(served_backbone, tiny_backbone, concurrency=2, max_tokens=8, parse_retries=1, backoff=0.01)
    judge.check_available()
    items = _tiny_items(3)
    results = judge.annotate(items)
    # the random tiny model writes gibberish: every answer is unparseable, retried, then a failure
    assert all(isinstance(r, JudgeFailure) and r.reason.startswith("unparseable answer") for r in results)
    assert all(r.attempts == 2 for r in results)
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    for item, failure in zip(items, results):
        prompt_tokens = _prompt_length(tokenizer, item)
        assert 2 * prompt_tokens < failure.tokens <= 2 * (prompt_tokens + 8)
    assert judge.stats.tokens == sum(r.tokens for r in results) and judge.stats.requests == 1 + 6  # the probe too


def test_check_available_rejects_a_model_the_server_does_not_serve(served_backbone):
    with pytest.raises(
        JudgeUnavailableError, match="'not-the-served-model' .* HTTP 400: .*requested 'not-the-served-model'"
    ):
        OpenAIJudge(served_backbone, "not-the-served-model").check_available()


def test_openai_judge_when_transformers_serve_is_killed_mid_run(tiny_backbone, tmp_path):
    with transformers_serve(tiny_backbone, tmp_path / "serve.log") as (base_url, process):
        judge = OpenAIJudge(
            base_url, tiny_backbone, concurrency=2, max_tokens=8, parse_retries=0, max_retries=2, backoff=0.05
        )
        killer = threading.Thread(target=_kill_when, args=(lambda: judge.stats.failures >= 4, process.kill))
        killer.start()
        results = judge.annotate(_tiny_items(30))
        killer.join()
    reasons = [r.reason for r in results]
    assert all(isinstance(r, JudgeFailure) for r in results)
    assert sum(reason.startswith("unparseable") for reason in reasons) >= 4  # answered before the kill
    assert all(r.server_error == (not r.reason.startswith("unparseable")) for r in results)
    assert any(reason.startswith("request failed after 3 attempts") for reason in reasons)  # retried, then given up
    assert all(reason.startswith(("unparseable", "request failed", "judge server unreachable")) for reason in reasons)


# ---------------------------------------------------------------------------------------------
# TransformersJudge on the tiny backbone


def test_transformers_judge_records_gibberish_as_failures(tiny_backbone):
    judge = TransformersJudge(tiny_backbone, max_new_tokens=6, batch_size=2)
    items = _tiny_items(3)
    results = judge.annotate(items)
    assert all(isinstance(r, JudgeFailure) and r.reason.startswith("unparseable answer") for r in results)
    assert all(r.attempts == 1 for r in results)  # greedy: asking again would repeat the answer
    prompt_lengths = [_prompt_length(judge.tokenizer, item) for item in items]
    assert all(length < r.tokens <= length + 6 for length, r in zip(prompt_lengths, results))
    assert judge.stats.requests == 3 and judge.identity.startswith(f"transformers:{tiny_backbone}|{PROMPT_VERSION}|")


def test_transformers_judge_parses_a_constrained_answer(tiny_backbone, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    answer = tokenizer("The first error: \\boxed{1}", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    start_of_turn = tokenizer.convert_tokens_to_ids("<|im_start|>")
    header = len(tokenizer("assistant\n", add_special_tokens=False)["input_ids"])

    def force_answer(batch_id, input_ids):
        """Constrained decoding: allow only the next token of ``answer`` after the assistant header."""
        ids = input_ids.tolist()
        last_turn = len(ids) - 1 - ids[::-1].index(start_of_turn)
        generated = len(ids) - (last_turn + 1 + header)
        return [answer[min(generated, len(answer) - 1)]]

    cache_path = tmp_path / "cache.sqlite"
    judge = TransformersJudge(
        tiny_backbone,
        tokenizer,
        max_new_tokens=len(answer) + 4,
        generation_kwargs={"prefix_allowed_tokens_fn": force_answer},
        cache_path=cache_path,
    )
    items = _tiny_items(3)
    results = judge.annotate(items)
    assert [r.first_error for r in results] == [1, 1, 1]
    assert results[0].raw_output == "The first error: \\boxed{1}" and results[0].step_labels[:2] == [1, 0]
    assert "force_answer" in judge.identity
    assert all(r.cached for r in judge.annotate(items)) and judge.stats.requests == 3
