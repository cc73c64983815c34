"""The selection rule on hand-built ensemble outputs."""

import torch

from actprm.selection import ensemble_statistics, pad_step_statistics, select_confident


def rule(mean, std, mask, **kw):
    return select_confident(torch.tensor(mean), torch.tensor(std), torch.tensor(mask), **kw)


def test_all_steps_confidently_correct_is_confident():
    s = rule([[0.95, 0.97, 0.99]], [[0.001, 0.002, 0.0]], [[True, True, True]])
    assert s.confident.tolist() == [True]
    assert s.predicted_first_error.tolist() == [-1]


def test_first_error_and_steps_after_it_are_ignored():
    # step 1 is confidently wrong; step 2 is uncertain but comes after the predicted error
    s = rule([[0.95, 0.05, 0.5]], [[0.0, 0.0, 0.3]], [[True, True, True]])
    assert s.predicted_first_error.tolist() == [1]
    assert s.confident.tolist() == [True]


def test_uncertain_step_before_error_makes_trajectory_uncertain():
    s = rule([[0.95, 0.7, 0.05]], [[0.0, 0.0, 0.0]], [[True, True, True]])
    assert s.predicted_first_error.tolist() == [2]
    assert s.confident.tolist() == [False]


def test_disagreeing_heads_make_trajectory_uncertain_even_with_confident_mean():
    s = rule([[0.95, 0.95]], [[0.0, 0.02]], [[True, True]], std_threshold=0.01)
    assert s.confident.tolist() == [False]


def test_thresholds_are_inclusive():
    s = rule([[0.9, 0.1]], [[0.01, 0.01]], [[True, True]], pred_threshold=0.9, std_threshold=0.01)
    assert s.confident.tolist() == [True]
    assert s.predicted_first_error.tolist() == [1]


def test_padding_is_not_a_step():
    s = rule([[0.99, 0.3], [0.99, 0.99]], [[0.0, 0.5], [0.0, 0.0]], [[True, False], [True, True]])
    assert s.predicted_first_error.tolist() == [-1, -1]
    assert s.confident.tolist() == [True, True]


def test_statistics_are_mean_and_unbiased_std_over_heads():
    probs = torch.tensor([[[0.2, 0.9]], [[0.4, 0.9]], [[0.6, 0.9]]])  # [E=3, batch=1, steps=2]
    mean, std = ensemble_statistics(probs)
    assert torch.allclose(mean, torch.tensor([[0.4, 0.9]]))
    assert torch.allclose(std, torch.tensor([[0.2, 0.0]]))  # sqrt(((.2)^2 + 0 + (.2)^2) / 2)


def test_pad_step_statistics_builds_mask_from_ragged_rows():
    mean, std, mask = pad_step_statistics(
        [(torch.tensor([0.9, 0.2, 0.99]), torch.tensor([0.0, 0.1, 0.0])), (torch.tensor([0.3]), torch.tensor([0.2]))]
    )
    assert mask.tolist() == [[True, True, True], [True, False, False]]
    s = select_confident(mean, std, mask)
    assert s.predicted_first_error.tolist() == [1, 0]
    assert s.confident.tolist() == [False, False]


def test_the_batched_first_error_rule_matches_first_error_from_scores():
    from actprm.selection import considered_steps, first_error_from_scores, pad_step_statistics

    generator = torch.Generator().manual_seed(0)
    rows = [torch.rand(length, generator=generator) for length in (0, 1, 3, 5, 8)] + [torch.tensor([0.5, 0.4999])]
    mean, _, mask = pad_step_statistics([(row, torch.zeros_like(row)) for row in rows])
    considered, first_errors = considered_steps(mean, mask)
    expected = [first_error_from_scores(row.tolist()) for row in rows]
    assert first_errors.tolist() == expected and expected[-1] == 1
    assert considered.sum(dim=1).tolist() == [len(row) if e == -1 else e + 1 for row, e in zip(rows, expected)]
