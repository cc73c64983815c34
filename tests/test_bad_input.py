"""Malformed step data gets an error naming the file, the record and what is wrong, at load time."""

from __future__ import annotations

import json
import pytest

from actprm import load_steps
from actprm.data.records import SkippedRecordsWarning

GOOD = {"id": "a", "problem": "1+1?", "steps": ["1+1=2"], "label": -1}


def test_bytes_that_are_not_utf8_name_the_file_and_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    bad = json.dumps({**GOOD, "id": "b", "problem": "café?"}, ensure_ascii=False).encode("utf-8").replace("é".encode(), b"\xe9")
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + bad + b"\n")
    with pytest.raises(ValueError, match=rf"{path}, record line 2.*not UTF-8: byte 0xe9"):
        load_steps(path, "jsonl")
    with pytest.warns(SkippedRecordsWarning, match="line 2"):
        assert load_steps(path, "jsonl", on_error="skip")["id"] == ["a"]
    whole = tmp_path / "latin1.json"
    whole.write_bytes(b"[" + bad + b"]")
    with pytest.raises(ValueError, match=rf"{whole}, record top level.*not UTF-8"):
        load_steps(whole)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.jsonl", "", "holds no records"),
        ("array.jsonl", json.dumps([GOOD]) + "\n", "a JSON array, not an object: a .jsonl file holds one JSON object"),
        ("one.json", json.dumps(GOOD), "one JSON object, not a list of records"),
        ("notes.txt", "some notes", "unsupported file type"),
        ("huge.jsonl", "x" * 5_000_000 + "\n", "record line 1.*not JSON: Expecting value"),
    ],
)
def test_files_that_hold_no_records_say_what_they_hold(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as error:
        load_steps(path)
    assert "pass format=" not in str(error.value) and len(str(error.value)) < 500


def test_an_empty_dataset_fails_at_load_time_even_with_its_format(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(ValueError, match=f"{path}: no records to load"):
        load_steps(path, "jsonl")


def test_the_trainer_refuses_one_id_for_two_questions_and_an_empty_pool(tiny_backbone, tmp_path):
    from datasets import concatenate_datasets
    from test_trainer import make_config, unlabelled

    from actprm import make_arithmetic_dataset
    from actprm.judges import ArithmeticJudge
    from actprm.trainer import ActivePRMTrainer

    pool = unlabelled(make_arithmetic_dataset(6, seed=1))
    clash = pool.select([0]).map(lambda row: {"steps": row["steps"][:-1] + ["9 + 9 = 18"]})
    with pytest.raises(ValueError, match=r"rows 0 and 6 share the id '.+' but not their problem and steps"):
        ActivePRMTrainer(tiny_backbone, args=make_config(tmp_path), train_dataset=concatenate_datasets([pool, clash]),
                         judge=ArithmeticJudge())
    with pytest.raises(ValueError, match="the training dataset has no rows"):
        ActivePRMTrainer(tiny_backbone, args=make_config(tmp_path), train_dataset=pool.select([]), judge=ArithmeticJudge())


def test_a_solution_whose_steps_all_exceed_max_length_is_skipped_and_counted(tiny_backbone, tmp_path, caplog):
    from datasets import concatenate_datasets
    from test_trainer import make_config

    from actprm import make_arithmetic_dataset
    from actprm.trainer import ActivePRMTrainer

    pool = make_arithmetic_dataset(8, seed=2)
    too_long = pool.select([0]).map(lambda row: {"id": "too-long", "problem": "Compute this. " * 400})
    args = make_config(tmp_path, selection="uncertainty", per_device_train_batch_size=3)
    with caplog.at_level("WARNING"):
        trainer = ActivePRMTrainer(tiny_backbone, args=args, train_dataset=concatenate_datasets([too_long, pool]))
    assert "1 solutions are left out: max_length leaves none of their steps" in caplog.text
    trainer.train()  # no IndexError in selection
    assert trainer.active_learning_summary()["seen"] == 8 and "too-long" not in trainer.pool["id"]
