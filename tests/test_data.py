"""Step-data loaders on the real benchmark files, format inference, TRL and Math-Shepherd
conversions, malformed records and the skip report."""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datasets import Dataset

from actprm.data import (
    FEATURES,
    SAMPLES_DIR,
    SkippedRecordsWarning,
    StepDataError,
    from_trl_stepwise,
    infer_format,
    load_steps,
    to_trl_stepwise,
)

# From ../shared/data/README.md: items and all-correct items per ProcessBench subset.
PROCESSBENCH_COUNTS = {"gsm8k": (400, 193), "math": (1000, 406), "olympiadbench": (1000, 339), "omnimath": (1000, 241)}
RATING_TO_STEP_LABEL = {1: 1, -1: 0, 0: None, None: None}


def write_jsonl(path: Path, lines: list[object]) -> Path:
    texts = (line if isinstance(line, str) else json.dumps(line) for line in lines)
    path.write_text("".join(text + "\n" for text in texts), encoding="utf-8")
    return path


def load_with_warnings(*args, **kwargs) -> tuple[Dataset, list[SkippedRecordsWarning]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = load_steps(*args, **kwargs)
    return dataset, [w.message for w in caught if isinstance(w.message, SkippedRecordsWarning)]


# ProcessBench ------------------------------------------------------------------------------


def test_processbench_folder_has_every_subset_with_readme_counts(processbench_data):
    dataset = load_steps(processbench_data)
    assert list(dataset.features)[:5] == list(FEATURES)
    for subset, (items, all_correct) in PROCESSBENCH_COUNTS.items():
        labels = [label for label, s in zip(dataset["label"], dataset["subset"]) if s == subset]
        assert (len(labels), labels.count(-1)) == (items, all_correct)
    raw = json.loads((processbench_data / "math.json").read_text())
    row = dataset.filter(lambda r: r["id"] == raw[1]["id"])[0]
    for column in ("problem", "steps", "label", "generator"):
        assert row[column] == raw[1][column]
    error = row["label"]
    assert row["step_labels"] == [1] * error + [0] + [None] * (len(row["steps"]) - error - 1)


def test_processbench_subset_picks_subsets(processbench_data, prmbench_data):
    gsm8k = load_steps(processbench_data, subset="gsm8k")
    assert (len(gsm8k), gsm8k["label"].count(-1)) == PROCESSBENCH_COUNTS["gsm8k"]
    two = load_steps(processbench_data, subset=["math", "omnimath"])
    assert sorted(set(two["subset"])) == ["math", "omnimath"] and len(two) == 2000
    with pytest.raises(ValueError, match="unknown ProcessBench subset"):
        load_steps(processbench_data, subset="aime")
    with pytest.raises(ValueError, match="subset picks ProcessBench subsets"):
        load_steps(prmbench_data, subset="gsm8k")


# PRMBench ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prmbench_raw(prmbench_data) -> list[tuple[Path, int, dict]]:
    """(file, line number, record) of every PRMBench record, files in name order."""
    return [
        (path, number, json.loads(line))
        for path in sorted(prmbench_data.glob("*.jsonl"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
    ]


@pytest.fixture(scope="module")
def prmbench(prmbench_data) -> tuple[Dataset, list[SkippedRecordsWarning]]:
    return load_with_warnings(prmbench_data)


def test_prmbench_builds_the_official_samples(prmbench, prmbench_raw):
    dataset, _ = prmbench
    expected_ids = {f"{r['classification']}_{r['idx']}" for _, _, r in prmbench_raw}
    correct_ids = {f"correct_{r['idx']}" for _, _, r in prmbench_raw if r["classification"] == "redundency"}
    assert len(dataset) == len(set(dataset["id"])) == len(expected_ids | correct_ids)
    assert set(dataset["id"]) == expected_ids | correct_ids
    assert dataset["classification"].count("correct") == len(correct_ids) > 0


def test_prmbench_labels_follow_error_steps(prmbench, prmbench_raw):
    dataset, _ = prmbench
    rows = {row["id"]: row for row in dataset}
    first = next(r for _, _, r in prmbench_raw if r["classification"] == "circular")
    sample = rows[f"circular_{first['idx']}"]
    steps, errors = first["modified_process"], first["error_steps"]
    assert sample["steps"] == steps and sample["problem"] == first["modified_question"]
    assert sample["error_steps"] == errors and sample["label"] == min(errors) - 1
    assert sample["step_labels"] == [0 if n in errors else 1 for n in range(1, len(steps) + 1)]
    redundant = next(r for _, _, r in prmbench_raw if r["classification"] == "redundency")
    correct = rows[f"correct_{redundant['idx']}"]
    assert (correct["problem"], correct["steps"]) == (redundant["original_question"], redundant["original_process"])
    assert (correct["label"], correct["classification"], correct["error_steps"]) == (-1, "correct", [])
    assert set(correct["step_labels"]) == {1}
    # Error steps past the last step are kept but not scored, as by the official evaluation.
    beyond = next(r for _, _, r in prmbench_raw if min(r["error_steps"], default=0) > len(r["modified_process"]))
    sample = rows[f"{beyond['classification']}_{beyond['idx']}"]
    assert sample["error_steps"] == beyond["error_steps"] and sample["label"] == -1


def test_prmbench_duplicate_ids_keep_the_first_and_are_reported(prmbench, prmbench_raw):
    dataset, reports = prmbench
    seen, repeats = {}, []
    for path, number, record in prmbench_raw:
        key = f"{record['classification']}_{record['idx']}"
        if key in seen:
            repeats.append((str(path), f"line {number}", key))
        else:
            seen[key] = record
    assert repeats, "the published data has repeated multi_solutions ids"
    [report] = reports
    assert [(e.source, e.record) for e in report.errors] == [(source, line) for source, line, _ in repeats]
    assert all(key in str(e) for e, (_, _, key) in zip(report.errors, repeats))
    kept = dataset.filter(lambda r: r["id"] == repeats[0][2])
    assert kept["steps"] == [seen[repeats[0][2]]["modified_process"]]


# PRM800K -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prm800k_train(prm800k_data) -> Dataset:
    return load_steps(prm800k_data, split="phase1_train")


@pytest.fixture(scope="module")
def prm800k_train_ratings(prm800k_data) -> dict[tuple[str, tuple[str, ...]], list]:
    """Every rating of each (problem, steps up to and including the rated one), from the raw rows."""
    ratings = defaultdict(list)
    for row in pq.read_table(prm800k_data / "phase1_train.stepwise-critic.parquet").to_pylist():
        ratings[row["instruction"], (*row["responses"], row["next_response"])].append(row["rating"])
    return ratings


def expected_step_labels(ratings, problem: str, steps: list[str]) -> list:
    labels = []
    for end in range(1, len(steps) + 1):
        values = {None if r is None else int(r) for r in ratings[problem, tuple(steps[:end])]}
        labels.append(RATING_TO_STEP_LABEL[values.pop()] if len(values) == 1 else None)
    return labels


def test_prm800k_trajectory_labels_match_the_raw_rows(prm800k_train, prm800k_train_ratings):
    prefixes = {(problem, steps[:end]) for problem, steps in prm800k_train_ratings for end in range(1, len(steps))}
    problem, steps = next(
        key
        for key, values in prm800k_train_ratings.items()
        if values == [-1.0] and len(key[1]) >= 4 and key not in prefixes
    )
    [row] = prm800k_train.filter(lambda r: r["problem"] == problem and r["steps"] == list(steps))
    assert row["step_labels"] == expected_step_labels(prm800k_train_ratings, problem, list(steps))
    assert row["step_labels"][-1] == 0 and row["label"] == row["step_labels"].index(0)


def test_prm800k_disagreeing_and_human_ratings_are_unknown(prm800k_train, prm800k_train_ratings):
    by_problem = defaultdict(list)
    for row in prm800k_train:
        by_problem[row["problem"]].append(row)
    disputed = next(key for key, values in prm800k_train_ratings.items() if {-1.0, 1.0} <= set(values))
    human = next(key for key, values in prm800k_train_ratings.items() if values == [None])
    for problem, steps in (disputed, human):
        row = next(r for r in by_problem[problem] if tuple(r["steps"][: len(steps)]) == steps)
        assert row["step_labels"][len(steps) - 1] is None
    assert len(by_problem) == 900  # README: 900 problems in phase1_train
    assert len(set(prm800k_train["id"])) == len(prm800k_train)


def test_prm800k_test_split_gives_every_maximal_trajectory_once(prm800k_data):
    rows = pq.read_table(prm800k_data / "phase1_test.stepwise-critic.parquet").to_pylist()
    paths = {(r["instruction"], (*r["responses"], r["next_response"])) for r in rows}
    extended = {(r["instruction"], tuple(r["responses"][:end])) for r in rows for end in range(len(r["responses"]) + 1)}
    dataset = load_steps(prm800k_data, split="phase1_test")
    assert sorted((r["problem"], tuple(r["steps"])) for r in dataset) == sorted(paths - extended)
    assert {r["id"].split("-")[0] for r in dataset} == {"phase1_test"}


RAW_PRM800K = [
    {
        "question": {"problem": "What is 2+3+4?", "ground_truth_answer": "9"},
        "label": {
            "steps": [
                {"completions": [{"text": "2+3=5.", "rating": 1}], "human_completion": None, "chosen_completion": 0},
                {
                    "completions": [
                        {"text": "5+4=10.", "rating": -1},
                        {"text": "5+4=9.", "rating": 1},
                        {"text": "Let me think.", "rating": 0, "flagged": False},
                    ],
                    "human_completion": None,
                    "chosen_completion": 1,
                },
                {
                    "completions": [{"text": "The answer is 8.", "rating": -1}],
                    "human_completion": {"text": "# Answer\n\n9", "rating": None},
                    "chosen_completion": None,
                },
            ],
            "finish_reason": "solution",
        },
    },
    {  # a second labeller: rates "Let me think." differently and stops with nothing chosen
        "question": {"problem": "What is 2+3+4?"},
        "label": {
            "steps": [
                {"completions": [{"text": "2+3=5.", "rating": 1}], "human_completion": None, "chosen_completion": 0},
                {"completions": [{"text": "Let me think.", "rating": 1}], "chosen_completion": 0},
                {"completions": [{"text": "Add 4 to get 9.", "rating": 1}], "chosen_completion": None},
            ],
            "finish_reason": "give_up",
        },
    },
]


def test_prm800k_raw_jsonl_follows_chosen_completions(tmp_path):
    dataset = load_steps(write_jsonl(tmp_path / "phase1_train.jsonl", RAW_PRM800K))
    assert [(r["id"], r["steps"], r["step_labels"], r["label"]) for r in dataset] == [
        ("phase1_train-0-0", ["2+3=5.", "5+4=10."], [1, 0], 1),
        ("phase1_train-0-1", ["2+3=5.", "5+4=9.", "The answer is 8."], [1, 1, 0], 2),
        ("phase1_train-0-2", ["2+3=5.", "5+4=9.", "# Answer\n\n9"], [1, 1, None], -1),
        ("phase1_train-0-3", ["2+3=5.", "Let me think.", "Add 4 to get 9."], [1, None, 1], -1),
    ]


def test_prm800k_raw_bad_rating_names_line_and_field(tmp_path):
    bad = json.loads(json.dumps(RAW_PRM800K[0]))
    bad["label"]["steps"][1]["completions"][2]["rating"] = 2
    path = write_jsonl(tmp_path / "raw.jsonl", [RAW_PRM800K[1], bad])
    with pytest.raises(StepDataError) as caught:
        load_steps(path)
    error = caught.value
    assert (error.source, error.record, error.field) == (str(path), "line 2", "label.steps[1].completions[2].rating")
    dataset, [report] = load_with_warnings(path, on_error="skip")
    assert len(dataset) == 1 and [e.record for e in report.errors] == ["line 2"]


# TRL stepwise supervision ------------------------------------------------------------------


def test_trl_round_trip_keeps_ids_steps_and_labels(processbench_data):
    prm800k = load_steps(SAMPLES_DIR / "prm800k_sample.parquet").filter(lambda row: row["label"] is not None)
    for dataset in (load_steps(processbench_data, subset="gsm8k"), prm800k):
        trl = to_trl_stepwise(dataset)
        assert trl.column_names[:3] == ["prompt", "completions", "labels"]
        for row, exported in zip(dataset, trl):
            first_error = row["label"] if row["label"] >= 0 else len(row["steps"])
            wrong = [False] if first_error < len(row["steps"]) else []
            assert exported["labels"][: first_error + 1] == [True] * first_error + wrong
        back = from_trl_stepwise(trl)
        for column in ("id", "problem", "steps", "label"):
            assert back[column] == dataset[column]


def test_trl_labels_every_step_and_keeps_known_labels_after_the_first_error(processbench_data):
    prmbench = load_steps(SAMPLES_DIR / "prmbench_sample.jsonl")
    trl = to_trl_stepwise(prmbench)
    assert trl["labels"] == [[bool(v) for v in labels] for labels in prmbench["step_labels"]]
    assert from_trl_stepwise(trl)["step_labels"] == prmbench["step_labels"]
    gsm8k = to_trl_stepwise(load_steps(processbench_data / "gsm8k.json"))
    erroneous = next(r for r in gsm8k if not all(r["labels"]))
    first = erroneous["labels"].index(False)
    assert not any(erroneous["labels"][first:])  # unknown steps after the first error are False


def test_trl_from_trl_to_trl_is_identity_and_loads_from_files(tmp_path):
    trl = Dataset.from_dict(
        {
            "prompt": ["What is 1+1?", "What is 2*3?"],
            "completions": [["1+1=2.", "The answer is 2."], ["2*3=5.", "The answer is 5.", "Check: no."]],
            "labels": [[True, True], [False, False, True]],
        }
    )
    canonical = from_trl_stepwise(trl)
    assert canonical["label"] == [-1, 0] and canonical["id"] == ["trl-0", "trl-1"]
    again = to_trl_stepwise(canonical)
    assert again.select_columns(["prompt", "completions", "labels"]).to_list() == trl.to_list()
    trl.to_parquet(tmp_path / "stepwise.parquet")
    trl.to_json(tmp_path / "stepwise.jsonl")
    for path in (tmp_path / "stepwise.parquet", tmp_path / "stepwise.jsonl"):
        assert infer_format(path) == "trl"
        loaded = load_steps(path)
        assert (loaded["steps"], loaded["label"]) == (canonical["steps"], [-1, 0])
        assert loaded["id"] == ["stepwise-0", "stepwise-1"]


def test_trl_rejects_unlabelled_rows_and_bad_labels(tmp_path):
    row = {"id": "a", "problem": "p", "steps": ["s1", "s2"], "label": None, "step_labels": [None, None]}
    unlabelled = Dataset.from_list([row], features=FEATURES)
    with pytest.raises(StepDataError, match="unlabelled") as caught:
        to_trl_stepwise(unlabelled)
    assert (caught.value.record, caught.value.field) == (0, "label")
    path = write_jsonl(tmp_path / "trl.jsonl", [{"prompt": "p", "completions": ["a", "b"], "labels": [True]}])
    with pytest.raises(StepDataError) as caught:
        load_steps(path, format="trl")
    assert (caught.value.record, caught.value.field) == ("line 1", "labels")


# Math-Shepherd -----------------------------------------------------------------------------

GSM8K_SHEPHERD = (
    "Janet\u2019s ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her "
    "friends every day with four. She sells the remainder at the farmers' market daily for $2 per fresh duck egg. How "
    "much in dollars does she make every day at the farmers' market? Step 1: Janet's ducks lay 16 eggs per day, and "
    "she eats 3 for breakfast every morning, so she has 16 - 3 = <<16-3=13>>13 eggs left. \u043a\u0438\nStep 2: She "
    "bakes muffins for her friends every day with 4 eggs, so she has 13 - 4 = <<13-4=9>>9 eggs left. \u043a\u0438\n"
    "Step 3: She sells the remainder at the farmers' market daily for $2 per fresh duck egg, so she makes "
    "9 * $2 = $<<9*2=18>>18 every day at the farmers' market. The answer is: 18 \u043a\u0438"
)
MATH_SHEPHERD = (
    "Find the value of $x$ such that $\\sqrt{x - 2} = 8$.\n$\\sqrt{x-2}=8$ means $x-2=8^2=64$. \u043a\u0438\n"
    "So $x = 64 - 2 = 62$. \u043a\u0438\nThe answer is: 62 \u043a\u0438"
)


def shepherd_label(text: str, marks: str) -> str:
    parts = text.split("\u043a\u0438")
    return "".join(part + mark for part, mark in zip(parts, marks)) + parts[-1]


def test_math_shepherd_splits_question_steps_and_labels(tmp_path):
    path = write_jsonl(
        tmp_path / "math_shepherd.jsonl",
        [
            {"input": GSM8K_SHEPHERD, "label": shepherd_label(GSM8K_SHEPHERD, "++-"), "task": "GSM8K"},
            {"input": MATH_SHEPHERD, "label": shepherd_label(MATH_SHEPHERD, "+--"), "task": "MATH"},
        ],
    )
    assert infer_format(path) == "math_shepherd"
    gsm8k, math = load_steps(path)
    assert gsm8k["problem"].endswith("every day at the farmers' market?") and "Step 1" not in gsm8k["problem"]
    assert [step[:7] for step in gsm8k["steps"]] == ["Step 1:", "Step 2:", "Step 3:"]
    assert gsm8k["steps"][2].endswith("The answer is: 18")
    assert (gsm8k["step_labels"], gsm8k["label"], gsm8k["task"]) == ([1, 1, 0], 2, "GSM8K")
    assert math["problem"] == "Find the value of $x$ such that $\\sqrt{x - 2} = 8$."
    assert math["steps"] == ["$\\sqrt{x-2}=8$ means $x-2=8^2=64$.", "So $x = 64 - 2 = 62$.", "The answer is: 62"]
    assert (math["step_labels"], math["label"]) == ([1, 0, 0], 1)


def test_math_shepherd_malformed_records_name_the_field(tmp_path):
    lines = [
        {"input": GSM8K_SHEPHERD, "label": GSM8K_SHEPHERD.replace("\u043a\u0438", "?")},
        {"input": "No tags here.", "label": "No tags here."},
        {"input": GSM8K_SHEPHERD, "label": shepherd_label(GSM8K_SHEPHERD, "++-") + " extra"},
    ]
    path = write_jsonl(tmp_path / "shepherd.jsonl", lines)
    dataset, [report] = load_with_warnings(path, format="math_shepherd", on_error="skip")
    assert len(dataset) == 0
    where = [(e.record, e.field) for e in report.errors]
    assert where == [("line 1", "label"), ("line 2", "input"), ("line 3", "label")]


# Canonical jsonl / json, format inference, errors ------------------------------------------


def test_canonical_jsonl_and_json_are_validated(tmp_path):
    records = [
        {"id": "a", "problem": "1+1?", "steps": ["1+1=2."], "label": -1, "source": "x"},
        {"problem": "2+2?", "steps": ["2+2=5.", "So 5."], "label": 0},
    ]
    jsonl = write_jsonl(tmp_path / "mine.jsonl", records)
    dataset = load_steps(jsonl)
    assert infer_format(jsonl) == "jsonl"
    assert (dataset["id"], dataset["source"]) == (["a", "mine-1"], ["x", None])
    assert dataset["step_labels"] == [[1], [0, None]]
    (tmp_path / "mine.json").write_text(json.dumps(records + [{**records[1], "label": 2}]))
    with pytest.raises(StepDataError) as caught:
        load_steps(tmp_path / "mine.json")
    assert (caught.value.source, caught.value.record, caught.value.field) == (str(tmp_path / "mine.json"), 2, "label")
    assert "mine.json, record 2, field 'label'" in str(caught.value)


def test_skip_reports_each_bad_record_and_why(tmp_path):
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            {"id": "ok", "problem": "p", "steps": ["s"], "label": -1},
            "{not json",
            {"id": "no-steps", "problem": "p", "label": -1},
            [1, 2],
            {"id": "bad-labels", "problem": "p", "steps": ["s", "t"], "step_labels": [1, 2]},
        ],
    )
    with pytest.raises(StepDataError, match="line 2.*invalid JSON"):
        load_steps(path, format="jsonl")
    with pytest.warns(SkippedRecordsWarning) as caught:
        dataset = load_steps(path, format="jsonl", on_error="skip")
    assert dataset["id"] == ["ok"]
    [report] = [w.message for w in caught]
    where = [(e.record, e.field) for e in report.errors]
    assert where == [("line 2", None), ("line 3", "steps"), ("line 4", None), ("line 5", "step_labels")]
    assert all(str(error) in str(report) for error in report.errors) and str(path) in str(report)
    with pytest.raises(ValueError, match="on_error"):
        load_steps(path, on_error="ignore")


def test_format_inference_on_the_shared_files(processbench_data, prmbench_data, prm800k_data, tmp_path):
    assert infer_format(processbench_data / "omnimath.json") == "processbench"
    assert infer_format(prmbench_data / "prm_test_p12_multi_solutions.jsonl") == "prmbench"
    assert infer_format(prm800k_data / "phase1_test.stepwise-critic.parquet") == "prm800k"
    assert infer_format(write_jsonl(tmp_path / "raw.jsonl", RAW_PRM800K)) == "prm800k"
    with pytest.raises(ValueError, match="pass format="):
        infer_format(write_jsonl(tmp_path / "other.jsonl", [{"text": "hello"}]))


def test_folder_split_and_missing_sources(prm800k_data, processbench_data, prmbench_data, tmp_path):
    with pytest.raises(FileNotFoundError, match="'phase9'"):
        load_steps(prm800k_data, split="phase9")
    with pytest.raises(ValueError, match="single file"):
        load_steps(processbench_data / "gsm8k.json", split="test")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_steps(tmp_path / "absent.jsonl")
    test_only = load_steps(prmbench_data, split="p1")
    assert len(test_only) and all("_p1_" in i for i in test_only["id"])


# Shipped samples ---------------------------------------------------------------------------


def test_shipped_samples_are_small_real_slices(processbench_data):
    files = sorted(path for path in SAMPLES_DIR.iterdir() if path.suffix != ".md")
    names = ["prm800k_sample.parquet", "prmbench_sample.jsonl", "processbench_gsm8k_sample.json"]
    assert [f.name for f in files] == names
    assert all(f.stat().st_size < 50_000 for f in files)
    processbench = load_steps(SAMPLES_DIR / "processbench_gsm8k_sample.json")
    full = {r["id"]: r for r in json.loads((processbench_data / "gsm8k.json").read_text())}
    assert all(full[r["id"]]["steps"] == r["steps"] and full[r["id"]]["label"] == r["label"] for r in processbench)
    assert -1 in processbench["label"] and any(label >= 0 for label in processbench["label"])
    prmbench = load_steps(SAMPLES_DIR / "prmbench_sample.jsonl")
    assert "correct" in prmbench["classification"] and "redundency" in prmbench["classification"]
    prm800k = load_steps(SAMPLES_DIR / "prm800k_sample.parquet")
    assert {None, 0, 1} <= {v for labels in prm800k["step_labels"] for v in labels}
