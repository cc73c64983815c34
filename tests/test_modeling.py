"""The ensemble PRM: loss, step scores, save/load, backbones, and the ActPRM release checkpoint format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub.errors import StrictDataclassClassValidationError
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2Model,
)

from actprm.features import backbone_fingerprint
from actprm.modeling import EnsemblePRMConfig, EnsemblePRMModel, add_separator_token

SEPARATOR_ID = 5
NUM_HEADS = 4
TINY_DECODER = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


def tiny_qwen2_config(vocab_size: int = 40) -> Qwen2Config:
    return Qwen2Config(vocab_size=vocab_size, pad_token_id=0, **TINY_DECODER)


def tiny_model(seed: int = 0, **ensemble_options) -> EnsemblePRMModel:
    torch.manual_seed(seed)
    options = {"num_ensemble": NUM_HEADS, "head_hidden_size": 8, "separator_token_id": SEPARATOR_ID} | ensemble_options
    return EnsemblePRMModel(EnsemblePRMConfig(backbone_config=tiny_qwen2_config(), **options))


def batch_with_steps(seed: int = 1) -> dict[str, torch.Tensor]:
    """Two rows of 12 tokens; row 0 has 3 steps, row 1 has 2 steps then right padding."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(6, 40, (2, 12), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    input_ids[0, [3, 7, 11]] = SEPARATOR_ID
    input_ids[1, [4, 8]] = SEPARATOR_ID
    input_ids[1, 9:] = 0
    attention_mask[1, 9:] = 0
    labels = torch.full_like(input_ids, -100)
    labels[0, [3, 7, 11]] = torch.tensor([1, 1, 0])
    labels[1, [4, 8]] = torch.tensor([1, 0])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def manual_classification_loss(logits: torch.Tensor, labels: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Mean over heads with a kept position of each head's mean BCE; `kept` is [E, B] per (head, sample)."""
    per_head = []
    for head in range(logits.shape[0]):
        losses = [
            F.binary_cross_entropy(torch.sigmoid(logits[head, row, col]), labels[row, col].float())
            for row, col in (labels != -100).nonzero().tolist()
            if kept[head, row]
        ]
        if losses:
            per_head.append(torch.stack(losses).mean())
    return torch.stack(per_head).mean() if per_head else torch.tensor(0.0)


def assert_same_parameters(first: torch.nn.Module, second: torch.nn.Module) -> None:
    first_state, second_state = first.state_dict(), second.state_dict()
    assert first_state.keys() == second_state.keys()
    for key, value in first_state.items():
        assert torch.equal(value, second_state[key]), key


def config_fields(config: EnsemblePRMConfig) -> dict:
    """The config as a dict, without what loading sets (the source path and the resolved dtype)."""
    fields = config.to_dict()
    for level in (fields, fields["backbone_config"]):
        level.pop("_name_or_path")
        level.pop("dtype")
    return fields


def test_forward_shapes_and_loss_match_manual_bce():
    model = tiny_model().eval()
    batch = batch_with_steps()

    output = model(**batch)

    assert output.logits.shape == (NUM_HEADS, 2, 12)
    assert output.logits.dtype == torch.float32
    expected = manual_classification_loss(output.logits, batch["labels"], torch.ones(NUM_HEADS, 2, dtype=torch.bool))
    torch.testing.assert_close(output.classification_loss, expected)
    assert output.regularization_loss.item() == 0.0
    torch.testing.assert_close(output.loss, output.classification_loss)
    assert model(batch["input_ids"], attention_mask=batch["attention_mask"]).loss is None


def test_heads_differ_and_init_is_deterministic_given_the_seed():
    first, second = tiny_model(seed=3), tiny_model(seed=3)
    assert_same_parameters(first, second)
    logits = first(**batch_with_steps()).logits
    assert not torch.allclose(logits[0], logits[1])


def test_learning_probability_masks_head_sample_pairs_in_training_only():
    model = tiny_model(num_ensemble=16, learning_probability=0.5)
    torch.manual_seed(0)
    labels = torch.full((8, 3), -100)
    labels[:, 1] = torch.randint(0, 2, (8,))
    logits = torch.randn(16, 8, 3, requires_grad=True)

    def kept_pairs_and_loss(training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        model.train(training)
        logits.grad = None
        loss, classification_loss, _ = model.ensemble_loss(logits, labels)
        loss.backward()
        assert logits.grad[:, :, [0, 2]].abs().sum() == 0  # unlabelled positions never count
        return logits.grad[:, :, 1] != 0, classification_loss

    kept, loss = kept_pairs_and_loss(training=True)
    assert 0.3 < kept.float().mean() < 0.7
    assert len({tuple(row) for row in kept.tolist()}) > 1  # heads see different samples
    torch.testing.assert_close(loss, manual_classification_loss(logits, labels, kept))

    kept, loss = kept_pairs_and_loss(training=False)
    assert kept.all()
    torch.testing.assert_close(loss, manual_classification_loss(logits, labels, kept))


def test_heads_without_samples_are_left_out_of_the_mean():
    model = tiny_model(num_ensemble=2).train()
    labels = torch.tensor([[1, -100], [-100, 0]])
    logits = torch.randn(2, 2, 2)

    model.config.learning_probability = 1e-9  # no head keeps any sample
    loss, classification_loss, _ = model.ensemble_loss(logits, labels)
    assert classification_loss.item() == 0.0 and torch.isfinite(loss)

    model.config.learning_probability = 1.0
    _, classification_loss, _ = model.ensemble_loss(logits, torch.full_like(labels, -100))
    assert classification_loss.item() == 0.0


def test_regularization_is_zero_at_init_and_grows_after_a_head_update():
    model = tiny_model(regularization_lambda=0.5).train()
    batch = batch_with_steps()
    anchor_before = {k: v.clone() for k, v in model.score.reg_model.state_dict().items()}
    assert model(**batch).regularization_loss.item() == 0.0

    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(**batch).loss.backward()
    assert not any(anchor.requires_grad for anchor in model.score.reg_model.buffers())
    optimizer.step()

    output = model(**batch)
    trained, anchor = model.score.model.state_dict(), model.score.reg_model.state_dict()
    squared = sum(((trained[k] - anchor[k]) ** 2).sum() for k in trained)
    expected = squared / sum(v.numel() for v in trained.values())
    assert output.regularization_loss.item() > 0
    torch.testing.assert_close(output.regularization_loss, expected)
    torch.testing.assert_close(output.loss, output.classification_loss + 0.5 * output.regularization_loss)
    assert all(torch.equal(value, anchor_before[key]) for key, value in anchor.items())


def test_step_scores_equal_manual_mean_and_std():
    model = tiny_model().eval()
    batch = batch_with_steps()
    probabilities = torch.sigmoid(model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits)

    scores = model.step_scores(batch["input_ids"], attention_mask=batch["attention_mask"])
    torch.testing.assert_close(
        model.ensemble_probabilities(batch["input_ids"], attention_mask=batch["attention_mask"]), probabilities
    )

    assert len(scores) == 2
    for row, positions in enumerate([[3, 7, 11], [4, 8]]):
        mean, std = scores[row]
        steps = probabilities[:, row, positions]
        torch.testing.assert_close(mean, steps.mean(dim=0))
        torch.testing.assert_close(std, steps.std(dim=0, unbiased=True))


def test_step_scores_needs_the_separator_id():
    model = tiny_model(separator_token_id=None)
    with pytest.raises(ValueError, match="separator_token_id"):
        model.step_scores(batch_with_steps()["input_ids"])


def test_save_and_load_round_trip_exactly_and_through_automodel(tmp_path):
    model = tiny_model(learning_probability=0.5, regularization_lambda=0.25).train()
    batch = batch_with_steps()
    model(**batch).loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5).step()  # heads leave the anchor
    model.eval()
    model.save_pretrained(tmp_path)

    for loaded in (EnsemblePRMModel.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
        assert type(loaded) is EnsemblePRMModel
        assert_same_parameters(model, loaded)
        assert not any(anchor.requires_grad for anchor in loaded.score.reg_model.buffers())
        assert config_fields(loaded.config) == config_fields(model.config)
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)
    assert type(AutoConfig.from_pretrained(tmp_path)) is EnsemblePRMConfig


def test_load_with_dtype_and_device_map(tmp_path):
    model = tiny_model().eval()
    model.save_pretrained(tmp_path)
    batch = batch_with_steps()

    on_cpu = EnsemblePRMModel.from_pretrained(tmp_path, device_map="cpu")
    torch.testing.assert_close(on_cpu(**batch).logits, model(**batch).logits)

    in_bf16 = EnsemblePRMModel.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert {tensor.dtype for tensor in in_bf16.state_dict().values() if tensor.is_floating_point()} == {torch.bfloat16}
    output = in_bf16(**batch)
    assert output.logits.dtype == output.loss.dtype == torch.float32
    torch.testing.assert_close(torch.sigmoid(output.logits), torch.sigmoid(model(**batch).logits), atol=0.02, rtol=0)


def test_bf16_forward_and_backward():
    model = tiny_model().to(torch.bfloat16).train()
    output = model(**batch_with_steps())
    assert output.logits.dtype == torch.float32 and torch.isfinite(output.loss)
    output.loss.backward()
    assert model.score.model.nn1.weight.grad.dtype == torch.bfloat16


def test_gradient_checkpointing_trains_a_step_with_the_same_gradients():
    batch = batch_with_steps()
    reference, checkpointed = tiny_model(), tiny_model()
    checkpointed.activation_checkpointing_enable()
    assert checkpointed.is_activation_checkpointing
    assert all(layer.gradient_checkpointing for layer in checkpointed.model.layers)

    for model in (reference, checkpointed):
        model.train()
        model(**batch).loss.backward()
    for (name, expected), actual in zip(reference.named_parameters(), checkpointed.parameters()):
        if expected.requires_grad:
            torch.testing.assert_close(actual.grad, expected.grad, msg=name)

    before = checkpointed.model.layers[0].mlp.up_proj.weight.detach().clone()
    torch.optim.SGD([p for p in checkpointed.parameters() if p.requires_grad], lr=0.1).step()
    assert not torch.equal(before, checkpointed.model.layers[0].mlp.up_proj.weight)


def test_config_validation_and_missing_backbone():
    with pytest.raises(StrictDataclassClassValidationError, match="learning_probability"):
        EnsemblePRMConfig(backbone_config=tiny_qwen2_config(), learning_probability=0)
    with pytest.raises(StrictDataclassClassValidationError, match="separator_token_id"):
        EnsemblePRMConfig(backbone_config=tiny_qwen2_config(vocab_size=10), separator_token_id=10)
    with pytest.raises(ValueError, match="backbone_config"):
        EnsemblePRMModel(EnsemblePRMConfig())
    config = EnsemblePRMConfig(backbone_config=tiny_qwen2_config().to_dict())
    assert type(config.backbone_config) is Qwen2Config
    assert config.get_text_config() is config.backbone_config


def test_from_backbone_on_the_tiny_backbone(tiny_backbone):
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    vocabulary_size = len(tokenizer)
    model = EnsemblePRMModel.from_backbone(tiny_backbone, tokenizer=tokenizer, num_ensemble=3, head_hidden_size=16)

    assert len(tokenizer) == vocabulary_size  # the separator was already there
    assert model.config.separator_token_id == tokenizer.convert_tokens_to_ids("<extra_0>")
    assert (model.config.num_ensemble, model.config.head_hidden_size) == (3, 16)
    assert model.score.model.nn1.weight.shape == (3, model.config.backbone_config.hidden_size, 16)
    assert_same_parameters(model.model, Qwen2ForCausalLM.from_pretrained(tiny_backbone).model)
    assert_same_parameters(model.score.model, model.score.reg_model)

    separator = model.config.separator
    encoded = tokenizer([f"1 + 2 = 3{separator}3 * 4 = 12{separator}12 - 5 = 7{separator}"], return_tensors="pt")
    scores = model.step_scores(encoded["input_ids"], attention_mask=encoded["attention_mask"])
    assert scores[0][0].shape == scores[0][1].shape == (3,)
    assert ((scores[0][0] > 0) & (scores[0][0] < 1)).all()


@pytest.fixture
def llama_without_separator(tmp_path) -> Path:
    """A tiny Llama causal LM saved with a word-level tokenizer that has no separator token."""
    # more words than hidden units, as in a real LM: transformers' resizing would draw the new row at random
    words = ["[UNK]", "[PAD]", *"0123456789", "+", "-", "=", "step", *(f"word{i}" for i in range(48))]
    backend = Tokenizer(models.WordLevel({word: i for i, word in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")
    config = LlamaConfig(vocab_size=len(words), pad_token_id=1, **TINY_DECODER)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "llama")
    tokenizer.save_pretrained(tmp_path / "llama")
    return tmp_path / "llama"


def test_from_backbone_adds_the_separator_and_resizes_embeddings(llama_without_separator, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(llama_without_separator)
    original_size = len(tokenizer)
    pretrained = LlamaForCausalLM.from_pretrained(llama_without_separator).model

    model = EnsemblePRMModel.from_backbone(llama_without_separator, tokenizer=tokenizer, num_ensemble=2)

    assert len(tokenizer) == original_size + 1
    assert model.config.separator_token_id == tokenizer.convert_tokens_to_ids("<extra_0>") == original_size
    assert tokenizer("1 + 2<extra_0>")["input_ids"][-1] == original_size
    assert type(model.model).__name__ == "LlamaModel"
    embeddings = model.get_input_embeddings().weight
    assert embeddings.shape[0] == model.config.backbone_config.vocab_size == original_size + 1
    assert torch.equal(embeddings[:original_size], pretrained.embed_tokens.weight)
    # the separator's new row is the mean embedding, drawn from no random state
    torch.testing.assert_close(embeddings[original_size], pretrained.embed_tokens.weight.double().mean(0).float())
    torch.testing.assert_close(model.model.layers[1].mlp.up_proj.weight, pretrained.layers[1].mlp.up_proj.weight)

    model.save_pretrained(tmp_path / "prm")
    assert_same_parameters(model, EnsemblePRMModel.from_pretrained(tmp_path / "prm"))

    torch.manual_seed(1)  # another random state: the same backbone, so cached step features stay valid
    without_tokenizer = EnsemblePRMModel.from_backbone(llama_without_separator, num_ensemble=2)
    assert without_tokenizer.config.separator_token_id == original_size
    assert backbone_fingerprint(without_tokenizer) == backbone_fingerprint(model)
    fresh = AutoTokenizer.from_pretrained(llama_without_separator)
    assert add_separator_token(fresh, "<extra_0>") == original_size


def test_a_plain_causal_lm_checkpoint_points_to_from_backbone(tiny_backbone):
    with pytest.raises(ValueError, match="from_backbone"):
        EnsemblePRMModel.from_pretrained(tiny_backbone)


# ----- the checkpoint format released with the paper (sail/ActPRM, sail/ActPRM-X) -----

RELEASE_HEADS, RELEASE_HEAD_WIDTH, RELEASE_SEPARATOR_ID = 3, 12, 7


@pytest.fixture
def release_checkpoint(tmp_path) -> Path:
    """A tiny checkpoint with the release's key layout and Qwen2-style config (head width only in the weights)."""
    backbone_config = tiny_qwen2_config()
    torch.manual_seed(0)
    backbone = Qwen2Model(backbone_config)
    generator = torch.Generator().manual_seed(1)

    def heads(scale: float) -> dict[str, torch.Tensor]:
        shapes = {"nn1": (32, RELEASE_HEAD_WIDTH), "nn2": (RELEASE_HEAD_WIDTH, RELEASE_HEAD_WIDTH), "nn_out": (12, 1)}
        tensors = {}
        for name, (fan_in, fan_out) in shapes.items():
            tensors[f"{name}.weight"] = torch.randn(RELEASE_HEADS, fan_in, fan_out, generator=generator) * scale
            tensors[f"{name}.bias"] = torch.randn(RELEASE_HEADS, fan_out, generator=generator) * 0.1
        return tensors

    state = {f"model.{key}": value.contiguous() for key, value in backbone.state_dict().items()}
    state |= {f"score.model.{key}": value for key, value in heads(0.5).items()}
    state |= {f"score.reg_model.{key}": value for key, value in heads(0.3).items()}
    folder = tmp_path / "actprm-release"
    folder.mkdir()
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    config = backbone_config.to_dict() | {
        "architectures": ["Qwen2ForEnsemblePRM"],
        "model_type": "qwen2",
        "torch_dtype": "float32",
        "problem_type": "single_label_classification",
        "num_ensemble": RELEASE_HEADS,
        "learning_probability": 0.5,
        "regularization_lambda": 0.1,
        "rr_token": "<extra_0>",
        "rr_token_id": RELEASE_SEPARATOR_ID,
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def release_step_scores(folder: Path, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list:
    """The release architecture's scores, computed independently: Qwen2Model + per-head ReLU MLPs."""
    from safetensors.torch import load_file

    state = load_file(folder / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    backbone = Qwen2Model(Qwen2Config(**{k: v for k, v in config.items() if k != "model_type"})).eval()
    backbone.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    with torch.no_grad():
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def head_probability(head: int) -> torch.Tensor:
        def layer(x: torch.Tensor, name: str) -> torch.Tensor:
            return x @ state[f"score.model.{name}.weight"][head] + state[f"score.model.{name}.bias"][head]

        return torch.sigmoid(layer(torch.relu(layer(torch.relu(layer(hidden, "nn1")), "nn2")), "nn_out").squeeze(-1))

    probabilities = [head_probability(head) for head in range(config["num_ensemble"])]
    probabilities = torch.stack(probabilities)
    at_separator = (input_ids == config["rr_token_id"]) & attention_mask.bool()
    return [
        (probabilities[:, row, at_separator[row]].mean(0), probabilities[:, row, at_separator[row]].std(0))
        for row in range(input_ids.shape[0])
    ]


def test_actprm_release_checkpoint_loads_and_scores_like_the_release_architecture(release_checkpoint):
    model = EnsemblePRMModel.from_pretrained(release_checkpoint)

    config = model.config
    assert (config.num_ensemble, config.head_hidden_size) == (RELEASE_HEADS, RELEASE_HEAD_WIDTH)
    assert (config.separator, config.separator_token_id) == ("<extra_0>", RELEASE_SEPARATOR_ID)
    assert (config.learning_probability, config.regularization_lambda) == (0.5, 0.1)
    assert config.backbone_config.model_type == "qwen2"

    input_ids = torch.randint(8, 40, (2, 15), generator=torch.Generator().manual_seed(2))
    input_ids[:, [4, 9]] = RELEASE_SEPARATOR_ID
    input_ids[0, 14] = RELEASE_SEPARATOR_ID
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 11:] = 0
    expected = release_step_scores(release_checkpoint, input_ids, attention_mask)

    actual = model.step_scores(input_ids, attention_mask=attention_mask)
    assert [len(mean) for mean, _ in actual] == [3, 2]
    for (mean, std), (expected_mean, expected_std) in zip(actual, expected):
        torch.testing.assert_close(mean, expected_mean, atol=1e-5, rtol=0)
        torch.testing.assert_close(std, expected_std, atol=1e-5, rtol=0)

    # the anchor was loaded, not re-initialised: the heads start away from it
    assert model.score.regularization().item() > 0.01
