"""Acquisition strategies (`actprm.selection`): scores against values computed here by hand, the fixed
rate, the random share and its probabilities, importance-weighted losses, and the strategies in the
trainer (pool and online mode) and in the filter."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from test_trainer import make_config, unlabelled
from transformers import AutoTokenizer

from actprm import ActivePRMConfig, ActivePRMTrainer, load_steps, make_arithmetic_dataset
from actprm.filtering import filter_pool
from actprm.judges import ArithmeticJudge
from actprm.modeling import EnsemblePRMModel
from actprm.scoring import StepScorer
from actprm.selection import (
    STRATEGIES,
    SelectionSettings,
    acquire,
    pad_step_probabilities,
    select,
    select_confident,
    trajectory_scores,
)

# Three heads, two trajectories: the first has 3 steps (the second is its predicted first error, so the
# third is not considered), the second 2 steps padded to 3 (no predicted error).
HEADS = [
    [[0.9, 0.6, 0.2], [0.95, 0.99, 0.5]],
    [[0.7, 0.2, 0.1], [0.85, 0.97, 0.5]],
    [[0.8, 0.4, 0.9], [0.90, 0.98, 0.5]],
]
LENGTHS = [3, 2]


def entropy(p: float) -> float:
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def by_hand() -> dict[str, list[float]]:
    """Each strategy's score of the two trajectories, from the formulas, in plain Python."""
    scores = {name: [] for name in STRATEGIES}
    for row in range(2):  # steps 0-1 for both: row 0's predicted first error is step 1, row 1 has 2 steps
        steps = [[HEADS[e][row][t] for e in range(3)] for t in range(2)]
        means = [statistics.fmean(s) for s in steps]
        spreads = [statistics.stdev(s) for s in steps]
        balds = [entropy(m) - statistics.fmean(entropy(p) for p in s) for m, s in zip(means, steps)]
        entropies = [entropy(m) for m in means]
        rule = [max(s / 0.05, (1 - max(m, 1 - m)) / (1 - 0.9)) for m, s in zip(means, spreads)]
        for name, value in {
            "actprm": max(rule),
            "disagreement_max": max(spreads),
            "disagreement_mean": statistics.fmean(spreads),
            "bald_max": max(balds),
            "bald_sum": sum(balds),
            "entropy_max": max(entropies),
            "entropy_sum": sum(entropies),
        }.items():
            scores[name].append(value)
    return scores


def padded():
    heads, mask = pad_step_probabilities([torch.tensor(HEADS)[:, row, :n] for row, n in enumerate(LENGTHS)])
    return heads, heads.mean(dim=0), heads.std(dim=0), mask


def test_every_strategy_scores_as_its_formula_computed_by_hand():
    heads, mean, std, mask = padded()
    assert mask.tolist() == [[True, True, True], [True, True, False]]
    expected = by_hand()
    for strategy in STRATEGIES:
        score, first_error = trajectory_scores(strategy, mean, std, mask, heads, pred_threshold=0.9, std_threshold=0.05)
        assert score.tolist() == pytest.approx(expected[strategy], rel=1e-5, abs=1e-6), strategy
        assert first_error.tolist() == [1, -1]


def test_bald_is_zero_when_heads_agree_and_entropy_is_not():
    heads = torch.full((4, 1, 2), 0.6)
    mean, std, mask = heads.mean(0), heads.std(0), torch.ones(1, 2, dtype=torch.bool)
    assert trajectory_scores("bald_sum", mean, std, mask, heads)[0].item() == pytest.approx(0, abs=1e-6)
    assert trajectory_scores("entropy_sum", mean, std, mask, heads)[0].item() == pytest.approx(2 * entropy(0.6))


def test_actprm_score_is_above_one_exactly_where_the_rule_is_not_confident():
    generator = torch.Generator().manual_seed(0)
    mean = torch.rand(200, 6, generator=generator)
    std = torch.rand(200, 6, generator=generator) * 0.04
    mask = torch.rand(200, 6, generator=generator) < 0.8
    rule = select_confident(mean, std, mask, pred_threshold=0.8, std_threshold=0.02)
    score, _ = trajectory_scores("actprm", mean, std, mask, pred_threshold=0.8, std_threshold=0.02)
    assert 20 < int(rule.confident.sum()) < 180  # both outcomes occur
    assert torch.equal(score > 1, ~rule.confident)
    by_threshold = select(mean, std, mask, pred_threshold=0.8, std_threshold=0.02)
    assert torch.equal(by_threshold.selected, ~rule.confident)
    assert torch.equal(by_threshold.probability, by_threshold.selected.float())  # no random share: 1 or 0


def test_fixed_rate_selects_the_top_of_each_batch_and_exactly_the_budget_over_a_run():
    generator = torch.Generator().manual_seed(1)
    seen = selected = 0
    for batch in (8, 8, 5, 8, 3):
        score = torch.rand(batch, generator=generator)
        chosen, probability = acquire(score, rate=0.3, seen_before=seen)
        seen += batch
        selected += int(chosen.sum())
        assert selected == math.floor(0.3 * seen + 1e-9)
        if chosen.any() and not chosen.all():
            assert score[chosen].min() > score[~chosen].max()
        assert probability[chosen].eq(1).all()


def test_threshold_random_share_selects_the_skipped_at_that_rate_with_their_probability():
    score = torch.cat([torch.ones(100), torch.zeros(4000)])
    chosen, probability = acquire(score, threshold=0.5, random_share=0.1, generator=torch.Generator().manual_seed(2))
    assert chosen[:100].all() and probability[:100].eq(1).all() and probability[100:].eq(0.1).all()
    assert 0.085 < chosen[100:].float().mean().item() < 0.115  # 4000 draws: 0.1 +- 3 standard errors


def test_fixed_rate_random_share_draws_its_share_from_the_rest():
    score = torch.arange(20, dtype=torch.float)  # 19 is the most uncertain
    chosen, probability = acquire(score, rate=0.5, random_share=0.2, generator=torch.Generator().manual_seed(3))
    # k = 10 selected, m = floor(0.2 * 10) = 2 at random among the 20 - 8 = 12 outside the top 8
    assert int(chosen.sum()) == 10 and chosen[12:].all()
    assert int(chosen[:12].sum()) == 2
    assert probability[12:].eq(1).all() and probability[:12].tolist() == pytest.approx([2 / 12] * 12)


def test_importance_weights_make_the_loss_a_weighted_mean_over_positions(tiny_backbone):
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    model = EnsemblePRMModel.from_backbone(tiny_backbone, tokenizer=tokenizer, num_ensemble=2, head_hidden_size=8)
    logits = torch.tensor([[[0.5, 1.0, -2.0], [0.0, 2.0, 1.0]], [[-1.0, 0.3, 0.0], [1.5, -0.5, 0.2]]])  # [E, B, T]
    labels = torch.tensor([[1, -100, 0], [-100, 1, 1]])
    weights = torch.tensor([3.0, 1.0])
    _, loss, _ = model.ensemble_loss(logits, labels, weights)

    def bce(logit: float, target: int) -> float:
        p = 1 / (1 + math.exp(-logit))
        return -math.log(p if target else 1 - p)

    per_head = []
    for head in logits.tolist():
        terms = [(weights[b].item(), bce(head[b][t], labels[b, t].item())) for b in range(2) for t in range(3)
                 if labels[b, t] != -100]  # fmt: skip
        per_head.append(sum(w * x for w, x in terms) / sum(w for w, _ in terms))
    assert loss.item() == pytest.approx(statistics.fmean(per_head), rel=1e-6)
    assert model.ensemble_loss(logits, labels, torch.ones(2))[1].item() == pytest.approx(
        model.ensemble_loss(logits, labels)[1].item()
    )


def record_loss_weights(trainer) -> list[list[float]]:
    seen = []

    def hook(module, args, kwargs):
        if kwargs.get("loss_weights") is not None:
            seen.append(kwargs["loss_weights"].tolist())

    trainer.model.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


def test_fixed_rate_bald_in_pool_mode_annotates_exactly_the_budget(tiny_backbone, tmp_path):
    pool = make_arithmetic_dataset(36, seed=4)
    args = make_config(tmp_path, selection_strategy="bald_max", selection_rate=0.25)
    trainer = ActivePRMTrainer(tiny_backbone, args=args, train_dataset=pool)
    trainer.train()
    summary = trainer.active_learning_summary()
    assert (summary["seen"], summary["annotations"], summary["trained"]) == (36, 9, 9)


def test_online_random_share_trains_with_inverse_probability_weights(tiny_backbone, tmp_path):
    generated = make_arithmetic_dataset(32, seed=6)
    args = make_config(
        tmp_path, selection_strategy="entropy_sum", selection_rate=0.5, random_share=0.5, importance_weighting=True,
        judge_batch_size=4,
    )  # fmt: skip
    trainer = ActivePRMTrainer(tiny_backbone, args=args, train_dataset=unlabelled(generated), judge=ArithmeticJudge())
    weights = record_loss_weights(trainer)
    trainer.train()
    summary = trainer.active_learning_summary()
    assert summary["judge_calls"] == summary["annotations"] == 16
    # per batch of 8: 4 selected, 2 of them at random from the 6 outside the top 2: probability 1/3
    assert sorted(trainer.active.weights.values()) == [1.0] * 8 + [3.0] * 8
    assert sorted(w for batch in weights for w in batch) == [1.0] * 8 + [3.0] * 8


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"selection_strategy": "margin"}, "selection_strategy='margin' is not a selection strategy"),
        ({"selection_rate": 0.0}, r"selection_rate must be in \(0, 1\], got 0.0"),
        ({"selection_rate": 1.2}, r"selection_rate must be in \(0, 1\], got 1.2"),
        ({"selection_strategy": "bald_max"}, "'bald_max' needs uncertainty_threshold"),
        ({"random_share": 1.0}, r"random_share must be in \[0, 1\)"),
        ({"importance_weighting": True}, "importance_weighting needs random_share > 0"),
        ({"uncertainty_threshold": 0.1}, "uncertainty_threshold applies to a strategy other than `actprm`"),
    ],
)
def test_bad_selection_options_fail_in_the_config(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        ActivePRMConfig(output_dir=str(tmp_path), **options)


def test_an_ensemble_strategy_on_one_head_fails_before_any_work(tiny_backbone, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    single = EnsemblePRMModel.from_backbone(tiny_backbone, tokenizer=tokenizer, num_ensemble=1, head_hidden_size=8)
    pool = make_arithmetic_dataset(4, seed=1)
    args = make_config(tmp_path, selection_strategy="disagreement_max", selection_rate=0.5)
    with pytest.raises(ValueError, match="selection_strategy='disagreement_max' .* needs an ensemble .* has 1"):
        ActivePRMTrainer(single, args=args, train_dataset=pool, processing_class=tokenizer)
    assert not (tmp_path / "run").exists()
    entropy_args = make_config(tmp_path, selection_strategy="entropy_max", selection_rate=0.5)
    ActivePRMTrainer(single, args=entropy_args, train_dataset=pool, processing_class=tokenizer)  # one head is enough


def test_filter_keeps_the_most_spread_share_of_each_shard(tiny_backbone, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    torch.manual_seed(0)
    model = EnsemblePRMModel.from_backbone(tiny_backbone, tokenizer=tokenizer, num_ensemble=3, head_hidden_size=8)
    scorer = StepScorer(model, tokenizer)
    pool = make_arithmetic_dataset(20, seed=9)
    pool.to_json(tmp_path / "pool.jsonl")
    summary = filter_pool(scorer, tmp_path / "pool.jsonl", output_dir=tmp_path / "out", strategy="disagreement_max",
                          selection_rate=0.25, show_progress=False)  # fmt: skip
    assert (summary["seen"], summary["kept"], summary["strategy"]) == (20, 5, "disagreement_max")
    results = scorer.score(pool, show_progress=False)
    spread = {}
    for item_id, result in zip(pool["id"], results):
        mean, std = result["scores"], result["stds"]
        first_error = next((t for t, p in enumerate(mean) if p < 0.5), len(mean) - 1)
        spread[item_id] = max(std[: first_error + 1])
    kept = set(load_steps(tmp_path / "out" / "data")["id"])
    assert min(spread[i] for i in kept) > max(spread[i] for i in spread if i not in kept)
    with pytest.raises(ValueError, match="'bald_sum' needs every head's probability"):
        filter_pool(scorer, tmp_path / "pool.jsonl", output_dir=tmp_path / "x", strategy="bald_sum", selection_rate=0.5)



@pytest.mark.parametrize(
    "thresholds, message",
    [({"pred_threshold": 0.5}, r"pred_threshold must be in \(0.5, 1\], got 0.5"),
     ({"std_threshold": -0.1}, "std_threshold must be >= 0, got -0.1")],
)  # fmt: skip
def test_every_entry_point_checks_the_confidence_thresholds_by_one_rule(thresholds, message, tmp_path):
    from actprm.filtering import filter_selection
    from actprm.quickstart import QuickstartConfig
    from actprm.selection import SelectionSettings

    options = {"pred_threshold": 0.9, "std_threshold": 0.01, **thresholds}
    for build in (
        lambda: SelectionSettings(**options),
        lambda: ActivePRMConfig(output_dir=str(tmp_path), report_to="none", **options),
        lambda: filter_selection("actprm", options["pred_threshold"], options["std_threshold"]),
        lambda: QuickstartConfig(**options),
    ):
        with pytest.raises(ValueError, match=message):
            build()
