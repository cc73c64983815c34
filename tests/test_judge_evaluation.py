"""A judge on ProcessBench: a real LLM (SmolLM2-135M-Instruct) behind `transformers serve`, the in-process
transformers judge, and the errors of bad input and of a judge that is down.

The metrics are checked against ProcessBench's own formula (``run_eval.py``: a missing answer matches no
label; NumPy means over the erroneous and the all-correct solutions), written out here."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, free_port
from real_model import served_smollm2, smollm2_backbone, smollm2_converted, smollm2_gguf  # noqa: F401

from huggingface_hub import DatasetCard

from actprm.cli import main as cli_main
from actprm.judge_evaluation import evaluate_judge_processbench
from actprm.judges import AnnotationStore, ArithmeticJudge, OpenAIJudge, OracleJudge, parse_first_error
from actprm.model_card import build_dataset_card

GSM8K_IDS = ("gsm8k-126", "gsm8k-147", "gsm8k-386", "gsm8k-370")
"""Short real solutions: two with an error and two all correct (the prompts stay under 400 tokens)."""


@pytest.fixture(scope="module")
def processbench_slice(processbench_data, tmp_path_factory):
    """A ProcessBench folder of a few real items per subset (two erroneous and two all-correct in GSM8K,
    the shortest erroneous and all-correct solutions in MATH)."""
    folder = tmp_path_factory.mktemp("processbench-slice")
    gsm8k = json.loads((processbench_data / "gsm8k.json").read_text())
    (folder / "gsm8k.json").write_text(json.dumps([r for r in gsm8k if r["id"] in GSM8K_IDS]))
    math_records = sorted(
        json.loads((processbench_data / "math.json").read_text()),
        key=lambda r: len(r["problem"]) + sum(map(len, r["steps"])),
    )
    shortest = [next(r for r in math_records if r["label"] != -1), next(r for r in math_records if r["label"] == -1)]
    (folder / "math.json").write_text(json.dumps(shortest))
    return folder


def _official_metrics(rows: list[dict]) -> dict[str, float]:
    """ProcessBench's run_eval.py on (prediction, label) pairs, as fractions."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        acc1 = np.mean([r["prediction"] == r["label"] for r in rows if r["label"] != -1]) * 100
        acc2 = np.mean([r["prediction"] == r["label"] for r in rows if r["label"] == -1]) * 100
        f1 = 2 * acc1 * acc2 / (acc1 + acc2)
    return {"error_acc": acc1 / 100, "correct_acc": acc2 / 100, "f1": f1 / 100}


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)


def _check_against_the_official_formula(output_dir: Path, dataset_dir: Path) -> dict:
    summary = json.loads((output_dir / "summary.json").read_text())
    rows = [json.loads(line) for line in (output_dir / "predictions.jsonl").read_text().splitlines()]
    records = {r["id"]: r for name in ("gsm8k", "math") for r in json.loads((dataset_dir / f"{name}.json").read_text())}
    assert sorted(row["id"] for row in rows) == sorted(records)  # every item answered exactly once
    for row in rows:
        steps = records[row["id"]]["steps"]
        if row["prediction"] is None:
            assert row["reason"].startswith("unparseable answer")
        else:
            assert row["reason"] is None and parse_first_error(row["raw_output"], len(steps)) == row["prediction"]
    for subset, metrics in summary["per_subset"].items():
        subset_rows = [row for row in rows if row["subset"] == subset]
        for name, value in _official_metrics(subset_rows).items():
            assert _same(metrics[name], value), (subset, name)
        unparseable = sum(row["prediction"] is None for row in subset_rows) / len(subset_rows)
        assert metrics["unparseable_share"] == pytest.approx(unparseable)
    assert _same(summary["average"]["f1"], np.mean([m["f1"] for m in summary["per_subset"].values()]))
    assert summary["num_unparseable"] == sum(row["prediction"] is None for row in rows)
    return summary


def _run_cli(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "actprm.cli", *args], capture_output=True, text=True, env=env, cwd=REPO_ROOT
    )


def test_smollm2_judge_on_processbench_through_transformers_serve(
    served_smollm2, smollm2_backbone, processbench_slice, tmp_path
):
    """A real LLM's real answers; one request per item (no parse retries) keeps it short on a busy CPU."""
    base_url, model = served_smollm2, smollm2_backbone
    output_dir = tmp_path / "judge-eval"

    def run() -> dict:
        judge = OpenAIJudge(base_url, model, max_tokens=24, concurrency=2, parse_retries=0,
                            cache_path=output_dir / "judge.cache.sqlite")
        return evaluate_judge_processbench(judge, processbench_slice, output_dir=output_dir, subsets=["gsm8k", "math"],
                                           batch_size=3, show_progress=False)

    summary = run()
    _check_against_the_official_formula(output_dir, processbench_slice)
    assert summary["num_items"] == 6 and summary["num_judged_this_run"] == 6
    assert summary["judge"].startswith(f"openai:{model}|critique-v1|") and summary["judge_tokens_this_run"] > 0
    assert "| gsm8k | 4 |" in (output_dir / "results.md").read_text()
    resumed = run()  # nothing is asked again, the same metrics come out
    assert resumed["num_judged_this_run"] == 0 and resumed["judge_tokens_this_run"] == 0
    assert json.dumps(resumed["per_subset"]) == json.dumps(summary["per_subset"])


def test_in_process_transformers_judge_counts_gibberish_as_unparseable(tiny_backbone, processbench_slice, tmp_path):
    output_dir = tmp_path / "tiny-judge"
    code = cli_main(
        ["eval", "--judge", "transformers", "--judge_model", tiny_backbone, "--judge_max_tokens", "4",
         "--benchmark", "processbench", "--data", str(processbench_slice), "--subsets", "gsm8k", "math",
         "--output_dir", str(output_dir)]
    )
    assert code == 0
    summary = _check_against_the_official_formula(output_dir, processbench_slice)
    assert summary["num_unparseable"] == 6 and summary["average"]["unparseable_share"] == 1.0
    assert summary["per_subset"]["gsm8k"]["error_acc"] == 0.0 and math.isnan(summary["average"]["f1"])
    assert (output_dir / "judge.cache.sqlite").is_file()


def test_a_judge_that_is_down_is_one_clear_error(processbench_slice, tmp_path):
    port = free_port()
    result = _run_cli(
        ["eval", "--judge", "openai", "--judge_base_url", f"http://127.0.0.1:{port}/v1", "--judge_model", "critic",
         "--judge_max_retries", "0", "--benchmark", "processbench", "--data", str(processbench_slice),
         "--subsets", "gsm8k", "--output_dir", str(tmp_path / "down")]
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"actprm eval: error: judge model 'critic' at http://127.0.0.1:{port}/v1 is not available")
    assert not any("Traceback" in line for line in lines)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--judge", "oracle"], "only a critic LLM is evaluated"),
        (["--judge", "openai", "--judge_model", "m", "--judge_base_url", "http://x/v1", "--benchmark", "prmbench"],
         "a judge is evaluated on ProcessBench only"),
        (["--judge", "transformers", "--judge_model", "m", "--judge_num_samples", "3"], "majority vote"),
        (["--judge", "openai", "--judge_model", "m", "--judge_base_url", "http://x/v1", "--threshold", "0.3"],
         "--threshold and --calibrate are PRM options"),
    ],
)
def test_bad_judge_evaluation_options_are_refused(extra, message, capsys):
    arguments = ["eval", "--benchmark", "processbench", *extra]
    if "--benchmark" in extra:
        arguments = ["eval", *extra]
    assert cli_main(arguments) == 2
    assert message in capsys.readouterr().err


@pytest.fixture(scope="module")
def oracle_evaluation(processbench_slice, tmp_path_factory):
    """The Python API on a perfect judge (the benchmark's own labels): a summary for the label and card tests."""
    output_dir = tmp_path_factory.mktemp("oracle-eval")
    summary = evaluate_judge_processbench(
        OracleJudge(), processbench_slice, output_dir=output_dir, subsets=["gsm8k", "math"], show_progress=False
    )
    return output_dir, summary


def test_a_perfect_judge_scores_full_marks_and_another_judges_answers_are_not_mixed_in(
    oracle_evaluation, processbench_slice
):
    output_dir, summary = oracle_evaluation
    assert summary["average"] == {"error_acc": 1.0, "correct_acc": 1.0, "f1": 1.0, "unparseable_share": 0.0}
    with pytest.raises(ValueError, match="holds answers of another judge \\(oracle; now arithmetic\\)"):
        evaluate_judge_processbench(ArithmeticJudge(), processbench_slice, output_dir=output_dir)


def test_label_and_dataset_card_report_the_judges_measured_f1(oracle_evaluation, processbench_slice, tmp_path, capsys):
    output_dir, _ = oracle_evaluation
    labels = tmp_path / "labels.jsonl"
    arguments = ["label", "--judge", "oracle", "--dataset", str(processbench_slice), "--output", str(labels)]
    assert cli_main([*arguments, "--judge_eval_summary", str(output_dir)]) == 0
    out = capsys.readouterr().out
    assert "judge accuracy: ProcessBench F1 100.0% (average over gsm8k, math;" in out
    assert "0 of 6 answers unparseable" in out
    card = build_dataset_card(AnnotationStore(labels).to_dataset(), "user/labels", judge_evaluation=summary_of(output_dir))
    assert "| Judge accuracy | ProcessBench F1 100.0% (average over gsm8k, math;" in DatasetCard(str(card)).text
    assert "| Judge accuracy | Not measured. |" in str(build_dataset_card(AnnotationStore(labels).to_dataset(), "u/l"))
    # a summary of another judge is refused before any label is made
    assert cli_main(["label", "--judge", "arithmetic", "--dataset", str(processbench_slice), "--output",
                     str(tmp_path / "other.jsonl"), "--judge_eval_summary", str(output_dir)]) == 2
    assert "the judge evaluation rates oracle, but the labels come from arithmetic" in capsys.readouterr().err
    assert not (tmp_path / "other.jsonl").exists()


def summary_of(output_dir: Path) -> dict:
    return json.loads((output_dir / "summary.json").read_text())
