"""The synthetic arithmetic generator behind the embedded default."""

import collections

import pytest

from actprm.data.schema import validate_record
from actprm.data.synthetic import ERROR_KINDS, apply, make_arithmetic_dataset


def test_same_seed_same_data_and_splits_share_no_problem():
    pool = make_arithmetic_dataset(300, seed=3)
    assert pool.to_list() == make_arithmetic_dataset(300, seed=3).to_list()
    assert pool["problem"] != make_arithmetic_dataset(300, seed=4)["problem"]
    test = make_arithmetic_dataset(300, seed=3, split="test")
    assert not set(pool["problem"]) & set(test["problem"])
    assert make_arithmetic_dataset(50, seed=3).to_list() == pool.select(range(50)).to_list()  # a prefix


def test_every_error_kind_appears_at_the_requested_rate_and_labels_fit_the_schema():
    dataset = make_arithmetic_dataset(2000, seed=0, error_rate=0.5)
    kinds = collections.Counter(dataset["error_kind"])
    assert set(kinds) == {"none", *ERROR_KINDS} and all(kinds[k] > 200 for k in ERROR_KINDS)
    assert 0.45 < 1 - kinds["none"] / 2000 < 0.55
    for index, row in enumerate(dataset):
        validated = validate_record(row, source="synthetic", index=index)
        assert (validated["label"] == -1) == (row["error_kind"] == "none")
        assert row["steps"][-1].startswith("The answer is")


def test_correct_solutions_state_true_equations():
    for row in make_arithmetic_dataset(200, seed=1, error_rate=0.0):
        for step in row["steps"][:-1]:
            left, operator, right, _, result = step.split(": ")[1].rstrip(".").split()
            assert apply(operator, int(left), int(right)) == int(result)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="split must be one of"):
        make_arithmetic_dataset(3, split="train")
    with pytest.raises(ValueError, match="error_rate"):
        make_arithmetic_dataset(3, error_rate=1.5)
