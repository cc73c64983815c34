"""The step-scoring demo: a Gradio app that shows which step a PRM doubts and how sure its ensemble is.

`build_demo` returns the `gradio.Blocks` that ``spaces/app.py`` and ``actprm space`` launch. The
page's *Score* button is also the API endpoint ``/score`` (``gradio_client``: ``client.predict(problem,
steps, model, threshold, api_name="/score")``), which returns the scores as JSON; the table, plot and
verdict are drawn from that JSON, so the page shows exactly what the API returns.

Models are local folders or Hub ids, each loaded once on first use and shared by every request;
``embedded-default`` is the tiny PRM that ``actprm quickstart`` trains on synthetic arithmetic,
shipped with the package: it runs offline and judges only problems of that kind. Remote code is
never run unless the deployer allows it (``trust_remote_code=True`` or
``ACTPRM_SPACE_TRUST_REMOTE_CODE=1``).
"""

from __future__ import annotations

import html
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import torch
from matplotlib.figure import Figure

from .data import SAMPLES_DIR, load_steps, make_arithmetic_dataset
from .metrics import DEFAULT_THRESHOLD
from .scoring import StepScorer

EMBEDDED_MODEL = "embedded-default"
"""Model name that stands for `embedded_model` (the tiny PRM trained on synthetic arithmetic)."""
EMBEDDED_PRM = Path(__file__).parent / "resources" / "embedded_prm"
MODELS_ENV = "ACTPRM_SPACE_MODELS"
"""Comma-separated model folders or Hub ids to offer; the first is the default."""
TRUST_REMOTE_CODE_ENV = "ACTPRM_SPACE_TRUST_REMOTE_CODE"
"""Set to 1 / true / yes to let models run their own code (Qwen2.5-Math-PRM-style PRMs need it)."""
NUMBERED_LINE = re.compile(r"^\s*(?:step\s*)?\d+\s*[.):]\s", re.IGNORECASE)
ERROR_DURATION = 15
"""Seconds a message stays on the page."""
EMBEDDED_MODEL_NOTE = (
    "\n\n*The embedded default model is a tiny PRM trained by `actprm quickstart` on synthetic arithmetic "
    "word problems (like the example): it runs offline and judges only problems of that kind. Serve a real PRM "
    f"with `{MODELS_ENV}` (e.g. `sail/ActPRM`).*"
)
TABLE_CSS = """
table.step-scores { border-collapse: collapse; width: 100%; }
table.step-scores th, table.step-scores td { padding: 6px 8px; border-bottom: 1px solid #ddd; vertical-align: top; }
table.step-scores td { white-space: pre-wrap; }
table.step-scores tbody tr { color: #111; }
table.step-scores tr.first-error { outline: 3px solid #b91c1c; outline-offset: -3px; font-weight: 600; }
table.step-scores .badge { background: #b91c1c; color: white; border-radius: 4px; padding: 1px 6px; font-size: 0.8em; }
"""


@dataclass(frozen=True)
class SpaceLimits:
    """The largest input the demo scores; anything larger is refused with a message."""

    max_problem_chars: int = 4000
    max_steps: int = 40
    max_step_chars: int = 2000


def embedded_model() -> str:
    """Local folder of the embedded demo PRM, shipped in ``actprm/resources/embedded_prm``.

    It is the uncertainty-selection model of ``actprm quickstart`` (``actprm-quickstart/uncertainty``):
    an 8-head ensemble on the default backbone, trained on synthetic arithmetic labelled by
    `actprm.judges.ArithmeticJudge`.
    """
    return str(EMBEDDED_PRM)


class ScorerCache:
    """One `StepScorer` per model name, loaded on first use and shared by every request."""

    def __init__(self, trust_remote_code: bool = False):
        self.trust_remote_code = trust_remote_code
        self._scorers: dict[str, StepScorer] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> StepScorer:
        """The scorer of ``name`` (a folder, a Hub id or `EMBEDDED_MODEL`), loading it the first time."""
        with self._lock:
            if name not in self._scorers:
                path = embedded_model() if name == EMBEDDED_MODEL else name
                self._scorers[name] = StepScorer.from_pretrained(
                    path,
                    trust_remote_code=self.trust_remote_code,
                    dtype="auto",
                    device_map="cuda" if torch.cuda.is_available() else "cpu",
                )
            return self._scorers[name]


def parse_steps(text: str) -> list[str]:
    """Split pasted steps: by blank lines; without any, at numbered lines (``1.``, ``2)``, ``Step 3:``),
    or else one step per line. Numbers stay in the step text."""
    text = text.strip()
    if not text:
        return []
    if re.search(r"\n\s*\n", text):
        return [part.strip() for part in re.split(r"\n\s*\n", text) if part.strip()]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if NUMBERED_LINE.match(lines[0]):
        steps: list[str] = []
        for line in lines:
            if NUMBERED_LINE.match(line) or not steps:
                steps.append(line)
            else:
                steps[-1] += "\n" + line
        return steps
    return lines


def check_input(problem: str, steps: list[str], limits: SpaceLimits) -> None:
    """Raise `gradio.Error` with a plain message for an empty or oversized input."""
    if not problem.strip():
        raise _user_error("Enter the problem.")
    if not steps:
        raise _user_error("Enter at least one step (separate steps by blank lines or number them).")
    if len(problem) > limits.max_problem_chars:
        raise _user_error(
            f"The problem is {len(problem):,} characters long; this demo takes at most {limits.max_problem_chars:,}."
        )
    if len(steps) > limits.max_steps:
        raise _user_error(f"{len(steps)} steps given; this demo scores at most {limits.max_steps} steps.")
    for number, step in enumerate(steps, start=1):
        if len(step) > limits.max_step_chars:
            raise _user_error(
                f"Step {number} is {len(step):,} characters long; this demo takes at most "
                f"{limits.max_step_chars:,} per step."
            )


def verdict(result: dict[str, Any]) -> str:
    """One or two Markdown sentences on a `score_steps` result."""
    scores, threshold, first_error = result["scores"], result["threshold"], result["first_error"]
    if not scores:
        text = "No step fits in the model's context: nothing was scored."
    elif first_error >= 0:
        text = (
            f"**Step {first_error + 1} is the first step the PRM doubts**: P(correct) "
            f"{_score_text(result, first_error)}, below the threshold {threshold:.2f}."
        )
    else:
        lowest = min(range(len(scores)), key=scores.__getitem__)
        text = (
            f"**No step falls below the threshold {threshold:.2f}**: the PRM accepts the solution "
            f"(lowest: step {lowest + 1}, {_score_text(result, lowest)})."
        )
    if result["truncated"]:
        text += f" Only the first {result['num_scored_steps']} of {result['num_steps']} steps fit in the model's context."
    return text


def steps_table(result: dict[str, Any]) -> str:
    """The steps as an HTML table coloured from red (P(correct) 0) to green (1), the first error marked."""
    rows = []
    for index, step in enumerate(result["steps"]):
        scored = index < len(result["scores"])
        is_first_error = index == result["first_error"]
        if scored:
            cell = _score_text(result, index)
            style = f' style="background: hsl({result["scores"][index] * 120:.0f}, 75%, 85%)"'
        else:
            cell, style = "not scored", ""
        badge = '<span class="badge">first error</span> ' if is_first_error else ""
        rows.append(
            f'<tr class="{"first-error" if is_first_error else "step"}" data-step="{index}"{style}>'
            f"<td>{index + 1}</td><td>{badge}{html.escape(step)}</td><td>{cell}</td></tr>"
        )
    return (
        '<table class="step-scores"><thead><tr><th>#</th><th>step</th><th>P(correct) ± spread</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def scores_figure(result: dict[str, Any]) -> Figure:
    """Step scores with the ensemble's spread as error bars, the threshold and the first error."""
    scores, stds, first_error = result["scores"], result["stds"], result["first_error"]
    positions = range(1, len(scores) + 1)
    figure = Figure(figsize=(6, 3), layout="constrained")
    axes = figure.subplots()
    axes.errorbar(positions, scores, yerr=stds, fmt="o-", capsize=4, label="P(correct) ± spread")
    axes.axhline(result["threshold"], color="grey", linestyle="--", label=f"threshold {result['threshold']:.2f}")
    if first_error >= 0:
        axes.plot(first_error + 1, scores[first_error], "o", markersize=14, fillstyle="none", color="red", label="first error")
    axes.set(xlabel="step", ylabel="P(correct)", ylim=(0, 1.05), xticks=list(positions))
    axes.legend(loc="lower left", fontsize="small")
    return figure


def render(result: dict[str, Any]) -> tuple[str, Figure, str]:
    """The table, plot and verdict of a `score_steps` result."""
    return steps_table(result), scores_figure(result), verdict(result)


def score_steps(
    scorers: ScorerCache,
    limits: SpaceLimits,
    problem: str,
    steps: str,
    model: str,
    threshold: float,
) -> dict[str, Any]:
    """Score pasted steps with ``model``; the JSON of the ``/score`` endpoint.

    Returns:
        ``model``, ``threshold``, ``steps`` (as split), ``scores`` (P(correct) per scored step),
        ``stds`` (spread over heads, ``None`` for a single model), ``first_error`` (0-based, -1
        for none), ``num_steps``, ``num_scored_steps``, ``truncated`` and ``verdict`` (Markdown).

    Raises:
        gradio.Error: for empty or oversized input, a bad threshold or a model that fails to load.
    """
    step_list = parse_steps(steps)
    check_input(problem, step_list, limits)
    try:
        scorer = scorers.get(model)
        (scored,) = scorer.score([{"problem": problem, "steps": step_list}], threshold, batch_size=1, show_progress=False)
    except (ValueError, OSError) as error:  # a model that fails to load, text the model cannot take
        raise _user_error(str(error)) from None
    result = {
        "model": model,
        "threshold": threshold,
        "steps": step_list,
        **{key: scored[key] for key in ("scores", "stds", "first_error", "num_steps", "num_scored_steps", "truncated")},
    }
    if result["truncated"]:
        gr.Warning(
            f"Only the first {result['num_scored_steps']} of {result['num_steps']} steps fit in the model's "
            f"context of {scorer.max_length} tokens; the rest are not scored."
        )
    return {**result, "verdict": verdict(result)}


def example_inputs() -> list[tuple[str, list[str]]]:
    """One-click examples ``(label, [problem, steps text])``: ProcessBench and PRMBench slices and synthetic data."""
    processbench = load_steps(SAMPLES_DIR / "processbench_gsm8k_sample.json")
    prmbench = load_steps(SAMPLES_DIR / "prmbench_sample.jsonl")
    synthetic = make_arithmetic_dataset(6, seed=0, split="test")
    picks = [
        ("ProcessBench GSM8K", next(row for row in processbench if row["label"] >= 0)),
        ("ProcessBench GSM8K", next(row for row in processbench if row["label"] == -1)),
        ("PRMBench circular", next(row for row in prmbench if row["classification"] == "circular")),
        ("PRMBench counterfactual", next(row for row in prmbench if row["classification"] == "counterfactual")),
        ("Synthetic arithmetic", next(row for row in synthetic if row["label"] >= 0)),
        ("Synthetic arithmetic", next(row for row in synthetic if row["label"] == -1)),
    ]
    examples = []
    for source, record in picks:
        reference = f"error at step {record['label'] + 1}" if record["label"] >= 0 else "all steps correct"
        examples.append((f"{source}: {reference}", [record["problem"], "\n\n".join(record["steps"])]))
    return examples


def build_demo(
    models: Sequence[str] | None = None,
    *,
    trust_remote_code: bool | None = None,
    limits: SpaceLimits = SpaceLimits(),
    concurrency_limit: int = 2,
    max_queue_size: int = 64,
) -> gr.Blocks:
    """The demo page; the first model is loaded at once, so a bad model name fails here, not in a request.

    Args:
        models: model folders, Hub ids or `EMBEDDED_MODEL` to offer, the first by default; ``None``:
            ``$ACTPRM_SPACE_MODELS`` (comma-separated) or else the embedded model.
        trust_remote_code: let models run their own code; ``None``: ``$ACTPRM_SPACE_TRUST_REMOTE_CODE``.
        limits: the largest problem and steps scored.
        concurrency_limit: scoring requests run at once; more wait in the queue.
        max_queue_size: requests that may wait; more are turned away.

    Raises:
        ValueError: if no model is given.
        FileNotFoundError: if the first model is neither a folder nor a reachable Hub model.
    """
    if models is None:
        models = [name.strip() for name in os.environ.get(MODELS_ENV, EMBEDDED_MODEL).split(",") if name.strip()]
    if not models:
        raise ValueError(f"no model to serve: pass models or set {MODELS_ENV}")
    if trust_remote_code is None:
        trust_remote_code = os.environ.get(TRUST_REMOTE_CODE_ENV, "").lower() in ("1", "true", "yes")
    scorers = ScorerCache(trust_remote_code=trust_remote_code)
    scorers.get(models[0])
    examples = example_inputs()

    def score(problem: str, steps: str, model: str, threshold: float) -> dict[str, Any]:
        """Score every step of a solution; returns the scores as JSON (see `score_steps`)."""
        return score_steps(scorers, limits, problem, steps, model, threshold)

    with gr.Blocks(title="ActPRM step scorer") as demo:
        gr.Markdown(
            "# ActPRM step scorer\n"
            "Paste a math problem and its solution steps: the process reward model scores every step "
            "(its probability of being correct), its ensemble's heads show how sure it is (spread), and the "
            "first step below the threshold is marked as the first error."
            + (EMBEDDED_MODEL_NOTE if EMBEDDED_MODEL in models else "")
        )
        with gr.Row():
            with gr.Column():
                problem_box = gr.Textbox(
                    label="Problem", lines=4, info=f"At most {limits.max_problem_chars:,} characters."
                )
                steps_box = gr.Textbox(
                    label="Steps",
                    lines=10,
                    info=f"One step per paragraph (blank line between steps) or numbered lines; at most "
                    f"{limits.max_steps} steps of {limits.max_step_chars:,} characters.",
                )
                with gr.Row():
                    model_box = gr.Dropdown(
                        [(_model_label(name), name) for name in models], value=models[0], label="Model"
                    )
                    threshold_box = gr.Slider(
                        0.01, 0.99, value=DEFAULT_THRESHOLD, step=0.01, label="Threshold",
                        info="A step scored below it is an error.",
                    )
                score_button = gr.Button("Score", variant="primary")
                gr.Examples(
                    [inputs for _, inputs in examples],
                    inputs=[problem_box, steps_box],
                    example_labels=[label for label, _ in examples],
                    label="Examples (ProcessBench, PRMBench, synthetic)",
                )
            with gr.Column():
                verdict_box = gr.Markdown()
                table_box = gr.HTML(css_template=TABLE_CSS, js_on_load=None, elem_id="step-scores")
                plot_box = gr.Plot(label="Step scores", format="png")
                with gr.Accordion("Scores as JSON (what the /score API returns)", open=False):
                    json_box = gr.JSON(label="Scores")
        scoring = score_button.click(
            score, inputs=[problem_box, steps_box, model_box, threshold_box], outputs=json_box, api_name="score"
        )
        views = [table_box, plot_box, verdict_box]
        scoring.success(render, inputs=json_box, outputs=views, api_visibility="private")
        scoring.failure(lambda: (None, "", None, ""), outputs=[json_box, *views], api_visibility="private")
    demo.queue(default_concurrency_limit=concurrency_limit, max_size=max_queue_size)
    return demo


def _model_label(name: str) -> str:
    return "embedded default (synthetic arithmetic)" if name == EMBEDDED_MODEL else name


def _score_text(result: dict[str, Any], index: int) -> str:
    """``"0.812 ± 0.031"``: a step's score and, for an ensemble, its spread."""
    score = f"{result['scores'][index]:.3f}"
    return f"{score} ± {result['stds'][index]:.3f}" if result["stds"] else score


def _user_error(message: str) -> gr.Error:
    """A message for the page (and API clients), without a traceback in the server log."""
    return gr.Error(message, duration=ERROR_DURATION, print_exception=False)
