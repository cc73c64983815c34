"""Tokenisation: separators as token ids, labels at separators only, truncation at step boundaries."""

import pytest
import torch
from transformers import AutoTokenizer

from actprm.tokenization import (
    IGNORE_INDEX,
    StepDataCollator,
    StepTokenizer,
    add_separator_token,
    separator_token_id,
    step_labels_for_training,
)

SEPARATOR = "<extra_0>"


@pytest.fixture(scope="module")
def tokenizer(tiny_backbone):
    return AutoTokenizer.from_pretrained(tiny_backbone)


def separator_positions(encoded, separator_id):
    return [i for i, token in enumerate(encoded["input_ids"]) if token == separator_id]


def test_one_separator_per_step_and_labels_only_there(tokenizer):
    steps = ["Mia buys 7 more: 12 + 7 = 19.", "Mia loses 4: 19 - 4 = 14.", "The answer is 14."]
    encoded = StepTokenizer(tokenizer, SEPARATOR)({"problem": "Mia has 12 shells.", "steps": steps, "label": -1})
    separator_id = separator_token_id(tokenizer, SEPARATOR)
    positions = separator_positions(encoded, separator_id)
    assert len(positions) == 3
    labelled = [i for i, label in enumerate(encoded["labels"]) if label != IGNORE_INDEX]
    assert labelled == positions and [encoded["labels"][i] for i in positions] == [1, 1, 1]
    # each step's text is exactly the tokens between separators
    previous = positions[0] - len(tokenizer(steps[0], add_special_tokens=False)["input_ids"])
    assert tokenizer.decode(encoded["input_ids"][previous : positions[0]]) == steps[0]
    assert encoded["num_dropped_steps"] == 0


def test_separator_text_inside_a_step_or_problem_is_not_a_step_boundary(tokenizer):
    record = {"problem": f"Why {SEPARATOR} here?", "steps": [f"a {SEPARATOR} b", "c"], "label": 1}
    for chat in (False, True):
        encoded = StepTokenizer(tokenizer, SEPARATOR, use_chat_template=chat)(record)
        positions = separator_positions(encoded, separator_token_id(tokenizer, SEPARATOR))
        assert len(positions) == 2, f"chat template {chat}"
        assert [encoded["labels"][i] for i in positions] == [1, 0]
        assert SEPARATOR in tokenizer.decode(encoded["input_ids"][: positions[0]])  # kept as text


def test_system_prompt_opens_the_chat_and_its_separator_text_stays_text(tokenizer):
    record = {"problem": "How many?", "steps": ["a", "b"], "label": -1}
    system_prompt = f"Judge each step {SEPARATOR} carefully."
    encoded = StepTokenizer(tokenizer, SEPARATOR, use_chat_template=True, system_prompt=system_prompt)(record)
    separator_id = separator_token_id(tokenizer, SEPARATOR)
    positions = separator_positions(encoded, separator_id)
    assert len(positions) == 2 and [encoded["labels"][i] for i in positions] == [1, 1]
    prompt = tokenizer.decode(encoded["input_ids"][: positions[0]])
    assert prompt.index(system_prompt) < prompt.index("How many?")
    rendered = tokenizer.apply_chat_template(
        [{"role": "system", "content": system_prompt}, {"role": "user", "content": "How many?"}],
        tokenize=False, add_generation_prompt=True,
    )  # fmt: skip
    assert prompt == rendered + "a"  # the template's text, word for word, then the first step
    without = StepTokenizer(tokenizer, SEPARATOR, use_chat_template=True)(record)
    assert system_prompt not in tokenizer.decode(without["input_ids"])
    with pytest.raises(ValueError, match="use_chat_template=True"):
        StepTokenizer(tokenizer, SEPARATOR, system_prompt=system_prompt)


def test_first_error_mode_ignores_steps_after_the_error_and_per_step_mode_keeps_them(tokenizer):
    record = {"problem": "p", "steps": ["a", "b", "c", "d"], "label": 1, "step_labels": [1, 0, 1, None]}
    first_error = StepTokenizer(tokenizer, SEPARATOR)(record)
    per_step = StepTokenizer(tokenizer, SEPARATOR, label_mode="per_step")(record)
    ids = separator_token_id(tokenizer, SEPARATOR)
    assert [first_error["labels"][i] for i in separator_positions(first_error, ids)] == [1, 0, IGNORE_INDEX, IGNORE_INDEX]
    assert [per_step["labels"][i] for i in separator_positions(per_step, ids)] == [1, 0, 1, IGNORE_INDEX]
    unlabelled = StepTokenizer(tokenizer, SEPARATOR)({"problem": "p", "steps": ["a"], "label": None})
    assert set(unlabelled["labels"]) == {IGNORE_INDEX}


def test_empty_and_whitespace_steps_keep_their_own_separator(tokenizer):
    record = {"problem": "p", "steps": ["a", "", "   ", "b"], "label": 2}
    encoded = StepTokenizer(tokenizer, SEPARATOR)(record)
    positions = separator_positions(encoded, separator_token_id(tokenizer, SEPARATOR))
    assert len(positions) == 4 and positions[1] == positions[0] + 1  # an empty step is its separator alone
    assert [encoded["labels"][i] for i in positions] == [1, 1, 0, IGNORE_INDEX]


def test_truncation_drops_whole_trailing_steps_and_counts_them(tokenizer):
    steps = [f"step number {i} says {i} + {i} = {2 * i}." for i in range(10)]
    full = StepTokenizer(tokenizer, SEPARATOR)({"problem": "p", "steps": steps, "label": -1})
    separator_id = separator_token_id(tokenizer, SEPARATOR)
    cut = separator_positions(full, separator_id)[5] + 3  # room for six steps and a bit of the seventh
    short = StepTokenizer(tokenizer, SEPARATOR, max_length=cut)({"problem": "p", "steps": steps, "label": -1})
    assert short["num_dropped_steps"] == 4
    assert short["input_ids"][-1] == separator_id  # never half a step
    assert short["input_ids"] == full["input_ids"][: len(short["input_ids"])]
    assert len(separator_positions(short, separator_id)) == 6
    tiny = StepTokenizer(tokenizer, SEPARATOR, max_length=2)({"problem": "p", "steps": steps, "label": -1})
    assert tiny["num_dropped_steps"] == 10 and set(tiny["labels"]) == {IGNORE_INDEX}


def test_label_out_of_range_names_the_record_and_field():
    with pytest.raises(ValueError, match=r"record 'r7', field 'label': 3 is outside \[-1, 1\]"):
        step_labels_for_training({"id": "r7", "steps": ["a", "b"], "label": 3})


def test_missing_separator_is_a_clear_error_until_added(tiny_backbone):
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    with pytest.raises(ValueError, match="no separator token '<step>'"):
        StepTokenizer(tokenizer, "<step>")
    new_id = add_separator_token(tokenizer, "<step>")
    assert new_id == len(tokenizer) - 1 and StepTokenizer(tokenizer, "<step>").separator_id == new_id
    assert add_separator_token(tokenizer, "<step>") == new_id  # idempotent


def test_collator_pads_inputs_and_labels_and_keeps_row_index(tokenizer):
    step_tokenizer = StepTokenizer(tokenizer, SEPARATOR)
    features = [
        {**step_tokenizer({"problem": "p", "steps": ["a"], "label": 0}), "row": 4},
        {**step_tokenizer({"problem": "a longer problem", "steps": ["a", "b", "c"], "label": -1}), "row": 9},
    ]
    batch = StepDataCollator(tokenizer, keep_columns=("row",))(features)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "row"}
    assert batch["row"].tolist() == [4, 9]
    short = len(features[0]["input_ids"])
    assert batch["attention_mask"][0, short:].sum() == 0 and (batch["labels"][0, short:] == IGNORE_INDEX).all()
    assert torch.equal(batch["labels"][1], torch.tensor(features[1]["labels"]))
