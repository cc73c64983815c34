"""Confidence filtering of a sharded pool (`filter_pool`, ``actprm filter``) and ``actprm score``.

The ensemble here shares one set of head weights, scaled up and perturbed per head, so that its
scores and disagreements spread out and the trainer's rule keeps some trajectories and drops others.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from datasets import load_dataset
from transformers import AutoTokenizer

from actprm import load_steps, make_arithmetic_dataset
from actprm.cli import main as cli
from actprm.data import SkippedRecordsWarning
from actprm.filtering import TrajectoryPool, filter_pool
from actprm.modeling import EnsemblePRMModel
from actprm.scoring import StepScorer
from actprm.selection import select_confident

RULE = {"pred_threshold": 0.9, "std_threshold": 0.01}
SHARDS = ("pool-0.jsonl", "pool-1.jsonl", "pool-2.jsonl", "pool-3.parquet")
ITEMS_PER_SHARD = 12


@pytest.fixture(scope="module")
def model_dir(tiny_backbone, tmp_path_factory):
    path = tmp_path_factory.mktemp("ensemble")
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    torch.manual_seed(0)
    model = EnsemblePRMModel.from_backbone(tiny_backbone, tokenizer=tokenizer, num_ensemble=4, head_hidden_size=16)
    with torch.no_grad():
        heads = model.score.model
        for layer in (heads.nn1, heads.nn2, heads.nn_out):
            layer.weight.copy_(layer.weight[:1].expand_as(layer.weight))
            layer.bias.copy_(layer.bias[:1].expand_as(layer.bias))
        heads.nn_out.weight.mul_(150).add_(torch.randn_like(heads.nn_out.weight))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def scorer(model_dir):
    return StepScorer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory):
    """48 synthetic trajectories in three jsonl shards and one parquet shard."""
    folder = tmp_path_factory.mktemp("pool")
    dataset = make_arithmetic_dataset(ITEMS_PER_SHARD * len(SHARDS), seed=3)
    for index, name in enumerate(SHARDS):
        shard = dataset.shard(len(SHARDS), index, contiguous=True)
        shard.to_parquet(folder / name) if name.endswith(".parquet") else shard.to_json(folder / name)
    return folder


@pytest.fixture(scope="module")
def filtered(scorer, pool_dir, tmp_path_factory):
    """A finished single-process run; tests copy it before changing anything."""
    output_dir = tmp_path_factory.mktemp("filtered")
    summary = filter_pool(scorer, pool_dir, output_dir=output_dir, batch_size=4, show_progress=False, **RULE)
    return output_dir, summary


def copy_of(filtered, tmp_path) -> Path:
    return Path(shutil.copytree(filtered[0], tmp_path / "run"))


def kept_rows(output_dir: Path) -> dict[str, dict]:
    rows = load_steps(output_dir / "data")
    return {row["id"]: row for row in rows}


def uncertain_by_the_rule(scorer, shards) -> tuple[dict[str, dict], set[str]]:
    """Each item scored with the scorer (shard by shard, as the filter batches them) and judged on its own
    by `select_confident`: results by id, and the uncertain ids."""
    results = {}
    for shard in shards:
        results.update(zip(shard["id"], scorer.score(shard, batch_size=4, show_progress=False)))
    uncertain = set()
    for item_id, result in results.items():
        mean, std = torch.tensor([result["scores"]]), torch.tensor([result["stds"]])
        if not select_confident(mean, std, torch.ones_like(mean, dtype=torch.bool), **RULE).confident.item():
            uncertain.add(item_id)
    return results, uncertain


def test_filter_keeps_exactly_the_trajectories_the_rule_calls_uncertain(filtered, scorer, pool_dir):
    pool = load_steps(pool_dir)
    results, uncertain = uncertain_by_the_rule(scorer, [load_steps(pool_dir / name) for name in SHARDS])
    assert 0 < len(uncertain) < pool.num_rows
    kept = kept_rows(filtered[0])
    assert set(kept) == uncertain
    inputs = {row["id"]: row for row in pool}
    for item_id, row in kept.items():
        assert {key: row[key] for key in inputs[item_id]} == inputs[item_id]
        assert row["scores"] == results[item_id]["scores"] and row["stds"] == results[item_id]["stds"]
        assert row["predicted_first_error"] == results[item_id]["first_error"]
        assert row["truncated"] is False


def test_output_is_sharded_like_the_input_and_summarised(filtered, pool_dir):
    output_dir, summary = filtered
    assert sorted(path.name for path in (output_dir / "data").iterdir()) == [
        f"pool-{index}.parquet" for index in range(len(SHARDS))
    ]
    kept = kept_rows(output_dir)
    assert summary["seen"] == ITEMS_PER_SHARD * len(SHARDS) and summary["kept"] == len(kept)
    assert summary["fraction_kept"] == pytest.approx(len(kept) / summary["seen"])
    assert summary["num_shards"] == summary["shards_filtered_this_run"] == len(SHARDS)
    for index, (name, shard) in enumerate(summary["shards"].items()):
        assert name == f"pool-{index}"
        assert shard["seen"] == ITEMS_PER_SHARD
        assert shard["kept"] == pq.read_metadata(output_dir / "data" / f"{name}.parquet").num_rows
        assert shard["process_index"] == 0
    assert sum(shard["kept"] for shard in summary["shards"].values()) == summary["kept"]
    assert json.loads((output_dir / "summary.json").read_text()) == summary
    assert summary["source"] == str(pool_dir.resolve()) and summary["pred_threshold"] == RULE["pred_threshold"]


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_shards_that_keep_nothing_are_written_empty(model_dir, pool_dir, tmp_path, capsys, on_error):
    """A rule under which every trajectory is confident keeps none: empty shards with the full schema."""
    output_dir = tmp_path / "kept"
    rule = ["--pred_threshold", "0.5000001", "--std_threshold", "1"]
    code = cli(["filter", "--model", model_dir, "--data", str(pool_dir), "--output_dir", str(output_dir), *rule,
                "--on_error", on_error])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert "kept 0 of 48 trajectories" in capsys.readouterr().out
    for index in range(len(SHARDS)):
        table = pq.read_table(output_dir / "data" / f"pool-{index}.parquet")
        assert table.num_rows == 0
        assert {"id", "steps", "scores", "stds", "predicted_first_error", "truncated"} <= set(table.column_names)


def test_rerun_redoes_only_the_unfinished_shards(filtered, scorer, pool_dir, tmp_path, monkeypatch):
    output_dir = copy_of(filtered, tmp_path)
    data = output_dir / "data"
    mtimes = {path.name: path.stat().st_mtime_ns for path in data.glob("*.parquet")}
    (output_dir / "done" / "pool-1.json").write_text('{"seen": 12, "ke')  # marker cut short by a crash
    (output_dir / "done" / "pool-2.json").unlink()  # a crash while writing the output, before the marker
    (data / "pool-2.parquet").rename(data / ".pool-2.parquet.tmp")
    scored = []
    iter_scores = scorer.iter_scores

    def counting_iter_scores(items, *args, **kwargs):
        scored.extend(items["id"])
        return iter_scores(items, *args, **kwargs)

    monkeypatch.setattr(scorer, "iter_scores", counting_iter_scores)
    summary = filter_pool(scorer, pool_dir, output_dir=output_dir, batch_size=4, show_progress=False, **RULE)

    redone = [*load_steps(pool_dir / "pool-1.jsonl")["id"], *load_steps(pool_dir / "pool-2.jsonl")["id"]]
    assert sorted(scored) == sorted(redone)
    assert summary["shards_filtered_this_run"] == 2
    changed = {name for name, mtime in mtimes.items() if (data / name).stat().st_mtime_ns != mtime}
    assert changed == {"pool-1.parquet", "pool-2.parquet"}
    assert not list(data.glob(".*.tmp"))
    assert {key: summary[key] for key in ("seen", "kept", "shards")} == {
        key: filtered[1][key] for key in ("seen", "kept", "shards")
    }
    assert kept_rows(output_dir) == kept_rows(filtered[0])

    scored.clear()
    again = filter_pool(scorer, pool_dir, output_dir=output_dir, batch_size=4, show_progress=False, **RULE)
    assert scored == [] and again["shards_filtered_this_run"] == 0 and again["kept"] == summary["kept"]


def test_a_run_with_other_settings_cannot_resume(filtered, scorer, pool_dir, tmp_path):
    output_dir = copy_of(filtered, tmp_path)
    with pytest.raises(ValueError, match=r"other settings \(std_threshold differ\)"):
        filter_pool(scorer, pool_dir, output_dir=output_dir, pred_threshold=0.9, std_threshold=0.05)


def test_streamed_pools_are_cut_into_shards_with_the_same_result(filtered, scorer, pool_dir, tmp_path):
    files = [str(pool_dir / name) for name in SHARDS if name.endswith(".jsonl")]
    stream = load_dataset("json", data_files=files, split="train", streaming=True)
    options = {"batch_size": 4, "show_progress": False, **RULE}
    summary = filter_pool(scorer, TrajectoryPool(stream, shard_size=12), output_dir=tmp_path / "stream", **options)
    assert list(summary["shards"]) == ["train-00000", "train-00001", "train-00002"]
    in_parquet = set(load_steps(pool_dir / "pool-3.parquet")["id"])
    expected = {item_id: row for item_id, row in kept_rows(filtered[0]).items() if item_id not in in_parquet}
    assert kept_rows(tmp_path / "stream") == expected

    single_file = filter_pool(scorer, TrajectoryPool(files[0], shard_size=5), output_dir=tmp_path / "file", **options)
    assert list(single_file["shards"]) == ["pool-0-00000", "pool-0-00001", "pool-0-00002"]
    assert [shard["seen"] for shard in single_file["shards"].values()] == [5, 5, 2]
    dataset = load_steps(files[0])
    chunks = [dataset.select(range(start, min(start + 5, dataset.num_rows))) for start in range(0, 12, 5)]
    assert set(kept_rows(tmp_path / "file")) == uncertain_by_the_rule(scorer, chunks)[1]


def test_two_processes_split_the_shards_and_give_the_single_process_result(filtered, model_dir, pool_dir, tmp_path):
    """``accelerate launch --multi_gpu`` starts two processes (on the CPUs here); shard k goes to process k % 2."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "actprm.cli"]
    output_dir = tmp_path / "two"
    command = launch + ["filter", "--model", model_dir, "--data", str(pool_dir), "--output_dir", str(output_dir)]
    completed = subprocess.run(
        command + ["--batch_size", "4"], capture_output=True, text=True, timeout=300, check=False
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert [line for line in completed.stdout.splitlines() if line.startswith("kept ")] == [
        completed.stdout.strip()
    ]  # only the main process reports
    summary = json.loads((output_dir / "summary.json").read_text())
    assert {name: shard["process_index"] for name, shard in summary["shards"].items()} == {
        "pool-0": 0,
        "pool-1": 1,
        "pool-2": 0,
        "pool-3": 1,
    }
    assert kept_rows(output_dir) == kept_rows(filtered[0])
    assert (summary["seen"], summary["kept"]) == (filtered[1]["seen"], filtered[1]["kept"])


def test_score_command_prints_and_writes_what_the_step_scorer_gives(model_dir, scorer, pool_dir, tmp_path, capsys):
    data = pool_dir / "pool-3.parquet"
    dataset = load_steps(data)
    expected = [
        {"id": item_id, **result}
        for item_id, result in zip(dataset["id"], scorer.score(dataset, threshold=0.7, show_progress=False))
    ]
    assert cli(["score", "--model", model_dir, "--data", str(data), "--threshold", "0.7"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == expected
    output = tmp_path / "scores" / "pool-3.jsonl"
    assert cli(["score", "--model", model_dir, "--data", str(data), "--threshold", "0.7", "--output", str(output)]) == 0
    assert [json.loads(line) for line in output.read_text().splitlines()] == expected
    assert capsys.readouterr().out == ""
    chat = StepScorer(scorer.model, scorer.tokenizer, use_chat_template=True, system_prompt="Check every step.")
    expected = [result["scores"] for result in chat.score(dataset, show_progress=False)]
    argv = ["score", "--model", model_dir, "--data", str(data), "--use_chat_template", "true", "--system_prompt", "Check every step."]
    assert cli(argv) == 0
    assert [json.loads(line)["scores"] for line in capsys.readouterr().out.splitlines()] == expected
    assert expected != [result["scores"] for result in printed]  # the layout changed the scores


def test_cli_exit_codes(filtered, model_dir, pool_dir, tmp_path, capsys):
    output_dir = copy_of(filtered, tmp_path)
    argv = ["filter", "--model", model_dir, "--data", str(pool_dir), "--output_dir", str(output_dir)]
    assert cli(argv) == 0
    assert f"kept {filtered[1]['kept']} of 48 trajectories" in capsys.readouterr().out
    missing = str(tmp_path / "missing")
    broken = Path(shutil.copytree(pool_dir, tmp_path / "broken"))
    lines = (broken / "pool-1.jsonl").read_text().splitlines()
    lines[2] = json.dumps({**json.loads(lines[2]), "steps": "one string"})
    (broken / "pool-1.jsonl").write_text("\n".join(lines) + "\n")
    broken_argv = ["filter", "--model", model_dir, "--data", str(broken), "--output_dir", str(tmp_path / "b")]
    failures = {
        "filter data": (["filter", "--model", model_dir, "--data", missing, "--output_dir", missing], "no such file"),
        "pred threshold": (argv + ["--pred_threshold", "0.4"], "pred_threshold must be in (0.5, 1], got 0.4"),
        "std threshold": (argv + ["--std_threshold", "-1"], "std_threshold must be >= 0, got -1.0"),
        "settings": (argv + ["--pred_threshold", "0.8"], "other settings (pred_threshold differ)"),
        "record": (broken_argv, "pool-1.jsonl, record line 3, field 'steps': expected a list of strings"),
        "model": (["filter", "--model", missing, "--data", str(pool_dir), "--output_dir", missing], "no model folder"),
        "score data": (["score", "--model", model_dir, "--data", missing], "no such file"),
        "threshold": (["score", "--model", model_dir, "--data", missing, "--threshold", "1.5"], "(0, 1), got 1.5"),
        "format": (["score", "--model", model_dir, "--data", str(pool_dir), "--data_format", "csv"], "unknown format"),
    }
    for name, (failing, message) in failures.items():
        assert cli(failing) == 2, name
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("actprm")]
        assert len(errors) == 1 and errors[0].startswith(f"actprm {failing[0]}: error:"), (name, errors)
        assert message in errors[0], (name, errors)
    # the run stopped by the bad record resumes after the shard it finished, now leaving that record out
    with pytest.warns(SkippedRecordsWarning, match="pool-1.jsonl, record line 3"):
        assert cli(broken_argv + ["--on_error", "skip"]) == 0
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert (summary["seen"], summary["shards"]["pool-1"]["seen"], summary["shards_filtered_this_run"]) == (47, 11, 3)


def test_the_filter_needs_an_ensemble_with_several_heads(tiny_backbone, pool_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    single = EnsemblePRMModel.from_backbone(tiny_backbone, tokenizer=tokenizer, num_ensemble=1, head_hidden_size=8)
    with pytest.raises(ValueError, match="at least 2 heads"):
        filter_pool(StepScorer(single, tokenizer), pool_dir, output_dir=tmp_path)
