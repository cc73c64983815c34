"""The embedded default backbone: shipped, rebuildable, and a starting point a PRM learns from quickly."""

import collections
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from actprm.data import make_arithmetic_dataset
from actprm.default_backbone import build_default_backbone, default_backbone
from actprm.metrics import first_error_from_scores, processbench_scores
from actprm.modeling import EnsemblePRMModel
from actprm.tokenization import DEFAULT_SEPARATOR, StepDataCollator, StepTokenizer

# ---------------------------------------------------------------------------------------------
# The shipped backbone


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_backbone())


def test_default_backbone_loads_like_a_hub_checkpoint(tokenizer):
    model = AutoModelForCausalLM.from_pretrained(default_backbone())
    assert model.config.model_type == "qwen2" and model.get_input_embeddings().num_embeddings == len(tokenizer)
    separator_id = tokenizer.convert_tokens_to_ids(DEFAULT_SEPARATOR)
    assert DEFAULT_SEPARATOR in tokenizer.all_special_tokens
    assert tokenizer(f"1 + 2 = 3.{DEFAULT_SEPARATOR}", add_special_tokens=False)["input_ids"][-1] == separator_id
    assert tokenizer.tokenize("127") == ["1", "2", "7"]
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Check this."}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == "<|im_start|>user\nCheck this.<|im_end|>\n<|im_start|>assistant\n"
    shipped = [path for path in Path(default_backbone()).iterdir()]
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= {path.name for path in shipped}
    assert sum(path.stat().st_size for path in shipped) < 2_000_000


def test_default_backbone_has_learned_the_arithmetic(tokenizer):
    """Greedy next-token accuracy on the results of correct test solutions (about 0.1 untrained)."""
    model = AutoModelForCausalLM.from_pretrained(default_backbone()).eval()
    rows = make_arithmetic_dataset(100, split="test", error_rate=0.0)
    step_tokenizer = StepTokenizer(tokenizer, DEFAULT_SEPARATOR)
    batch = StepDataCollator(tokenizer)([step_tokenizer(row) for row in rows])
    with torch.no_grad():
        predicted = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.argmax(-1)
    equals = tokenizer.convert_tokens_to_ids("Ġ=")
    hits = total = 0
    for ids, guesses in zip(batch["input_ids"].tolist(), predicted.tolist()):
        for position in [i for i, token in enumerate(ids) if token == equals]:
            end = ids.index(tokenizer.convert_tokens_to_ids("."), position)
            # the digits of the result, each predicted from the tokens before it
            hits += sum(guesses[i - 1] == ids[i] for i in range(position + 2, end))
            total += end - position - 2
    assert total > 500 and hits / total > 0.9


def test_build_default_backbone_is_reproducible(tmp_path):
    built = [
        build_default_backbone(tmp_path / name, seed=seed, language_modeling_steps=2, detection_steps=2, batch_size=4)
        for name, seed in (("a", 0), ("b", 0), ("c", 1))
    ]
    weights = [load_file(path / "model.safetensors") for path in built]
    assert weights[0].keys() == weights[1].keys() == weights[2].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    assert not torch.equal(weights[0]["model.embed_tokens.weight"], weights[2]["model.embed_tokens.weight"])
    rebuilt = AutoTokenizer.from_pretrained(built[0])
    assert rebuilt.get_vocab() == AutoTokenizer.from_pretrained(default_backbone()).get_vocab()
    assert AutoModelForCausalLM.from_pretrained(built[0]).config.num_hidden_layers == 4


# ---------------------------------------------------------------------------------------------
# Learnability


def _first_errors(model, step_tokenizer, collator, rows) -> list[int]:
    batch = collator([step_tokenizer(row) for row in rows])
    scores = model.step_scores(batch["input_ids"], attention_mask=batch["attention_mask"])
    return [first_error_from_scores(mean.tolist()) for mean, _ in scores]


def test_a_short_supervised_run_beats_trivial_predictors(tokenizer):
    """250 steps of plain supervision from the shipped backbone."""
    torch.manual_seed(0)
    model = EnsemblePRMModel.from_backbone(default_backbone(), tokenizer=tokenizer, num_ensemble=4)
    step_tokenizer, collator = StepTokenizer(tokenizer, DEFAULT_SEPARATOR), StepDataCollator(tokenizer)
    train = [step_tokenizer(row) for row in make_arithmetic_dataset(1000, error_rate=0.7)]
    test = make_arithmetic_dataset(300, split="test")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    model.train()
    for step in range(250):
        loss = model(**collator(train[16 * step % 1000 : 16 * step % 1000 + 16])).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    predicted = _first_errors(model, step_tokenizer, collator, test)
    scores = processbench_scores(predicted, test["label"])
    # Trivial predictors: "all correct" has error_acc 0 (F1 NaN), "first step wrong" has correct_acc 0.
    assert scores["f1"] > 0.6, scores
    per_kind = collections.defaultdict(list)
    for kind, guess, label in zip(test["error_kind"], predicted, test["label"]):
        per_kind[kind].append(guess == label)
    accuracy = {kind: sum(hits) / len(hits) for kind, hits in per_kind.items()}
    # Pretraining put every kind of error within reach, wrong arithmetic included.
    assert all(accuracy[kind] > 0.5 for kind in ("none", "wrong_operand", "dropped_quantity", "wrong_result")), str(accuracy)
