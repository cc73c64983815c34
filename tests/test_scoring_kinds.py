"""StepScorer on the released PRM families: step-tag LMs (Math-Shepherd, RLHFlow), Skywork value heads, and
TRL's prompt truncation. Each tiny model is built here in its family's layout and saved; the expected scores
follow each family's own inference recipe, written out in the test, not computed by the code under test."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer

from actprm import load_steps
from actprm.scoring import STEP_TAG_PRESETS, StepScorer, StepTagFormat, ValueHeadPRM

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def items(processbench_data):
    """Three real GSM8K solutions of ProcessBench."""
    return list(load_steps(processbench_data / "gsm8k.json").select(range(3)))


@pytest.fixture(scope="module")
def math_shepherd_dir(random_backbone, tmp_path_factory):
    """A causal LM whose tokenizer has Math-Shepherd's step tag ``ки`` as one token."""
    path = tmp_path_factory.mktemp("math-shepherd")
    tokenizer = AutoTokenizer.from_pretrained(random_backbone)
    tokenizer.add_tokens(["ки"])
    model = AutoModelForCausalLM.from_pretrained(random_backbone)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _good_share(logits: torch.Tensor, good: int, bad: int) -> float:
    pair = logits[[good, bad]].double()
    return (pair.exp()[0] / pair.exp().sum()).item()


def _step_tag_run(path, preset, items):
    """The scorer's results, and the checkpoint loaded afresh as a plain causal LM with its ``+``/``-`` ids."""
    scorer = StepScorer.from_pretrained(path, step_tag_format=preset)
    results = scorer.score(items, batch_size=2, show_progress=False)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    return scorer, results, tokenizer, model, tokenizer.convert_tokens_to_ids(["+", "-"])


def test_math_shepherd_scores_follow_the_released_recipe(math_shepherd_dir, items):
    scorer, results, tokenizer, model, (good, bad) = _step_tag_run(math_shepherd_dir, "math_shepherd", items)
    tag = tokenizer.convert_tokens_to_ids("ки")
    for item, result in zip(items, results):
        # Math-Shepherd's usage example: f"{question} {output}", steps ending in " ки", joined by newlines
        text = item["problem"] + " " + "\n".join(step + " ки" for step in item["steps"])
        input_ids = tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(input_ids).logits[0]
        expected = [_good_share(logits[i], good, bad) for i in (input_ids[0] == tag).nonzero()[:, 0].tolist()]
        assert len(expected) == len(item["steps"])
        assert result["scores"] == pytest.approx(expected, abs=TOLERANCE)
        assert result["stds"] is None
    assert scorer.kind == "step_tag" and scorer.settings["step_tag_format"]["step_tag"] == "ки"


def test_rlhflow_scores_equal_the_turn_by_turn_protocol(random_backbone, items):
    """ProcessBench's RLHFlow script asks turn by turn; the scorer reads every turn of one pass."""
    _, results, tokenizer, model, (good, bad) = _step_tag_run(random_backbone, "rlhflow", items)
    for item, result in zip(items, results):
        messages, expected = [], []
        for index, step in enumerate(item["steps"]):
            messages.append({"role": "user", "content": item["problem"] + "\n\n" + step if index == 0 else step})
            prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
            with torch.no_grad():
                logits = model(torch.tensor([prompt["input_ids"]])).logits[0, -1]
            expected.append(_good_share(logits, good, bad))
            messages.append({"role": "assistant", "content": "+"})
        assert result["scores"] == pytest.approx(expected, abs=TOLERANCE)


def test_custom_step_tag_format(math_shepherd_dir, items):
    """Another tag and other answer tokens: the format is configurable, not only the presets."""
    custom = StepTagFormat(layout="plain", step_tag="ки", good_token="1", bad_token="0", problem_separator="\n")
    scorer = StepScorer.from_pretrained(math_shepherd_dir, step_tag_format=custom)
    tokenizer, model = scorer.tokenizer, scorer.model
    good, bad = tokenizer.convert_tokens_to_ids(["1", "0"])
    item = items[0]
    input_ids = tokenizer(item["problem"] + "\n" + "\n".join(s + " ки" for s in item["steps"]), return_tensors="pt")
    with torch.no_grad():
        logits = model(**input_ids).logits[0]
    positions = (input_ids["input_ids"][0] == tokenizer.convert_tokens_to_ids("ки")).nonzero()[:, 0].tolist()
    expected = [_good_share(logits[i], good, bad) for i in positions]
    assert scorer.score([item], show_progress=False)[0]["scores"] == pytest.approx(expected, abs=TOLERANCE)


def test_step_tag_bad_input_gives_one_clear_error(random_backbone, math_shepherd_dir):
    with pytest.raises(ValueError, match="unknown step-tag preset 'shepherd'; choose one of math_shepherd, rlhflow"):
        StepScorer.from_pretrained(random_backbone, step_tag_format="shepherd")
    with pytest.raises(ValueError, match=r"the step tag 'ки' is not a token of this tokenizer \(it encodes as \["):
        StepScorer.from_pretrained(random_backbone, step_tag_format="math_shepherd")
    two_tokens = StepTagFormat(layout="chat", good_token="correct!", bad_token="-")
    with pytest.raises(ValueError, match="the good token 'correct!' is not one token of this tokenizer"):
        StepScorer.from_pretrained(random_backbone, step_tag_format=two_tokens)
    with pytest.raises(ValueError, match="plain step-tag layout needs a step_tag"):
        StepTagFormat(layout="plain")
    scorer = StepScorer.from_pretrained(math_shepherd_dir, step_tag_format=STEP_TAG_PRESETS["math_shepherd"])
    with pytest.raises(ValueError, match="found 2 step tags 'ки' for 1 steps: the problem or a step contains"):
        scorer.score([{"problem": "Is ки a tag?", "steps": ["Yes."]}], show_progress=False)
    with pytest.raises(ValueError, match="cannot tell what kind of PRM .* pass kind='step_tag'"):
        StepScorer.from_pretrained(random_backbone)


@pytest.fixture(scope="module")
def skywork_dir(random_backbone, tmp_path_factory):
    """A Skywork-PRM-style checkpoint: a Qwen2 causal LM's weights plus ``v_head.summary`` (hidden -> 1)."""
    path = tmp_path_factory.mktemp("skywork")
    model = AutoModelForCausalLM.from_pretrained(random_backbone)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(random_backbone).save_pretrained(path)
    weights = load_file(path / "model.safetensors")
    generator = torch.Generator().manual_seed(1)
    weights["v_head.summary.weight"] = torch.randn(1, model.config.hidden_size, generator=generator) * 0.5
    weights["v_head.summary.bias"] = torch.tensor([0.3])
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((path / "config.json").read_text())
    config["architectures"] = ["Qwen2ForPrmModel"]
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_skywork_value_head_scores_follow_prepare_input(skywork_dir, items):
    scorer = StepScorer.from_pretrained(skywork_dir)
    assert scorer.kind == "value_head" and isinstance(scorer.model, ValueHeadPRM)
    results = scorer.score(items, batch_size=2, show_progress=False)
    tokenizer = AutoTokenizer.from_pretrained(skywork_dir)
    model = AutoModelForCausalLM.from_pretrained(skywork_dir).eval()
    weights = load_file(skywork_dir / "model.safetensors")
    head_weight, head_bias = weights["v_head.summary.weight"][0], weights["v_head.summary.bias"][0]
    for item, result in zip(items, results):
        # Skywork's prepare_input: bos + problem + "\n", then each step's ids and the "\n" token, flagged
        input_ids = tokenizer.encode((tokenizer.bos_token or "") + item["problem"] + "\n")
        newline = tokenizer.encode("\n")[-1]
        flags = []
        for step in item["steps"]:
            input_ids += tokenizer.encode(step) + [newline]
            flags.append(len(input_ids) - 1)
        with torch.no_grad():
            hidden = model(torch.tensor([input_ids]), output_hidden_states=True).hidden_states[-1][0]
        expected = [torch.sigmoid(hidden[i] @ head_weight + head_bias).item() for i in flags]
        assert result["scores"] == pytest.approx(expected, abs=TOLERANCE)


def test_a_causal_lm_without_value_head_is_refused(random_backbone, tmp_path):
    AutoModelForCausalLM.from_pretrained(random_backbone).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(random_backbone).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "architectures": ["Qwen2ForPrmModel"]}))
    with pytest.raises(ValueError, match="no v_head.summary.weight in its safetensors weights"):
        StepScorer.from_pretrained(tmp_path)


@pytest.fixture(scope="module")
def token_classification_dir(random_backbone, tmp_path_factory):
    path = tmp_path_factory.mktemp("trl-prm")
    torch.manual_seed(0)
    AutoModelForTokenClassification.from_pretrained(random_backbone, num_labels=2).save_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(random_backbone)
    tokenizer.bos_token = "<|endoftext|>"  # TRL prepends a bos when the tokenizer has one
    tokenizer.save_pretrained(path)
    return path


def _trl_tokenize_row(tokenizer, prompt, steps, max_length, max_prompt_length):
    """TRL's PRMTrainer.tokenize_row (train_on_last_step_only=False), as it truncated: the input ids and,
    per kept step, the position of its label."""
    prompt_ids = [tokenizer.bos_token_id] + tokenizer(prompt, add_special_tokens=False)["input_ids"]
    prompt_ids = prompt_ids[-max_prompt_length:]
    separator = tokenizer.encode("\n", add_special_tokens=False)
    completion_ids, label_positions = [], []
    for step in steps:
        completion_ids += tokenizer(step, add_special_tokens=False)["input_ids"] + separator
        label_positions.append(len(prompt_ids) + len(completion_ids) - 1)
    input_ids = (prompt_ids + completion_ids)[:max_length]
    return input_ids, [p for p in label_positions if p < max_length]


def test_trl_truncation_reproduces_the_training_view(token_classification_dir, items):
    item = {"problem": " ".join(it["problem"] for it in items), "steps": items[0]["steps"]}
    tokenizer = AutoTokenizer.from_pretrained(token_classification_dir)
    problem_length = len(tokenizer(item["problem"], add_special_tokens=False)["input_ids"])
    max_prompt_length, max_length = 64, 400
    assert problem_length > 2 * max_prompt_length  # the prompt really is cut
    scorer = StepScorer.from_pretrained(
        token_classification_dir, max_length=max_length, max_prompt_length=max_prompt_length
    )
    result = scorer.score([item], show_progress=False)[0]
    input_ids, positions = _trl_tokenize_row(tokenizer, item["problem"], item["steps"], max_length, max_prompt_length)
    with torch.no_grad():
        logits = scorer.model(torch.tensor([input_ids])).logits[0]
    expected = torch.softmax(logits.double(), dim=-1)[positions, 1].tolist()
    assert result["scores"] == pytest.approx(expected, abs=TOLERANCE)
    assert 0 < result["num_scored_steps"] == len(positions) < len(item["steps"])
    assert scorer.settings["max_prompt_length"] == 64
    untruncated = StepScorer.from_pretrained(token_classification_dir).score([item], show_progress=False)[0]
    assert untruncated["scores"][: len(positions)] != pytest.approx(expected, abs=TOLERANCE)


def test_prompt_length_is_refused_where_no_prompt_is_cut(skywork_dir, random_backbone):
    with pytest.raises(ValueError, match="a 'value_head' PRM takes no max_prompt_length"):
        StepScorer.from_pretrained(skywork_dir, max_prompt_length=512)
    with pytest.raises(ValueError, match="a 'step_tag' PRM takes no system_prompt"):
        StepScorer.from_pretrained(random_backbone, step_tag_format="rlhflow", system_prompt="Be strict.")
