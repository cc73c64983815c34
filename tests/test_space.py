"""The step-scoring demo end to end: ``spaces/app.py`` served in a subprocess, `gradio_client` and a
headless Chromium (Debian's ``chromium``, driven by Playwright) against it, offline."""

import json
import os
import shutil
import sys
from pathlib import Path

import gradio as gr
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from conftest import free_port, missing, server_process

from actprm.cli import main as cli_main
from actprm.data import SAMPLES_DIR, load_steps, make_arithmetic_dataset
from actprm.metrics import first_error_from_scores, processbench_scores
from actprm.scoring import StepScorer
from actprm.space import (
    EMBEDDED_MODEL,
    MODELS_ENV,
    TRUST_REMOTE_CODE_ENV,
    ScorerCache,
    SpaceLimits,
    build_demo,
    embedded_model,
    example_inputs,
    parse_steps,
    score_steps,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
"""Chromium builds looked up on PATH, in order."""
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("ACTPRM_TEST_ARTIFACTS", REPO_ROOT / "outputs" / "test-artifacts"))
"""Where the browser test saves its screenshots (``outputs/`` is git-ignored)."""
LIMITS = SpaceLimits()
STARTUP_SECONDS = 180
PAGE_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """``python spaces/app.py`` on a free local port: yields ``(url, server log path)``."""
    port = free_port()
    env = {
        **os.environ,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    env.pop(MODELS_ENV, None)
    env.pop(TRUST_REMOTE_CODE_ENV, None)
    log_path = tmp_path_factory.mktemp("space") / "server.log"
    url = f"http://127.0.0.1:{port}/"
    command = [sys.executable, str(REPO_ROOT / "spaces" / "app.py")]
    with server_process(command, url, log_path, env=env, startup_seconds=STARTUP_SECONDS):
        yield url, log_path


@pytest.fixture(scope="module")
def client(space):
    return Client(space[0], verbose=False)


@pytest.fixture(scope="module")
def scorer():
    return StepScorer.from_pretrained(embedded_model())


def test_the_embedded_model_judges_synthetic_arithmetic(scorer):
    """The shipped demo PRM is trained: on unseen synthetic problems it finds most first errors."""
    test = make_arithmetic_dataset(300, seed=1, split="test")
    results = scorer.score(test.to_list(), 0.5, show_progress=False)
    scores = processbench_scores([result["first_error"] for result in results], test["label"])
    assert scores["f1"] > 0.6 and scores["error_acc"] > 0.45 and scores["correct_acc"] > 0.9, scores


def _expected(scorer, problem, steps, threshold=0.5):
    return scorer.score([{"problem": problem, "steps": steps}], threshold, batch_size=1, show_progress=False)[0]


def _assert_same_scores(result, expected):
    assert result["scores"] == pytest.approx(expected["scores"], abs=1e-6)
    assert result["stds"] == pytest.approx(expected["stds"], abs=1e-6)
    assert result["first_error"] == expected["first_error"]
    assert result["num_scored_steps"] == expected["num_scored_steps"] == len(result["steps"])


@pytest.mark.parametrize("name", ["processbench_gsm8k_sample.json", "prmbench_sample.jsonl"])
def test_api_scores_match_step_scorer(client, scorer, name):
    record = next(row for row in load_steps(SAMPLES_DIR / name) if row["label"] >= 0)
    result = client.predict(record["problem"], "\n\n".join(record["steps"]), api_name="/score")
    assert result["steps"] == record["steps"]
    assert result["model"] == "embedded-default" and result["threshold"] == 0.5 and not result["truncated"]
    _assert_same_scores(result, _expected(scorer, record["problem"], record["steps"]))
    assert f"Step {result['first_error'] + 1}" in result["verdict"] if result["first_error"] >= 0 else "No step" in result["verdict"]


def test_api_takes_numbered_lines_and_the_threshold(client, scorer):
    problem = "Mia has 3 apples and buys 4 more. How many apples does she have?"
    steps_text = "1. Mia starts with 3 apples.\n2. She buys 4 more: 3 + 4 = 8.\n   So she has 8.\n3. The answer is 8."
    steps = ["1. Mia starts with 3 apples.", "2. She buys 4 more: 3 + 4 = 8.\nSo she has 8.", "3. The answer is 8."]
    scores = _expected(scorer, problem, steps)["scores"]
    low = client.predict(problem, steps_text, "embedded-default", 0.01, api_name="/score")
    assert low["steps"] == steps and low["threshold"] == 0.01
    _assert_same_scores(low, _expected(scorer, problem, steps, threshold=0.01))
    high = client.predict(problem=problem, steps=steps_text, threshold=0.99, api_name="/score")
    _assert_same_scores(high, _expected(scorer, problem, steps, threshold=0.99))
    for result in (low, high):  # the first step scored below the threshold given
        assert result["first_error"] == first_error_from_scores(scores, result["threshold"])


@pytest.mark.parametrize(
    ("problem", "steps", "message"),
    [
        ("", "Step one.", "Enter the problem."),
        ("   ", "Step one.", "Enter the problem."),
        ("What is 1 + 1?", " \n\n  ", "Enter at least one step"),
        ("x" * (LIMITS.max_problem_chars + 1), "Step one.", f"at most {LIMITS.max_problem_chars:,}"),
        ("What is 1 + 1?", "\n\n".join(["1 + 1 = 2."] * (LIMITS.max_steps + 1)), f"scores at most {LIMITS.max_steps} steps"),
        ("What is 1 + 1?", "Fine.\n\n" + "2" * (LIMITS.max_step_chars + 1), "Step 2 is"),
    ],
    ids=["empty-problem", "blank-problem", "no-steps", "long-problem", "too-many-steps", "long-step"],
)
def test_api_refuses_empty_and_oversized_input_with_a_message(space, client, problem, steps, message):
    with pytest.raises(AppError) as error:
        client.predict(problem, steps, api_name="/score")
    assert message in str(error.value)
    assert "Traceback" not in str(error.value)
    assert "Traceback" not in space[1].read_text()


def test_api_refuses_a_model_it_does_not_serve(client):
    with pytest.raises(AppError, match="not in the list of choices"):
        client.predict("What is 1 + 1?", "1 + 1 = 2.", "gpt2", api_name="/score")


def test_browser_scores_an_example_and_marks_the_first_error(space, client):
    chromium = next(filter(None, map(shutil.which, BROWSERS)), None)
    if chromium is None:
        missing(f"no Chromium on PATH ({', '.join(BROWSERS)}): install one, e.g. `apt-get install -y chromium`")
    from playwright.sync_api import expect, sync_playwright

    label, (problem, steps_text) = example_inputs()[0]
    expected = client.predict(problem, steps_text, api_name="/score")
    first_error = expected["first_error"]
    assert first_error >= 0, "the example must have a predicted error for this test to check its marking"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            expect.set_options(timeout=PAGE_TIMEOUT_MS)
            page.goto(space[0])
            page.get_by_text(label, exact=True).click()
            expect(page.get_by_label("Problem")).to_have_value(problem)
            page.get_by_role("button", name="Score", exact=True).click()

            marked = page.locator("#step-scores tr.first-error")
            expect(marked).to_have_count(1)
            expect(marked).to_have_attribute("data-step", str(first_error))
            expect(marked).to_contain_text("first error")
            expect(marked).to_contain_text(expected["steps"][first_error][:60])
            expect(marked).to_have_css("outline-style", "solid")
            expect(page.locator("#step-scores tbody tr")).to_have_count(len(expected["steps"]))
            expect(page.get_by_text(f"Step {first_error + 1} is the first step the PRM doubts")).to_be_visible()
            screenshot = ARTIFACTS / "space_scored_example.png"
            page.screenshot(path=screenshot, full_page=True)
            print(f"screenshot: {screenshot}")

            page.get_by_label("Problem").fill("")
            page.get_by_role("button", name="Score", exact=True).click()
            expect(page.get_by_text("Enter the problem.")).to_be_visible()
            expect(page.locator("#step-scores tr")).to_have_count(0)
            page.wait_for_timeout(1000)  # let the message finish fading in
            screenshot = ARTIFACTS / "space_empty_problem.png"
            page.screenshot(path=screenshot, full_page=True)
            print(f"screenshot: {screenshot}")
        finally:
            browser.close()


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("First.\nstill first.\n\n  Second.  \n\n\n\nThird.", ["First.\nstill first.", "Second.", "Third."]),
        ("Step 1: a\nmore a\nStep 2) b\n3. c", ["Step 1: a\nmore a", "Step 2) b", "3. c"]),
        ("a = 1\n\nb = 2", ["a = 1", "b = 2"]),
        ("a = 1\nb = 2\n", ["a = 1", "b = 2"]),
        ("  \n ", []),
    ],
    ids=["paragraphs", "numbered", "two-paragraphs", "lines", "blank"],
)
def test_parse_steps(text, steps):
    assert parse_steps(text) == steps


def test_cli_reports_a_missing_model_without_serving(tmp_path, capsys):
    missing = tmp_path / "no-such-model"
    assert cli_main(["space", "--model", str(missing), "--port", str(free_port())]) == 2
    assert f"actprm space: error: {missing}" in capsys.readouterr().err


def test_models_come_from_the_environment(monkeypatch, tmp_path):
    other = str(tmp_path / "another-prm")
    monkeypatch.setenv(MODELS_ENV, f" {EMBEDDED_MODEL} , {other},")
    demo = build_demo()
    (dropdown,) = [block for block in demo.blocks.values() if isinstance(block, gr.Dropdown)]
    assert [value for _, value in dropdown.choices] == [EMBEDDED_MODEL, other]
    assert dropdown.value == EMBEDDED_MODEL
    monkeypatch.setenv(MODELS_ENV, " , ")
    with pytest.raises(ValueError, match=MODELS_ENV):
        build_demo()


def test_a_model_that_fails_to_load_gives_a_message(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(gr.Error, match="no model folder"):
        score_steps(ScorerCache(), LIMITS, "What is 1 + 1?", "1 + 1 = 2.", str(missing), 0.5)


def test_remote_code_is_not_run_unless_allowed(tmp_path):
    checkpoint = tmp_path / "custom-prm"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({
        "model_type": "qwen2",
        "architectures": ["Qwen2ForProcessRewardModel"],
        "auto_map": {"AutoModel": "modeling_qwen2_rm.Qwen2ForProcessRewardModel"},
    }))
    with pytest.raises(gr.Error, match="trust_remote_code=True"):
        score_steps(ScorerCache(), LIMITS, "What is 1 + 1?", "1 + 1 = 2.", str(checkpoint), 0.5)
