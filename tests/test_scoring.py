"""StepScorer on the three PRM kinds, built tiny and saved locally, against per-prefix computations."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM, pipeline

from actprm import StepDataError, load_steps
from actprm.modeling import EnsemblePRMModel
from actprm.scoring import PROCESS_REWARD_SYSTEM_PROMPT, StepScorer
from actprm.tokenization import StepTokenizer

TOLERANCE = 1e-5
KINDS = ("ensemble", "token_classification", "process_reward")

# A Qwen2.5-Math-PRM-style model in the shape of the released one: a Qwen2 body and a two-layer
# reward head with 2 classes at every position, its code shipped inside the checkpoint.
PRM_MODELING_CODE = """
from torch import nn
from transformers import Qwen2Config, Qwen2Model, Qwen2PreTrainedModel
from transformers.modeling_outputs import TokenClassifierOutput


class Qwen2ForProcessRewardModel(Qwen2PreTrainedModel):
    config_class = Qwen2Config

    def __init__(self, config):
        super().__init__(config)
        self.model = Qwen2Model(config)
        self.score = nn.Sequential(
            nn.Linear(config.hidden_size, config.hidden_size), nn.ReLU(), nn.Linear(config.hidden_size, 2)
        )
        self.post_init()

    def forward(self, input_ids, attention_mask=None, **kwargs):
        hidden_states = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return TokenClassifierOutput(logits=self.score(hidden_states))
"""


@pytest.fixture(scope="module")
def tokenizer(tiny_backbone):
    return AutoTokenizer.from_pretrained(tiny_backbone)


@pytest.fixture(scope="module")
def model_dirs(tiny_backbone, tokenizer, tmp_path_factory):
    """One saved checkpoint per kind: actprm ensemble, TRL token classification, remote-code Qwen PRM."""
    root = tmp_path_factory.mktemp("prms")
    torch.manual_seed(0)
    ensemble = EnsemblePRMModel.from_backbone(tiny_backbone, tokenizer=tokenizer, num_ensemble=4, head_hidden_size=16)
    token_classification = AutoModelForTokenClassification.from_pretrained(tiny_backbone, num_labels=2)
    module_path = root / "modeling_tiny_prm.py"
    module_path.write_text(PRM_MODELING_CODE)
    spec = importlib.util.spec_from_file_location("modeling_tiny_prm", module_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["modeling_tiny_prm"] = module
    spec.loader.exec_module(module)
    module.Qwen2ForProcessRewardModel.register_for_auto_class("AutoModel")
    process_reward = module.Qwen2ForProcessRewardModel(Qwen2Config.from_pretrained(tiny_backbone))
    dirs = {}
    for kind, model in zip(KINDS, (ensemble, token_classification, process_reward)):
        dirs[kind] = root / kind
        model.save_pretrained(dirs[kind])
        tokenizer.save_pretrained(dirs[kind])
    del sys.modules["modeling_tiny_prm"]
    return dirs


@pytest.fixture(scope="module")
def scorers(model_dirs):
    return {
        kind: StepScorer.from_pretrained(path, trust_remote_code=kind == "process_reward")
        for kind, path in model_dirs.items()
    }


@pytest.fixture(scope="module")
def items(processbench_data):
    """Three real GSM8K solutions of ProcessBench."""
    return load_steps(processbench_data / "gsm8k.json").select(range(3))


def test_kind_is_read_from_the_checkpoint(scorers):
    assert {kind: scorer.kind for kind, scorer in scorers.items()} == {kind: kind for kind in KINDS}
    assert scorers["token_classification"].separator == "\n"
    assert scorers["process_reward"].separator == "<extra_0>"
    assert scorers["ensemble"].max_length == 2048


def test_remote_code_model_needs_trust_remote_code(model_dirs):
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        StepScorer.from_pretrained(model_dirs["process_reward"])


def test_ensemble_scores_equal_per_prefix_passes(scorers, items, tokenizer):
    scorer = scorers["ensemble"]
    step_tokenizer = StepTokenizer(tokenizer, "<extra_0>")
    results = scorer.score(items, batch_size=2, show_progress=False)
    for item, result in zip(items, results):
        for step in range(len(item["steps"])):
            prefix = step_tokenizer({"problem": item["problem"], "steps": item["steps"][: step + 1]})
            mean, std = scorer.model.step_scores(torch.tensor([prefix["input_ids"]]))[0]
            assert result["scores"][step] == pytest.approx(mean[-1].item(), abs=TOLERANCE)
            assert result["stds"][step] == pytest.approx(std[-1].item(), abs=TOLERANCE)
        assert result["first_error"] == next((i for i, s in enumerate(result["scores"]) if s < 0.5), -1)


def test_ensemble_scores_in_the_layout_it_was_trained_with(scorers, model_dirs, tokenizer, items, tmp_path):
    """A chat-template ensemble's config carries its layout: the scorer follows it unless told otherwise."""
    system_prompt = "Check every step."
    model = scorers["ensemble"].model
    model.config.use_chat_template, model.config.system_prompt = True, system_prompt
    try:
        model.save_pretrained(tmp_path)
    finally:
        model.config.use_chat_template, model.config.system_prompt = False, None
    tokenizer.save_pretrained(tmp_path)
    item = {"problem": items[0]["problem"], "steps": items[0]["steps"]}
    chat = StepScorer.from_pretrained(tmp_path)
    expected = StepTokenizer(tokenizer, "<extra_0>", use_chat_template=True, system_prompt=system_prompt)(item)
    assert chat.encode(item["problem"], item["steps"]).input_ids == expected["input_ids"]
    assert chat.settings["use_chat_template"] and chat.settings["system_prompt"] == system_prompt
    plain = StepScorer.from_pretrained(tmp_path, use_chat_template=False)
    assert plain.encode(item["problem"], item["steps"]).input_ids == StepTokenizer(tokenizer, "<extra_0>")(item)["input_ids"]
    assert "system_prompt" not in plain.settings
    with pytest.raises(ValueError, match="a .token_classification. PRM takes no system_prompt"):
        StepScorer.from_pretrained(model_dirs["token_classification"], system_prompt=system_prompt)


def test_token_classification_scores_equal_the_pipeline_on_every_prefix(scorers, items):
    """The public TRL ProcessBench script: a token-classification pipeline on each prefix, read at its last token."""
    scorer = scorers["token_classification"]
    classify = pipeline("token-classification", model=scorer.model, tokenizer=scorer.tokenizer, device="cpu")
    results = scorer.score(items, batch_size=2, show_progress=False)
    for item, result in zip(items, results):
        prefixes = [
            item["problem"] + "".join(s + "\n" for s in item["steps"][: i + 1]) for i in range(len(item["steps"]))
        ]
        last_tokens = [entities[-1] for entities in classify(prefixes)]
        expected = [t["score"] if t["entity"] == "LABEL_1" else 1 - t["score"] for t in last_tokens]
        assert result["scores"] == pytest.approx(expected, abs=TOLERANCE)
        assert result["stds"] is None


def test_process_reward_scores_equal_the_official_recipe_per_prefix(scorers, items):
    """Qwen2.5-Math-PRM's model card: chat template, steps joined by <extra_0>, softmax class 1 at each <extra_0>."""
    scorer = scorers["process_reward"]
    tokenizer, separator_id = scorer.tokenizer, scorer.tokenizer.convert_tokens_to_ids("<extra_0>")
    results = scorer.score(items, batch_size=3, show_progress=False)
    for item, result in zip(items, results):
        expected = []
        for step in range(len(item["steps"])):
            messages = [
                {"role": "system", "content": PROCESS_REWARD_SYSTEM_PROMPT},
                {"role": "user", "content": item["problem"]},
                {"role": "assistant", "content": "<extra_0>".join(item["steps"][: step + 1]) + "<extra_0>"},
            ]
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
            input_ids = torch.tensor([tokenizer.encode(text)])
            with torch.no_grad():
                probabilities = torch.softmax(scorer.model(input_ids=input_ids).logits, dim=-1)
            expected.append(probabilities[0, input_ids[0] == separator_id, 1][-1].item())
        assert result["scores"] == pytest.approx(expected, abs=TOLERANCE)


@pytest.mark.parametrize("kind", KINDS)
def test_length_grouping_returns_items_in_input_order(scorers, processbench_data, kind):
    items = load_steps(processbench_data / "gsm8k.json").select(range(7))
    grouped = scorers[kind].score(items, batch_size=3, show_progress=False)
    unsorted = scorers[kind].score(items, batch_size=3, group_by_length=False, show_progress=False)
    single = scorers[kind].score(items, batch_size=1, show_progress=False)
    assert [r["num_steps"] for r in grouped] == [len(steps) for steps in items["steps"]]
    for a, b, c in zip(grouped, unsorted, single):
        assert a["scores"] == pytest.approx(b["scores"], abs=TOLERANCE)
        assert a["scores"] == pytest.approx(c["scores"], abs=TOLERANCE)


@pytest.mark.parametrize("kind", KINDS)
def test_steps_beyond_the_context_are_flagged_not_dropped(scorers, items, kind):
    full = scorers[kind]
    item = items[0]
    encoded = full.encode(item["problem"], item["steps"])
    reference = full.score([item], show_progress=False)[0]
    fits_two = StepScorer(full.model, full.tokenizer, max_length=encoded.score_positions[1] + 1, kind=kind)
    result = fits_two.score([item], show_progress=False)[0]
    assert (result["truncated"], result["num_scored_steps"], result["num_steps"]) == (True, 2, len(item["steps"]))
    assert result["scores"] == pytest.approx(reference["scores"][:2], abs=TOLERANCE)
    nothing_fits = StepScorer(full.model, full.tokenizer, max_length=encoded.score_positions[0], kind=kind)
    result = nothing_fits.score([item], show_progress=False)[0]
    assert (result["scores"], result["first_error"], result["truncated"], result["num_scored_steps"]) == (
        [],
        -1,
        True,
        0,
    )


def test_empty_solutions_and_empty_steps_are_scored_and_flagged(scorers):
    items = [{"problem": "What is 1 + 1?", "steps": []}, {"problem": "What is 1 + 1?", "steps": ["", "1 + 1 = 2"]}]
    for scorer in scorers.values():
        empty, blank_step = scorer.score(items, show_progress=False)
        assert (empty["scores"], empty["first_error"], empty["empty"], empty["truncated"]) == ([], -1, True, False)
        assert len(blank_step["scores"]) == 2 and not blank_step["empty"]


@pytest.mark.parametrize("threshold", [1.5, 0, 1, -0.2])
def test_threshold_outside_the_unit_interval_is_refused(scorers, items, threshold):
    with pytest.raises(ValueError, match=r"threshold must lie in \(0, 1\)"):
        scorers["ensemble"].score(items, threshold=threshold, show_progress=False)


def test_malformed_item_names_item_and_field(scorers):
    with pytest.raises(StepDataError, match=r"record 1, field 'steps'"):
        scorers["ensemble"].score([{"problem": "p", "steps": ["a"]}, {"problem": "p"}], show_progress=False)
    with pytest.raises(StepDataError, match=r"record 0, field 'steps': expected a list of strings"):
        scorers["ensemble"].score([{"problem": "p", "steps": "one step"}], show_progress=False)


def test_models_without_a_separator_or_of_unknown_kind_are_refused(tiny_backbone, tokenizer, scorers):
    other_tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    ensemble = EnsemblePRMModel.from_backbone(
        tiny_backbone, tokenizer=other_tokenizer, separator="<step>", num_ensemble=2
    )
    with pytest.raises(ValueError, match="no separator token '<step>'"):
        StepScorer(ensemble, tokenizer)
    ensemble.config.separator_token_id = None
    with pytest.raises(ValueError, match="no separator token"):
        StepScorer(ensemble, other_tokenizer)
    with pytest.raises(ValueError, match="cannot tell what kind of PRM"):
        StepScorer(Qwen2ForCausalLM.from_pretrained(tiny_backbone), tokenizer)
    three_labels = AutoModelForTokenClassification.from_pretrained(tiny_backbone, num_labels=3)
    with pytest.raises(ValueError, match="2 labels"):
        StepScorer(three_labels, tokenizer)
    tokenizer_without_template = AutoTokenizer.from_pretrained(tiny_backbone)
    tokenizer_without_template.chat_template = None
    with pytest.raises(ValueError, match="chat template"):
        StepScorer(scorers["process_reward"].model, tokenizer_without_template)


def test_missing_model_folder_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        StepScorer.from_pretrained(str(tmp_path / "no-such-model"))
