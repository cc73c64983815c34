"""ProcessBench and PRMBench metrics against independent computations of the official definitions.

The independent references below are written from the official evaluation code, not from
`actprm.metrics`: ProcessBench's ``code/run_eval_prm_trl.py`` (NumPy means of matches, F1 on
percentages) and PRMBench's ``mr_eval/tasks/prmtest_classified/task.py`` plus the leaderboard's
``get_prmscore_from_current_res_dict`` (PRMScore by classification name, floored at 0).
"""

import json
from collections import Counter
import math
import random
import warnings
from pathlib import Path

import numpy as np
import pytest

import actprm.metrics
from actprm.metrics import (
    DEFAULT_CANDIDATES,
    average_over_subsets,
    calibrate_threshold,
    first_error_from_scores,
    load_metric,
    prmbench_scores,
    processbench_scores,
    validity_labels,
)

METRICS_DIR = Path(actprm.metrics.__file__).parent
PROCESSBENCH_SUBSETS = ("gsm8k", "math", "olympiadbench", "omnimath")
PRMBENCH_CLASSES = (
    "circular", "confidence", "counterfactual", "deception", "domain_inconsistency",
    "missing_condition", "redundency", "step_contradiction", "multi_solutions",
)  # fmt: skip


# ---------------------------------------------------------------- data, read directly from the files


@pytest.fixture(scope="module")
def processbench(processbench_data):
    folder = processbench_data
    return {name: json.loads((folder / f"{name}.json").read_text()) for name in PROCESSBENCH_SUBSETS}


@pytest.fixture(scope="module")
def prmbench(prmbench_data):
    """The samples of the official ``prmtest_classified`` task: one per (classification, idx), first
    occurrence kept, plus one all-correct control per ``redundency`` record."""
    samples, seen = [], set()
    for path in sorted(prmbench_data.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record["classification"] == "redundency" and f"correct_{record['idx']}" not in seen:
                seen.add(f"correct_{record['idx']}")
                samples.append({"steps": record["original_process"], "error_steps": [], "classification": "correct"})
            key = f"{record['classification']}_{record['idx']}"
            if key not in seen:
                seen.add(key)
                samples.append(
                    {
                        "steps": record["modified_process"],
                        "error_steps": record["error_steps"],
                        "classification": record["classification"],
                    }
                )
    return samples


# ---------------------------------------------------------------- independent official computations


def official_processbench(predictions, labels):
    """As ``run_eval_prm_trl.py``: NumPy mean of matches per group, in percent, then F1."""
    matches = np.array(predictions) == np.array(labels)
    is_error = np.array(labels) != -1
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        acc1 = np.mean(matches[is_error]) * 100
        acc2 = np.mean(matches[~is_error]) * 100
        f1 = 2 * acc1 * acc2 / (acc1 + acc2)
    return {"error_acc": acc1 / 100, "correct_acc": acc2 / 100, "f1": f1 / 100}


def official_prf(tp, fp, fn):
    precision = tp / (tp + fp) if tp + fp else -1
    recall = tp / (tp + fn) if tp + fn else -1
    return 2 * precision * recall / (precision + recall) if precision + recall else -1


def official_prmbench(predictions, samples):
    """Counts over the predicted labels of each sample, pooled per class and over all non-controls."""
    counts = {}
    for labels, sample in zip(predictions, samples):
        valid = np.array(labels, dtype=bool)
        wrong = np.isin(np.arange(len(valid)), np.array(sample["error_steps"], dtype=int) - 1)
        # TP, FP, TN, FN: (valid, on an error step) = (1, 0), (1, 1), (0, 1), (0, 0)
        step_counts = np.array([np.sum((valid == v) & (wrong == w)) for v, w in ((1, 0), (1, 1), (0, 1), (0, 0))])
        groups = [sample["classification"]] + ([] if sample["classification"] == "correct" else ["overall"])
        for group in groups:
            counts[group] = counts.get(group, 0) + step_counts
    results = {}
    for group, (tp, fp, tn, fn) in counts.items():
        f1, negative_f1 = official_prf(tp, fp, fn), official_prf(tn, fn, fp)
        prm_score = f1 if group == "multi_solutions" else (f1 + negative_f1) / 2
        results[group] = {"f1": f1, "negative_f1": negative_f1, "prm_score": max(prm_score, 0)}
    return results


def assert_same_metrics(actual, expected):
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(actual[key]), key
        else:
            assert actual[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


def assert_matches_official_prmbench(result, official):
    assert_same_metrics({k: result[k] for k in ("f1", "negative_f1", "prm_score")}, official["overall"])
    assert set(result["per_classification"]) == set(PRMBENCH_CLASSES) | {"correct"}
    for name in PRMBENCH_CLASSES:
        assert_same_metrics(result["per_classification"][name], official[name])
    correct = result["per_classification"]["correct"]
    for key in ("f1", "negative_f1"):
        assert correct[key] == pytest.approx(official["correct"][key], rel=1e-12, abs=1e-12), key
    assert correct["prm_score"] == max(correct["f1"], 0)  # no error step: PRMScore is F1, as for multi_solutions


# ---------------------------------------------------------------- ProcessBench


def test_processbench_hand_computed():
    # errors (refs 2, 1, 3): hits at items 0 and 4 -> 2/3; all-correct (items 2, 3): item 2 -> 1/2;
    # F1 = 2 * 2/3 * 1/2 / (2/3 + 1/2) = (2/3) / (7/6) = 4/7
    result = processbench_scores([2, -1, -1, 0, 3], [2, 1, -1, -1, 3])
    assert result == pytest.approx({"error_acc": 2 / 3, "correct_acc": 1 / 2, "f1": 4 / 7})


def test_processbench_edge_cases_follow_official_nan():
    # no erroneous solution: error accuracy over nothing is NaN, and so is F1
    result = processbench_scores([-1, 0], [-1, -1])
    assert math.isnan(result["error_acc"]) and result["correct_acc"] == 0.5 and math.isnan(result["f1"])
    # both accuracies 0: 0 / 0 in the official NumPy code
    assert math.isnan(processbench_scores([0, 1], [-1, 0])["f1"])


@pytest.mark.parametrize("subset", PROCESSBENCH_SUBSETS)
def test_processbench_full_subsets_match_official(processbench, subset):
    items = processbench[subset]
    labels = [item["label"] for item in items]
    rng = random.Random(subset)
    predictors = {
        "always_no_error": [-1] * len(items),
        "oracle": labels,
        "shifted": [label + 1 if label != -1 else 0 for label in labels],
        "random": [rng.randint(-1, len(item["steps"]) - 1) for item in items],
    }
    for name, predictions in predictors.items():
        result = processbench_scores(predictions, labels)
        assert_same_metrics(result, official_processbench(predictions, labels))
    assert processbench_scores(predictors["oracle"], labels) == {"error_acc": 1.0, "correct_acc": 1.0, "f1": 1.0}
    always = processbench_scores(predictors["always_no_error"], labels)
    assert (always["error_acc"], always["correct_acc"], always["f1"]) == (0.0, 1.0, 0.0)


def test_first_error_from_scores_on_full_data(processbench):
    rng = np.random.default_rng(0)
    for items in processbench.values():
        for item in items:
            scores = rng.random(len(item["steps"]))
            below = scores < 0.3
            expected = int(np.argmax(below)) if below.any() else -1
            assert first_error_from_scores(scores.tolist(), threshold=0.3) == expected
    assert first_error_from_scores([0.9, 0.5, 0.2]) == 2  # a score equal to the threshold is correct
    assert first_error_from_scores([]) == -1


def test_average_over_subsets_plain_and_size_weighted(processbench):
    rng = random.Random(1)
    per_subset, sizes = {}, {}
    for name, items in processbench.items():
        predictions = [rng.choice([-1, item["label"]]) for item in items]
        per_subset[name] = processbench_scores(predictions, [item["label"] for item in items])
        sizes[name] = len(items)
    plain = average_over_subsets(per_subset)
    weighted = average_over_subsets(per_subset, weights=sizes)
    f1s = [per_subset[name]["f1"] for name in PROCESSBENCH_SUBSETS]
    assert plain["f1"] == pytest.approx(sum(f1s) / 4)
    assert weighted["f1"] == pytest.approx(sum(f1 * sizes[n] for f1, n in zip(f1s, PROCESSBENCH_SUBSETS)) / 3400)
    assert plain.keys() == weighted.keys() == {"error_acc", "correct_acc", "f1"}
    with pytest.raises(ValueError, match="no weight for subsets"):
        average_over_subsets(per_subset, weights={"gsm8k": 400})


CALIBRATION_SCORES = [[0.9, 0.35], [0.7, 0.55, 0.1], [0.8, 0.65], [0.95, 0.6]]
CALIBRATION_LABELS = [1, 1, -1, -1]


def test_calibrate_threshold_hand_made():
    # An item is right for t in: (0.35, 0.9], (0.55, 0.7], t <= 0.65, t <= 0.6 (score == t is correct).
    # t=0.3: errors 0/2, correct 2/2 -> F1 0; t=0.5: 1/2 and 2/2 -> 2/3; t=0.6: all right -> 1;
    # t=0.62: 2/2 and 1/2 -> 2/3; t=0.7: 2/2 and 0/2 -> 0.
    assert calibrate_threshold(CALIBRATION_SCORES, CALIBRATION_LABELS, [0.3, 0.5, 0.6, 0.62, 0.7]) == (0.6, 1.0)
    # every grid point in (0.55, 0.6] is perfect; ties go to the earliest candidate
    assert calibrate_threshold(CALIBRATION_SCORES, CALIBRATION_LABELS) == (0.56, 1.0)
    assert DEFAULT_CANDIDATES[0] == 0.01 and DEFAULT_CANDIDATES[-1] == 0.99


def test_calibrate_threshold_on_gsm8k_is_the_best_candidate(processbench):
    items = processbench["gsm8k"]
    labels = [item["label"] for item in items]
    rng = np.random.default_rng(2)
    # noisy scores around the truth: good steps near 0.7, the first wrong step near 0.3
    step_scores = [
        [float(rng.normal(0.3 if i == item["label"] else 0.7, 0.2)) for i in range(len(item["steps"]))]
        for item in items
    ]
    candidates = [0.2, 0.35, 0.5, 0.65, 0.8]
    f1s = [
        official_processbench([first_error_from_scores(scores, t) for scores in step_scores], labels)["f1"]
        for t in candidates
    ]
    threshold, f1 = calibrate_threshold(step_scores, labels, candidates)
    assert threshold == candidates[int(np.nanargmax(f1s))]
    assert f1 == pytest.approx(np.nanmax(f1s))


# ---------------------------------------------------------------- PRMBench


def test_prmbench_hand_computed():
    predictions = [[1, 0, 1, 0], [1, 1], [1, 1, 0], [1, 0]]
    references = [[2, 3], [2], [], []]
    classifications = ["circular", "circular", "multi_solutions", "correct"]
    result = prmbench_scores(predictions, references, classifications)
    # circular: TP 2 (steps 1, 1), FP 2 (3, 2), TN 1, FN 1 -> P 1/2, R 2/3, F1 4/7;
    # negative P 1/2, R 1/3, F1 2/5; PRMScore (4/7 + 2/5) / 2 = 17/35
    assert result["per_classification"]["circular"] == pytest.approx(
        {"f1": 4 / 7, "negative_f1": 2 / 5, "prm_score": 17 / 35}
    )
    # multi_solutions: TP 2, FN 1 -> F1 4/5; negative P 0/1, R -1 (no error step) -> 0; PRMScore = F1
    assert result["per_classification"]["multi_solutions"] == pytest.approx(
        {"f1": 4 / 5, "negative_f1": 0.0, "prm_score": 4 / 5}
    )
    # correct: TP 1, FN 1 -> F1 2/3, negative F1 0, PRMScore = F1
    assert result["per_classification"]["correct"] == pytest.approx(
        {"f1": 2 / 3, "negative_f1": 0.0, "prm_score": 2 / 3}
    )
    # overall leaves the control out: TP 4, FP 2, TN 1, FN 2 -> F1 2/3, negative F1 1/3, PRMScore 1/2
    assert {k: result[k] for k in ("f1", "negative_f1", "prm_score")} == pytest.approx(
        {"f1": 2 / 3, "negative_f1": 1 / 3, "prm_score": 1 / 2}
    )


def test_prmbench_counts_only_predicted_steps_and_official_sentinels():
    # shorter prediction: step 3 (an error step) has no label and is not counted -> TP 1 only;
    # longer prediction: error step 1 -> FP, extra steps 2 and 3 count as correct steps -> TP 2
    result = prmbench_scores([[1], [1, 1, 1]], [[3], [1]], ["a", "b"])
    assert result["per_classification"]["a"] == {"f1": 1.0, "negative_f1": -1.0, "prm_score": 1.0}
    assert result["per_classification"]["b"]["f1"] == pytest.approx(0.8)  # P 2/3, R 1
    assert result["per_classification"]["b"]["negative_f1"] == 0.0  # P -1 (nothing invalid), R 0
    # inverted labels: P = R = 0 for both classes -> F1 -1 and negative F1 -1 -> PRMScore floored at 0
    assert prmbench_scores([[0, 1]], [[2]], ["c"])["per_classification"]["c"] == {
        "f1": -1.0,
        "negative_f1": -1.0,
        "prm_score": 0.0,
    }


def test_prmbench_sample_counts(prmbench):
    counts = Counter(sample["classification"] for sample in prmbench)
    assert counts["correct"] == counts["redundency"] == 758
    assert counts["multi_solutions"] == 165 - 5  # five (classification, idx) pairs repeat in the file
    assert len(prmbench) == 6216 - 5 + 758


def test_prmbench_full_data_matches_official(prmbench):
    steps = [len(sample["steps"]) for sample in prmbench]
    rng = np.random.default_rng(3)
    predictors = {
        "all_valid": [[1] * n for n in steps],
        "random": [rng.integers(0, 2, n).tolist() for n in steps],
        "oracle": [[0 if i + 1 in s["error_steps"] else 1 for i in range(n)] for s, n in zip(prmbench, steps)],
        "scores": [validity_labels(rng.random(n).tolist()) for n in steps],
    }
    references = [sample["error_steps"] for sample in prmbench]
    classifications = [sample["classification"] for sample in prmbench]
    for name, predictions in predictors.items():
        result = prmbench_scores(predictions, references, classifications)
        assert_matches_official_prmbench(result, official_prmbench(predictions, prmbench))
    oracle = prmbench_scores(predictors["oracle"], references, classifications)
    assert (oracle["f1"], oracle["negative_f1"], oracle["prm_score"]) == (1.0, 1.0, 1.0)
    all_valid = prmbench_scores(predictors["all_valid"], references, classifications)
    assert all_valid["negative_f1"] == 0.0 and all_valid["prm_score"] == all_valid["f1"] / 2


def test_validity_labels_threshold():
    assert validity_labels([0.2, 0.5, 0.51, 1.0]) == [0, 0, 1, 1]  # strictly above 0.5 is valid
    assert validity_labels(np.array([0.2, 0.8]), threshold=0.1) == [1, 1]


# ---------------------------------------------------------------- evaluate modules


@pytest.fixture(scope="module")
def evaluate_modules():
    import evaluate

    return {
        name: evaluate.load(str(METRICS_DIR / f"{name}_metric" / f"{name}_metric.py"))
        for name in actprm.metrics.METRIC_NAMES
    }


def test_evaluate_processbench_equals_plain_functions(evaluate_modules, processbench):
    module = evaluate_modules["processbench"]
    assert module.name == "processbench" and "2412.06559" in module.citation
    rng = random.Random(4)
    for items in processbench.values():
        labels = [item["label"] for item in items]
        predictions = [rng.randint(-1, len(item["steps"]) - 1) for item in items]
        assert module.compute(predictions=predictions, references=labels) == processbench_scores(predictions, labels)


def test_evaluate_prmbench_equals_plain_functions_in_batches(evaluate_modules, prmbench):
    module = evaluate_modules["prmbench"]
    assert module.name == "prmbench" and "2501.03124" in module.citation
    rng = np.random.default_rng(5)
    predictions = [rng.integers(0, 2, len(sample["steps"])).tolist() for sample in prmbench]
    references = [sample["error_steps"] for sample in prmbench]
    classifications = [sample["classification"] for sample in prmbench]
    for start in range(0, len(prmbench), 1000):
        batch = slice(start, start + 1000)
        module.add_batch(
            predictions=predictions[batch], references=references[batch], classifications=classifications[batch]
        )
    assert module.compute() == prmbench_scores(predictions, references, classifications)


def test_load_metric_by_name():
    processbench_module = load_metric("processbench", keep_in_memory=True)
    assert processbench_module.compute(predictions=[2, -1, -1, 0, 3], references=[2, 1, -1, -1, 3]) == (
        processbench_scores([2, -1, -1, 0, 3], [2, 1, -1, -1, 3])
    )
    prmbench_module = load_metric("prmbench", keep_in_memory=True)
    result = prmbench_module.compute(predictions=[[1, 0, 1]], references=[[2]], classifications=["circular"])
    assert result["prm_score"] == 1.0 and set(result["per_classification"]) == {"circular"}
    with pytest.raises(ValueError, match="choose one of processbench, prmbench"):
        load_metric("processbench2")


def test_metric_cards_document_inputs_outputs_and_citation():
    for name, arxiv in (("processbench", "2412.06559"), ("prmbench", "2501.03124")):
        card = (METRICS_DIR / f"{name}_metric" / "README.md").read_text()
        for section in ("### Inputs", "### Output Values", "## Citation", arxiv):
            assert section in card, (name, section)


# ---------------------------------------------------------------- bad input


def test_processbench_bad_input_names_lengths_and_items():
    with pytest.raises(ValueError, match="predictions has 3, references has 2"):
        processbench_scores([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match=r"predictions\[1\] = -2 is not a first-error index"):
        processbench_scores([0, -2], [0, 1])
    with pytest.raises(ValueError, match=r"references\[0\] = 1.0 is not a first-error index"):
        processbench_scores([0], [1.0])
    with pytest.raises(ValueError, match=r"threshold must lie in \(0, 1\), got 1.5"):
        first_error_from_scores([0.2], threshold=1.5)
    with pytest.raises(ValueError, match=r"references\[1\] = 2 but solution 1 has 2 step scores"):
        calibrate_threshold([[0.5], [0.5, 0.5]], [-1, 2])
    with pytest.raises(ValueError, match="calibration needs solutions with an error and all-correct"):
        calibrate_threshold([[0.9, 0.8]], [-1])


def test_prmbench_bad_input_names_lengths_items_and_steps():
    with pytest.raises(ValueError, match="predictions has 2, references has 1, classifications has 1"):
        prmbench_scores([[1], [1]], [[]], ["a"])
    with pytest.raises(ValueError, match=r"predictions\[1\]\[2\] = 0.7 is not a validity label"):
        prmbench_scores([[1], [1, 0, 0.7]], [[], []], ["a", "a"])
    with pytest.raises(ValueError, match=r"references\[0\] = \[0\]: error steps are 1-based"):
        prmbench_scores([[1]], [[0]], ["a"])
    with pytest.raises(ValueError, match=r"classifications\[0\] = 3 is not a string"):
        prmbench_scores([[1]], [[]], [3])
    with pytest.raises(ValueError, match=r"predictions\[0\] must be a list"):
        prmbench_scores(["10"], [[]], ["a"])
    with pytest.raises(ValueError, match="threshold must lie in"):
        validity_labels([0.3], threshold=0.0)


def test_evaluate_modules_reject_bad_input(evaluate_modules):
    with pytest.raises(ValueError, match=r"predictions \(3\) and references \(2\)"):
        evaluate_modules["processbench"].compute(predictions=[0, 1, 2], references=[0, 1])
    with pytest.raises(ValueError, match=r"predictions\[0\] = -3"):
        evaluate_modules["processbench"].compute(predictions=[-3], references=[0])
    with pytest.raises(ValueError, match=r"predictions\[0\]\[1\] = 2 is not a validity label"):
        evaluate_modules["prmbench"].compute(predictions=[[1, 2]], references=[[1]], classifications=["a"])


def test_processbench_metrics_reads_a_trainer_evaluation_at_the_labelled_positions():
    from transformers import EvalPrediction

    from actprm.metrics import processbench_metrics

    ignore = -100
    # per position: mean probability, label (-100 off the separators and on Trainer's padding)
    rows = [
        ([0.3, 0.9, 0.2, 0.1, 0.0], [ignore, 1, ignore, 0, ignore]),  # error at step 1, predicted at step 1: right
        ([0.2, 0.9, 0.2, 0.9, 0.0], [ignore, 1, ignore, 1, ignore]),  # all correct, predicted none: right
        ([0.1, 0.4, 0.9, 0.8, 0.0], [ignore, 1, ignore, 1, ignore]),  # all correct, predicted step 0: wrong
        ([0.9, 0.7, 0.9, 0.3, 0.9], [ignore, 0, ignore, ignore, ignore]),  # error at step 0, predicted none: wrong
    ]
    prediction = EvalPrediction(
        predictions=np.array([p for p, _ in rows], dtype=np.float32), label_ids=np.array([l for _, l in rows])
    )
    assert processbench_metrics(prediction) == {"error_acc": 0.5, "correct_acc": 0.5, "f1": 0.5}
