"""The real path: SmolLM2-135M-Instruct from its GGUF file, on real PRM800K and ProcessBench rows.

The GGUF file is de-quantised once per session (`real_model.smollm2_converted`); sequences are kept
short (at most 192 tokens, batches of 2) so the whole module runs in a few minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from real_model import served_smollm2, smollm2_backbone, smollm2_converted, smollm2_gguf  # noqa: F401

from actprm.gguf_loading import check_gguf_file, resolve_gguf_file
from actprm.modeling import EnsemblePRMModel
from actprm.trainer import ActivePRMTrainer
from actprm.training_args import ActivePRMConfig

MAX_LENGTH = 192


def patched_copy(source, target, old: bytes, new: bytes):
    """A byte-for-byte copy of ``source`` with the first ``old`` in its header replaced by ``new`` (same length)."""
    assert len(old) == len(new)
    data = bytearray(source.read_bytes())
    position = data.index(old, 0, 4_000_000)
    data[position : position + len(old)] = new
    target.write_bytes(bytes(data))
    return target


# ---------------------------------------------------------------------------------------------
# GGUF backbones load de-quantised and save as ordinary safetensors


def test_gguf_backbone_saves_and_reloads_as_ordinary_safetensors(smollm2_converted, smollm2_gguf):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = smollm2_converted.model
    assert getattr(loaded, "hf_quantizer", None) is None and not hasattr(loaded.config, "quantization_config")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    saved = json.loads((Path(smollm2_converted.path) / "config.json").read_text())
    assert "quantization_config" not in saved and saved["model_type"] == "llama"
    assert (Path(smollm2_converted.path) / "model.safetensors").is_file()
    reloaded = AutoModelForCausalLM.from_pretrained(smollm2_converted.path).eval()
    tokenizer = AutoTokenizer.from_pretrained(smollm2_converted.path)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    ids = tokenizer("Natalia sold clips to 48 of her friends.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, loaded(ids).logits, rtol=0, atol=1e-5)
    assert check_gguf_file(smollm2_gguf).architecture == "llama"


# ---------------------------------------------------------------------------------------------
# Bad GGUF input: one clear error naming the file, before anything loads


def test_gguf_of_an_architecture_transformers_cannot_dequantise(smollm2_gguf, tmp_path):
    key = b"general.architecture\x08\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00"  # a string of 5 bytes
    bad = patched_copy(smollm2_gguf, tmp_path / "rwkv.gguf", key + b"llama", key + b"rwkv6")
    with pytest.raises(ValueError, match=rf"{bad} holds a 'rwkv6' model, an architecture transformers cannot de-quantise"):
        EnsemblePRMModel.from_backbone(tmp_path, gguf_file=bad.name)


def test_corrupt_gguf_files(smollm2_gguf, tmp_path):
    not_gguf = tmp_path / "noise.gguf"
    not_gguf.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(ValueError, match=rf"{not_gguf} is not a readable GGUF file: .*magic"):
        EnsemblePRMModel.from_backbone(tmp_path, gguf_file=not_gguf)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(smollm2_gguf.read_bytes()[:3_000_000])
    with pytest.raises(ValueError, match=rf"{cut} is cut short: its tensor table needs 98,362,432 bytes, the file has 3,000,000"):
        EnsemblePRMModel.from_backbone(tmp_path, gguf_file=cut)


def test_gguf_without_chat_template_refused_when_use_chat_template(smollm2_gguf, tmp_path):
    bad = patched_copy(smollm2_gguf, tmp_path / "no-template.gguf", b"tokenizer.chat_template", b"tokenizer.chat_templatX")
    assert not check_gguf_file(bad).has_chat_template
    args = ActivePRMConfig(
        output_dir=str(tmp_path / "run"), use_chat_template=True, model_init_kwargs={"gguf_file": str(bad)},
        report_to="none", use_cpu=True,
    )
    with pytest.raises(ValueError, match=rf"use_chat_template is set, but the tokenizer in {bad} has no chat template"):
        ActivePRMTrainer(str(tmp_path), args=args)
    assert not (tmp_path / "run").exists()


def test_gguf_file_in_a_relative_folder_resolves_to_its_absolute_path(smollm2_gguf, monkeypatch):
    monkeypatch.chdir(smollm2_gguf.parent.parent)
    folder = Path(smollm2_gguf.parent.name)  # relative, as `--shared_dir ../shared` gives it
    for gguf_file in (smollm2_gguf.name, folder / smollm2_gguf.name):
        resolved = resolve_gguf_file(folder, gguf_file)
        assert resolved == str(smollm2_gguf.resolve()) and os.path.join(folder, resolved) == resolved


def test_gguf_needs_the_gguf_package(smollm2_gguf, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(ImportError, match=rf"reading the GGUF file {smollm2_gguf} needs the `gguf` package: pip install 'actprm\[gguf\]'"):
        EnsemblePRMModel.from_backbone(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)


# ---------------------------------------------------------------------------------------------
# Real rows: PRM800K (human step ratings) and ProcessBench GSM8K, shortest first


@pytest.fixture(scope="module")
def prm800k_short(prm800k_data) -> list[dict]:
    """Rated PRM800K phase-1 train trajectories, shortest first, one per problem."""
    from actprm.data import load_steps

    dataset = load_steps(prm800k_data, split="phase1_train")
    lengths = [len(problem) + sum(map(len, steps)) for problem, steps in zip(dataset["problem"], dataset["steps"])]
    rows, problems = [], set()
    for index in sorted(range(len(lengths)), key=lengths.__getitem__):
        row = dataset[index]
        if row["label"] is not None and row["problem"] not in problems:
            rows.append(row)
            problems.add(row["problem"])
        if len(rows) == 50:
            return rows
    return rows


def prm800k_rows(prm800k_short, count: int) -> list[dict]:
    """``count`` short trajectories of distinct problems: half with a wrong step, half all correct."""
    wrong = [row for row in prm800k_short if row["label"] >= 0][: count // 2]
    correct = [row for row in prm800k_short if row["label"] == -1][: count - count // 2]
    return [row for pair in zip(wrong, correct) for row in pair] + wrong[len(correct):] + correct[len(wrong):]


def make_args(tmp_path, **overrides) -> ActivePRMConfig:
    options = dict(
        output_dir=str(tmp_path / "run"), per_device_train_batch_size=2, max_length=MAX_LENGTH, num_ensemble=4,
        head_hidden_size=32, learning_rate=1e-4, selection="all", use_chat_template=True, system_prompt=SYSTEM_PROMPT,
        save_strategy="no", report_to="none", use_cpu=True, seed=0, disable_tqdm=True, logging_steps=1,
    )
    return ActivePRMConfig(**{**options, **overrides})


SYSTEM_PROMPT = "You check math solutions one step at a time."


def classification_loss(model, trainer, rows: list[int]) -> float:
    batch = trainer.data_collator([dict(trainer.train_dataset[r]) for r in rows])
    model.eval()
    with torch.no_grad():
        return model(batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).classification_loss.item()


def test_pool_mode_on_prm800k_with_the_chat_template(smollm2_backbone, prm800k_short, tmp_path):
    from datasets import Dataset
    from transformers import AutoTokenizer

    from actprm.scoring import StepScorer

    pool = Dataset.from_list(prm800k_rows(prm800k_short, 2))  # one batch: a step is wrong in one of them
    trainer = ActivePRMTrainer(smollm2_backbone, args=make_args(tmp_path, max_steps=3), train_dataset=pool)
    model, tokenizer = trainer.model, trainer.processing_class
    # the separator is a new token of the real tokenizer, the embeddings grew to fit it
    separator_id = model.config.separator_token_id
    assert len(tokenizer) == 49153 and separator_id == 49152 and tokenizer.convert_ids_to_tokens(separator_id) == "<extra_0>"
    assert model.model.get_input_embeddings().num_embeddings == 49153
    # inputs are the model's own ChatML turns with our system prompt
    row = trainer.train_dataset[0]
    text = tokenizer.decode(row["input_ids"])
    assert text.startswith(f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{pool[0]['problem']}")
    assert "<|im_start|>assistant\n" in text and row["input_ids"].count(separator_id) == len(pool[0]["steps"])
    before = classification_loss(model, trainer, [0, 1])
    trainer.train()
    after = classification_loss(model, trainer, [0, 1])
    assert trainer.state.global_step == 3 and after < before, (before, after)
    # saved and reloaded, the PRM scores as it did in memory
    trainer.save_model()
    in_memory = StepScorer(model, tokenizer).score(pool, batch_size=2, show_progress=False)
    reloaded = StepScorer.from_pretrained(trainer.args.output_dir)
    assert reloaded.settings["use_chat_template"] and reloaded.settings["system_prompt"] == SYSTEM_PROMPT
    assert len(AutoTokenizer.from_pretrained(trainer.args.output_dir)) == 49153
    for expected, result in zip(in_memory, reloaded.score(pool, batch_size=2, show_progress=False)):
        assert len(result["scores"]) == len(expected["scores"]) > 0
        assert result["scores"] == pytest.approx(expected["scores"], abs=1e-5)
        assert result["stds"] == pytest.approx(expected["stds"], abs=1e-5)


# ---------------------------------------------------------------------------------------------
# LoRA on the real Llama projections, with gradient checkpointing


def test_lora_and_gradient_checkpointing_on_the_real_model(smollm2_backbone, prm800k_short, tmp_path):
    from datasets import Dataset
    from peft import LoraConfig

    pool = Dataset.from_list(prm800k_rows(prm800k_short, 2))
    args = make_args(tmp_path, max_steps=1, learning_rate=1e-2, activation_checkpointing=True)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    trainer = ActivePRMTrainer(smollm2_backbone, args=args, train_dataset=pool, peft_config=lora)
    model = trainer.model
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    adapters = {name for name in trainable if "lora_" in name}
    assert len(adapters) == 30 * 2 * 2  # 30 layers x (q_proj, v_proj) x (A, B)
    assert trainable - adapters and all(".score." in name for name in trainable - adapters)
    backbone = model.get_base_model().model
    attention_calls = []  # inside the checkpointed layer: run in the forward, and again in the backward
    backbone.layers[0].self_attn.register_forward_pre_hook(lambda *_: attention_calls.append(torch.is_grad_enabled()))
    trainer.train()
    assert backbone.is_activation_checkpointing and len(attention_calls) == 2
    changed = {name for name, param in model.named_parameters() if not torch.equal(param, before[name])}
    assert changed <= trainable
    assert {name for name in changed if "lora_B" in name} == {name for name in adapters if "lora_B" in name}
    assert any(".score.modules_to_save." in name for name in changed)


# ---------------------------------------------------------------------------------------------
# Online mode: SmolLM2-135M-Instruct itself, behind `transformers serve`, answers the critique prompt


def test_online_mode_with_smollm2_as_the_judge(
    served_smollm2, smollm2_backbone, prm800k_short, tmp_path, monkeypatch, record_property
):
    from datasets import Dataset

    from actprm.judges import AnnotationStore, JudgeFailure, OpenAIJudge
    from actprm.judges.prompt import UnparseableOutputError, parse_first_error

    rows = prm800k_rows(prm800k_short, 2)
    pool = Dataset.from_list([{**row, "label": None, "step_labels": None} for row in rows])
    judge = OpenAIJudge(served_smollm2, smollm2_backbone, concurrency=2, max_tokens=48, parse_retries=0, backoff=0.01)
    answers = []  # every result the judge hands the trainer
    annotate = judge.annotate
    monkeypatch.setattr(judge, "annotate", lambda items: answers.extend(annotate(items)) or answers[-len(items):])
    trainer = ActivePRMTrainer(
        smollm2_backbone, args=make_args(tmp_path, max_steps=1), train_dataset=pool, judge=judge
    )
    trainer.train()
    failures = [(row, answer) for row, answer in zip(rows, answers) if isinstance(answer, JudgeFailure)]
    stored = AnnotationStore(trainer.annotations_path).rows()
    report = f"{len(stored)} of {len(rows)} answers parsed to a first-error label"
    record_property("smollm2_judge", report)
    print(f"SmolLM2-135M-Instruct as judge: {report}")
    assert len(answers) == len(rows) and len(stored) + len(failures) == len(rows)
    summary = trainer.active_learning_summary()
    assert summary["annotations"] == len(stored) and summary["judge_failures"] == len(failures)
    assert summary["trained"] == len(stored)  # only what parsed is trained on
    for annotation in stored:  # every label is exactly what the model wrote
        assert annotation["label"] == parse_first_error(annotation["raw_output"], len(annotation["steps"]))
    for row, failure in failures:  # and what did not parse is not guessed into one
        assert failure.reason.startswith("unparseable answer") and not failure.server_error
        with pytest.raises(UnparseableOutputError):
            parse_first_error(failure.raw_output, len(row["steps"]))


# ---------------------------------------------------------------------------------------------
# The command line: train from the GGUF file, then `actprm eval` and `actprm score` on the result


@pytest.fixture(scope="module")
def gsm8k_slice(processbench_data, tmp_path_factory):
    """The 2 shortest all-correct and 2 shortest erroneous ProcessBench GSM8K solutions, in its own format."""
    records = json.loads((processbench_data / "gsm8k.json").read_text())
    records.sort(key=lambda r: len(r["problem"]) + sum(map(len, r["steps"])))
    folder = tmp_path_factory.mktemp("processbench-gsm8k")
    chosen = [r for r in records if r["label"] == -1][:2] + [r for r in records if r["label"] != -1][:2]
    (folder / "gsm8k.json").write_text(json.dumps(chosen))
    return folder


def test_cli_train_from_gguf_then_eval_and_score(smollm2_gguf, prm800k_short, gsm8k_slice, tmp_path, capsys):
    from actprm.cli import main as cli

    rows = prm800k_rows(prm800k_short, 2)
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(row) + "\n" for row in rows))
    output_dir = tmp_path / "prm"
    cli([
        "train", "--model_name_or_path", str(smollm2_gguf.parent), "--gguf_file", smollm2_gguf.name,
        "--dataset", str(pool), "--output_dir", str(output_dir), "--max_steps", "1",
        "--per_device_train_batch_size", "2", "--max_length", str(MAX_LENGTH), "--num_ensemble", "2",
        "--head_hidden_size", "16", "--selection", "all", "--use_chat_template", "--system_prompt", SYSTEM_PROMPT,
        "--save_strategy", "no", "--report_to", "none", "--use_cpu", "--disable_tqdm", "true",
    ])  # fmt: skip
    assert "trained on 2 of 2 trajectories" in capsys.readouterr().out
    config = json.loads((output_dir / "config.json").read_text())
    assert "quantization_config" not in json.dumps(config) and config["backbone_config"]["model_type"] == "llama"
    assert (output_dir / "model.safetensors").is_file() and not list(output_dir.glob("*.gguf"))

    eval_dir = tmp_path / "eval"
    cli(["eval", "--model", str(output_dir), "--benchmark", "processbench", "--data", str(gsm8k_slice),
         "--output_dir", str(eval_dir), "--batch_size", "2", "--subsets", "gsm8k"])  # fmt: skip
    summary = json.loads((eval_dir / "summary.json").read_text())
    gsm8k = summary["per_subset"]["gsm8k"]
    assert gsm8k["num_items"] == 4 and 0 <= gsm8k["f1"] <= 1 and summary["scorer"]["use_chat_template"]
    predictions = [json.loads(line) for line in (eval_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 4

    scores_path = tmp_path / "scores.jsonl"
    cli(["score", "--model", str(output_dir), "--data", str(gsm8k_slice / "gsm8k.json"), "--data_format",
         "processbench", "--output", str(scores_path), "--batch_size", "2"])  # fmt: skip
    scored = [json.loads(line) for line in scores_path.read_text().splitlines()]
    steps = {r["id"]: len(r["steps"]) for r in json.loads((gsm8k_slice / "gsm8k.json").read_text())}
    assert [r["id"] for r in scored] == list(steps)
    for result in scored:
        assert len(result["scores"]) == result["num_steps"] == steps[result["id"]] and not result["truncated"]
        assert all(0 < score < 1 for score in result["scores"])
        assert result["first_error"] == next((i for i, s in enumerate(result["scores"]) if s < 0.5), -1)
    # both commands read the same model the same way: eval's predictions are score's first errors
    first_errors = {r["id"]: r["first_error"] for r in scored}
    assert {p["id"]: p["first_error"] for p in predictions} == first_errors
