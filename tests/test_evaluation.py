"""The benchmark runner and `actprm eval` on real ProcessBench and PRMBench slices: metrics, calibration, resume."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from actprm import StepDataError, load_steps
from actprm.cli import main as cli
from actprm.data import PROCESSBENCH_SUBSETS
from actprm.evaluation import evaluate_prmbench, evaluate_processbench
from actprm.modeling import EnsemblePRMModel
from actprm.scoring import StepScorer

PRMBENCH_FILES = (
    "prm800k_test_p1_4o_circular.jsonl",
    "prm800k_test_p1_4o_redundency.jsonl",
    "prm_test_p12_multi_solutions.jsonl",
)


@pytest.fixture(scope="module")
def model_dir(random_backbone, tmp_path_factory):
    path = tmp_path_factory.mktemp("ensemble")
    tokenizer = AutoTokenizer.from_pretrained(random_backbone)
    torch.manual_seed(0)
    model = EnsemblePRMModel.from_backbone(random_backbone, tokenizer=tokenizer, num_ensemble=4, head_hidden_size=16)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def scorer(model_dir):
    return StepScorer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def processbench_slice(processbench_data, tmp_path_factory):
    """Per subset, the first 5 all-correct and the first 5 erroneous solutions, in ProcessBench's own files."""
    folder = tmp_path_factory.mktemp("processbench")
    for subset in PROCESSBENCH_SUBSETS:
        records = json.loads((processbench_data / f"{subset}.json").read_text())
        correct = [r for r in records if r["label"] == -1][:5]
        wrong = [r for r in records if r["label"] != -1][:5]
        (folder / f"{subset}.json").write_text(json.dumps(correct + wrong))
    return folder


@pytest.fixture(scope="module")
def prmbench_slice(prmbench_data, tmp_path_factory):
    """The first 4 records of three PRMBench files (the redundancy ones also give all-correct samples)."""
    folder = tmp_path_factory.mktemp("prmbench")
    for name in PRMBENCH_FILES:
        lines = (prmbench_data / name).read_text().splitlines(keepends=True)[:4]
        (folder / name).write_text("".join(lines))
    return folder


@pytest.fixture(scope="module")
def scored_dir(scorer, processbench_slice, tmp_path_factory):
    """A finished ProcessBench run at threshold 0.5; tests copy it before changing anything."""
    output_dir = tmp_path_factory.mktemp("scored")
    summary = evaluate_processbench(
        scorer, processbench_slice, output_dir=output_dir, batch_size=4, show_progress=False
    )
    return output_dir, summary


def copy_of(scored_dir, tmp_path) -> Path:
    return Path(shutil.copytree(scored_dir[0], tmp_path / "run"))


def read_predictions(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "predictions.jsonl").read_text().splitlines()]


class ForwardCounter:
    """Counts the solutions the model is run on."""

    def __init__(self, model):
        self.solutions = 0
        self.handle = model.register_forward_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs, output):
        self.solutions += kwargs["input_ids"].shape[0]


def first_error(scores: list[float], threshold: float) -> int:
    for index, score in enumerate(scores):
        if score < threshold:
            return index
    return -1


def official_metrics(rows: list[dict], threshold: float) -> dict[str, float]:
    """ProcessBench's ``run_eval_prm_trl.py`` arithmetic: accuracies on erroneous and all-correct items, their F1."""
    errors = [first_error(r["scores"], threshold) == r["label"] for r in rows if r["label"] != -1]
    corrects = [first_error(r["scores"], threshold) == r["label"] for r in rows if r["label"] == -1]
    error_acc, correct_acc = sum(errors) / len(errors), sum(corrects) / len(corrects)
    f1 = 2 * error_acc * correct_acc / (error_acc + correct_acc) if error_acc + correct_acc else math.nan
    return {"error_acc": error_acc, "correct_acc": correct_acc, "f1": f1}


def test_processbench_run_writes_predictions_summary_and_table(scored_dir, scorer, processbench_slice):
    output_dir, summary = scored_dir
    rows = read_predictions(output_dir)
    dataset = load_steps(processbench_slice)
    assert [r["id"] for r in rows] == dataset["id"]
    assert summary["num_items"] == summary["num_scored_this_run"] == 40
    for row, result in zip(rows, scorer.score(dataset, show_progress=False)):
        assert row["scores"] == pytest.approx(result["scores"], abs=1e-5)
        assert row["first_error"] == first_error(row["scores"], 0.5)
    for subset in PROCESSBENCH_SUBSETS:
        expected = official_metrics([r for r in rows if r["subset"] == subset], 0.5)
        assert summary["per_subset"][subset] == pytest.approx({**expected, "num_items": 10}, nan_ok=True)
    f1s = [summary["per_subset"][s]["f1"] for s in PROCESSBENCH_SUBSETS]
    assert summary["average"]["f1"] == pytest.approx(sum(f1s) / 4, nan_ok=True)
    assert summary["weighted_average"]["f1"] == pytest.approx(sum(f1s) / 4, nan_ok=True)  # equal sizes
    assert json.loads((output_dir / "summary.json").read_text()) == summary
    table = (output_dir / "results.md").read_text()
    assert "| gsm8k | 10 |" in table and "**average**" in table and "weighted average" in table
    assert not list(output_dir.glob("predictions.shard-*"))


def test_weighted_average_weighs_subsets_by_size(scored_dir, scorer, processbench_slice, tmp_path):
    output_dir = copy_of(scored_dir, tmp_path)
    dataset = load_steps(processbench_slice, subset=["gsm8k", "math"])
    uneven = dataset.select(
        [i for i, item_id in enumerate(dataset["id"]) if not item_id.startswith("math")][:10] + [10, 11, 15, 16]
    )
    summary = evaluate_processbench(
        scorer, uneven, output_dir=output_dir, subsets=["gsm8k", "math"], show_progress=False
    )
    per_subset = summary["per_subset"]
    assert (per_subset["gsm8k"]["num_items"], per_subset["math"]["num_items"]) == (10, 4)
    for metric in ("error_acc", "correct_acc", "f1"):
        weighted = (10 * per_subset["gsm8k"][metric] + 4 * per_subset["math"][metric]) / 14
        assert summary["weighted_average"][metric] == pytest.approx(weighted)
        assert summary["average"][metric] == pytest.approx(
            (per_subset["gsm8k"][metric] + per_subset["math"][metric]) / 2
        )


def test_rerun_scores_nothing_new(scored_dir, scorer, processbench_slice, tmp_path):
    output_dir = copy_of(scored_dir, tmp_path)
    before = (output_dir / "predictions.jsonl").read_text()
    counter = ForwardCounter(scorer.model)
    try:
        summary = evaluate_processbench(scorer, processbench_slice, output_dir=output_dir, show_progress=False)
    finally:
        counter.handle.remove()
    assert counter.solutions == 0 and summary["num_scored_this_run"] == 0
    assert (output_dir / "predictions.jsonl").read_text() == before
    assert summary["per_subset"] == scored_dir[1]["per_subset"]


def test_interrupted_run_resumes_with_the_missing_items_only(scored_dir, scorer, processbench_slice, tmp_path):
    output_dir = copy_of(scored_dir, tmp_path)
    lines = (output_dir / "predictions.jsonl").read_text().splitlines(keepends=True)
    kept = lines[::2]
    # As a crash leaves it: half the items written, the last line cut short.
    (output_dir / "predictions.jsonl").write_text("".join(kept) + lines[1][:30])
    counter = ForwardCounter(scorer.model)
    try:
        summary = evaluate_processbench(scorer, processbench_slice, output_dir=output_dir, show_progress=False)
    finally:
        counter.handle.remove()
    assert counter.solutions == summary["num_scored_this_run"] == len(lines) - len(kept)
    resumed = {r["id"]: r["scores"] for r in read_predictions(output_dir)}
    for row in read_predictions(scored_dir[0]):
        assert resumed[row["id"]] == pytest.approx(row["scores"], abs=1e-5)


def test_calibration_on_gsm8k_picks_the_best_f1_threshold(scored_dir, scorer, processbench_slice, tmp_path):
    output_dir = copy_of(scored_dir, tmp_path)
    summary = evaluate_processbench(
        scorer, processbench_slice, output_dir=output_dir, calibrate="gsm8k", show_progress=False
    )
    rows = read_predictions(output_dir)
    gsm8k = [r for r in rows if r["subset"] == "gsm8k"]
    f1_at = {t / 100: official_metrics(gsm8k, t / 100)["f1"] for t in range(1, 100)}
    best = max(f1 for f1 in f1_at.values() if not math.isnan(f1))
    assert summary["threshold"] == min(t for t, f1 in f1_at.items() if f1 == best)
    assert summary["calibration"] == {"subset": "gsm8k", "f1": pytest.approx(best)}
    for subset in PROCESSBENCH_SUBSETS:
        expected = official_metrics([r for r in rows if r["subset"] == subset], summary["threshold"])
        assert summary["per_subset"][subset] == pytest.approx({**expected, "num_items": 10}, nan_ok=True)
    assert all(r["first_error"] == first_error(r["scores"], summary["threshold"]) for r in rows)


def test_solutions_longer_than_the_context_are_flagged_in_the_predictions(scorer, processbench_slice, tmp_path):
    short_context = StepScorer(scorer.model, scorer.tokenizer, max_length=700)
    dataset = load_steps(processbench_slice, subset="gsm8k")
    summary = evaluate_processbench(
        short_context, dataset, output_dir=tmp_path, subsets=["gsm8k"], calibrate="gsm8k", show_progress=False
    )
    rows = read_predictions(tmp_path)
    truncated = [r for r in rows if r["truncated"]]
    assert truncated and summary["num_truncated"] == len(truncated) < len(rows)
    assert all(len(r["scores"]) == r["num_scored_steps"] < r["num_steps"] for r in truncated)
    assert [r["num_steps"] for r in rows] == [len(steps) for steps in dataset["steps"]]
    assert summary["per_subset"]["gsm8k"] == pytest.approx(
        {**official_metrics(rows, summary["threshold"]), "num_items": 10}
    )


def test_prmbench_run_scores_every_sample_with_the_official_step_counts(scorer, prmbench_slice, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = evaluate_prmbench(scorer, prmbench_slice, output_dir=tmp_path, batch_size=4, show_progress=False)
    rows = read_predictions(tmp_path)
    assert len(rows) == summary["num_items"] == 16  # 12 records + 4 all-correct samples of the redundancy ones
    assert {r["classification"] for r in rows} == {"circular", "redundency", "multi_solutions", "correct"}
    counts = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
    for row in rows:
        assert row["validity"] == [int(score > 0.5) for score in row["scores"]]
        if row["classification"] == "correct":
            continue
        for step, valid in enumerate(row["validity"], start=1):
            wrong = step in row["error_steps"]
            counts[("fp" if wrong else "tp") if valid else ("tn" if wrong else "fn")] += 1
    precision, recall = counts["tp"] / (counts["tp"] + counts["fp"]), counts["tp"] / (counts["tp"] + counts["fn"])
    assert summary["f1"] == pytest.approx(2 * precision * recall / (precision + recall))
    assert set(summary["per_classification"]) == {"circular", "redundency", "multi_solutions", "correct"}
    table = (tmp_path / "results.md").read_text()
    assert "| circular |" in table and "**overall**" in table
    undefined = [name for name, scores in summary["per_classification"].items() if -1 in (scores["f1"], scores["negative_f1"])]
    assert undefined and "-100.0" not in table  # PRMBench's -1 ("not defined") reads n/a, as in the model card
    for name in undefined:
        assert "n/a" in next(line for line in table.splitlines() if line.startswith(f"| {name} |"))


def test_another_scorer_cannot_resume_a_run(scored_dir, scorer, processbench_slice, tmp_path):
    output_dir = copy_of(scored_dir, tmp_path)
    shorter = StepScorer(scorer.model, scorer.tokenizer, max_length=512)
    with pytest.raises(ValueError, match="holds predictions of another scorer"):
        evaluate_processbench(shorter, processbench_slice, output_dir=output_dir, show_progress=False)


def test_bad_runner_input_is_refused(scorer, processbench_slice, tmp_path):
    def run(**options):
        return evaluate_processbench(scorer, processbench_slice, output_dir=tmp_path, show_progress=False, **options)

    with pytest.raises(ValueError, match=r"threshold must lie in \(0, 1\), got 1.5"):
        run(threshold=1.5)
    with pytest.raises(ValueError, match="either a threshold or a calibration subset"):
        run(threshold=0.4, calibrate="gsm8k")
    with pytest.raises(ValueError, match="calibrating on 'gsm8k'"):
        run(subsets=["math"], calibrate="gsm8k")
    with pytest.raises(ValueError, match="unknown ProcessBench subsets"):
        run(subsets=["gsm9k"])
    broken = tmp_path / "broken"
    broken.mkdir()
    records = json.loads((processbench_slice / "gsm8k.json").read_text())
    del records[3]["steps"]
    (broken / "gsm8k.json").write_text(json.dumps(records))
    with pytest.raises(StepDataError, match=r"gsm8k.json, record 3, field 'steps': missing"):
        evaluate_processbench(scorer, broken, output_dir=tmp_path, show_progress=False)


def test_cli_exit_codes(model_dir, scored_dir, processbench_slice, tmp_path, capsys):
    output_dir = copy_of(scored_dir, tmp_path)
    base = ["eval", "--model", model_dir, "--benchmark", "processbench", "--data", str(processbench_slice)]
    assert cli(base + ["--output-dir", str(output_dir), "--calibrate", "gsm8k"]) == 0
    out = capsys.readouterr().out
    assert "calibrated on gsm8k" in out and "| omnimath | 10 |" in out
    assert json.loads((output_dir / "summary.json").read_text())["num_scored_this_run"] == 0
    failures = {
        "threshold": base + ["--threshold", "1.5", "--output-dir", str(tmp_path / "a")],
        "data": ["eval", "--model", model_dir, "--benchmark", "processbench", "--data", str(tmp_path / "missing")],
        "model": [
            "eval",
            "--model",
            str(tmp_path / "no-model"),
            "--benchmark",
            "processbench",
            "--data",
            str(processbench_slice),
        ],
        "option": ["eval", "--model", model_dir, "--benchmark", "prmbench", "--calibrate", "gsm8k"],
    }
    messages = {
        "threshold": "threshold must lie in (0, 1), got 1.5",
        "data": "no such file or folder",
        "model": "no-model: no model folder",
        "option": "--subsets and --calibrate are ProcessBench options",
    }
    for name, argv in failures.items():
        assert cli(argv) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.startswith("actprm eval: error:") and messages[name] in err and "\n" not in err, err


def test_accelerate_launch_shards_the_missing_items(model_dir, scored_dir, processbench_slice, tmp_path):
    """Two processes resume a run missing 11 items: each scores its share, the main one merges."""
    output_dir = copy_of(scored_dir, tmp_path)
    lines = (output_dir / "predictions.jsonl").read_text().splitlines(keepends=True)
    (output_dir / "predictions.jsonl").write_text("".join(lines[11:]))
    script = tmp_path / "actprm_cli.py"
    script.write_text("import sys\nfrom actprm.cli import main\nsys.exit(main())\n")
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
    ]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", str(script)]
    command = launch + ["eval", "--model", model_dir, "--benchmark", "processbench", "--data", str(processbench_slice)]
    completed = subprocess.run(
        command + ["--output-dir", str(output_dir)], capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    summary = json.loads((output_dir / "summary.json").read_text())
    assert summary["num_scored_this_run"] == 11
    assert summary["per_subset"] == scored_dir[1]["per_subset"]
    merged = read_predictions(output_dir)
    assert sorted(r["id"] for r in merged) == sorted(r["id"] for r in read_predictions(scored_dir[0]))
    assert not list(output_dir.glob("predictions.shard-*"))
