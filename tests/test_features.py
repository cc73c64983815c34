"""Cached step features and the hidden layer the heads read: heads on a frozen backbone, trained in seconds."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from huggingface_hub.errors import StrictDataclassClassValidationError
from safetensors.torch import save_file
from test_modeling import batch_with_steps, tiny_model, tiny_qwen2_config
from test_trainer import make_config

from actprm import ActivePRMTrainer, ArithmeticJudge, EnsemblePRMConfig, StepScorer, make_arithmetic_dataset
from actprm.features import (
    StepFeatureCache,
    StepFeatureCollator,
    backbone_fingerprint,
    compute_step_features,
    step_feature_rows,
    trajectory_key,
)
from actprm.tokenization import step_labels_for_training


def real_rows(batch: dict[str, torch.Tensor]) -> list[list[int]]:
    """The token ids of each row of a padded batch, without padding."""
    return [ids[mask.bool()].tolist() for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]


def test_the_heads_read_the_chosen_hidden_layer():
    batch = batch_with_steps()
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    model = tiny_model().eval()
    hidden = model.model(**inputs, output_hidden_states=True).hidden_states
    for layer in (0, 1, 2, -1):
        model.config.hidden_layer = layer
        with torch.no_grad():
            torch.testing.assert_close(model(**inputs).logits, model.score(hidden[layer]).float())
    model.config.hidden_layer = 1
    assert not torch.allclose(model(**inputs).logits, model.score(hidden[2]).float())
    with pytest.raises(StrictDataclassClassValidationError, match="hidden_layer 3 is outside"):
        EnsemblePRMConfig(backbone_config=tiny_qwen2_config(), hidden_layer=3)


@pytest.mark.parametrize("layer", [1, -1])
def test_cached_features_give_the_scores_of_the_full_model(tmp_path, layer):
    batch = batch_with_steps()
    model = tiny_model(hidden_layer=layer).eval()
    cache = StepFeatureCache(tmp_path, backbone=backbone_fingerprint(model))
    rows = real_rows(batch)
    assert compute_step_features(model, rows, cache, [1, -1], batch_size=1, shard_size=1) == 2
    assert compute_step_features(model, rows, cache, [1, -1]) == 0  # all cached: nothing runs again
    assert len(list(tmp_path.glob("features-*.safetensors"))) == 2

    reopened = StepFeatureCache(tmp_path, backbone=backbone_fingerprint(model))
    collate = StepFeatureCollator(reopened, layer=1 if layer == 1 else 2)
    features = collate([{"feature_key": trajectory_key(ids)} for ids in rows])
    assert features["step_features"].shape == (2, 3, 32) and features["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    from_features = model.step_scores(attention_mask=features["attention_mask"], step_features=features["step_features"])
    from_tokens = model.step_scores(batch["input_ids"], batch["attention_mask"])
    for (mean, std), (expected_mean, expected_std) in zip(from_features, from_tokens):
        torch.testing.assert_close(mean, expected_mean, atol=1e-5, rtol=0)
        torch.testing.assert_close(std, expected_std, atol=1e-5, rtol=0)


def test_features_computed_under_bf16_autocast_are_float32_and_close_to_float32_ones(tmp_path):
    model, rows = tiny_model().eval(), real_rows(batch_with_steps())
    exact, autocast = StepFeatureCache(tmp_path / "fp32"), StepFeatureCache(tmp_path / "bf16")
    compute_step_features(model, rows, exact, [-1])
    compute_step_features(model, rows, autocast, [-1], autocast_dtype=torch.bfloat16)
    for ids in rows:
        expected, got = exact.get(trajectory_key(ids), 2), autocast.get(trajectory_key(ids), 2)
        assert got.dtype == torch.float32 and not torch.equal(got, expected)
        torch.testing.assert_close(got, expected, atol=0.05, rtol=0.05)


def test_a_cache_of_another_backbone_or_a_corrupt_shard_is_refused(tmp_path):
    model, other = tiny_model(seed=0), tiny_model(seed=1)
    compute_step_features(model, real_rows(batch_with_steps()), StepFeatureCache(tmp_path / "a", backbone_fingerprint(model)), [1])
    with pytest.raises(ValueError, match=r"features-00000\.safetensors: step features of backbone"):
        StepFeatureCache(tmp_path / "a", backbone=backbone_fingerprint(other))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "features-00000.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="features-00000.safetensors: not a readable step-feature shard"):
        StepFeatureCache(tmp_path / "b")
    save_file({"x": torch.zeros(1)}, tmp_path / "b" / "features-00000.safetensors")
    with pytest.raises(ValueError, match="not a step-feature shard"):
        StepFeatureCache(tmp_path / "b")


def test_trainer_on_cached_features_trains_the_heads_only(tiny_backbone, tmp_path):
    pool = make_arithmetic_dataset(24, seed=2)
    args = make_config(
        tmp_path, selection="uncertainty", std_threshold=0.0, hidden_layer=1, step_features_dir=str(tmp_path / "cache"),
        num_train_epochs=2,
    )
    trainer = ActivePRMTrainer(tiny_backbone, args=args, train_dataset=pool, eval_dataset=pool.select(range(8)))
    model = trainer.model
    backbone_before = {k: v.clone() for k, v in model.model.state_dict().items()}
    heads_before = {k: v.clone() for k, v in model.score.model.state_dict().items()}
    forwards, modes = [], set()
    model.model.register_forward_pre_hook(lambda module, args: forwards.append(1))
    model.score.register_forward_pre_hook(lambda module, args: modes.add((module.training, model.model.training)))

    trainer.train()
    metrics = trainer.evaluate()

    assert forwards == []  # selection, training and evaluation read the cache: the backbone never runs
    assert modes == {(True, False), (False, False)}  # the heads train and score; the frozen backbone stays in eval
    summary = trainer.active_learning_summary()
    assert summary["selected"] == summary["trained"] == 48 and summary["annotations"] == 24
    assert "eval_f1" in metrics
    for key, value in model.model.state_dict().items():
        assert torch.equal(value, backbone_before[key]), key
    assert any(not torch.equal(v, heads_before[k]) for k, v in model.score.model.state_dict().items())

    # The trained PRM reads layer 1 of its backbone: saved and scored from text, it gives the cache's scores.
    trainer.save_model()
    scorer = StepScorer.from_pretrained(args.output_dir)
    assert scorer.model.config.hidden_layer == 1
    records = [pool[i] for i in range(4)]
    cached = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    expected = model.step_scores(attention_mask=cached["attention_mask"], step_features=cached["step_features"])
    for result, (mean, _) in zip(scorer.score(records, show_progress=False), expected):
        torch.testing.assert_close(torch.tensor(result["scores"]), mean, atol=1e-5, rtol=0)


def test_cached_features_cannot_be_combined_with_peft(tiny_backbone, tmp_path):
    pytest.importorskip("peft")
    from peft import LoraConfig

    args = make_config(tmp_path, step_features_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="choose one"):
        ActivePRMTrainer(tiny_backbone, args=args, train_dataset=make_arithmetic_dataset(4, seed=0), peft_config=LoraConfig())


def test_step_feature_rows_keep_one_label_per_step():
    batch = batch_with_steps()
    labels = [row[mask.bool()].tolist() for row, mask in zip(batch["labels"], batch["attention_mask"])]
    rows = Dataset.from_dict({"input_ids": real_rows(batch), "labels": labels})
    keyed = step_feature_rows(rows, separator_token_id=5)
    assert keyed["labels"] == [[1, 1, 0], [1, 0]]
    assert keyed["feature_key"] == [trajectory_key(ids) for ids in real_rows(batch)]


def test_online_mode_on_cached_features_trains_on_the_judges_step_labels(tiny_backbone, tmp_path):
    generated = make_arithmetic_dataset(16, seed=6)
    unlabelled = generated.map(lambda row: {"label": None, "step_labels": None})
    args = make_config(tmp_path, selection="all", judge_batch_size=8, step_features_dir=str(tmp_path / "cache"))
    trainer = ActivePRMTrainer(tiny_backbone, args=args, train_dataset=unlabelled, judge=ArithmeticJudge())
    batches = []
    original = trainer.compute_loss

    def record(model, inputs, **kwargs):
        batches.append({key: inputs[key].clone() for key in ("labels", "attention_mask")})
        return original(model, inputs, **kwargs)

    trainer.compute_loss = record
    trainer.train()

    assert trainer.active_learning_summary()["judge_calls"] == 16
    truth = {tuple(step_labels_for_training(row)) for row in generated}
    trained = {
        tuple(labels[mask.bool()].tolist())
        for batch in batches
        for labels, mask in zip(batch["labels"], batch["attention_mask"])
    }
    assert trained == truth  # one label per step, the judge's (the arithmetic judge is exact)
