"""Hub integration: cards that parse back, pushes checked at the `HfApi` boundary, loading back by Hub id.

No Hub is reachable: a real (tiny) online active-learning run, real ``actprm eval`` summaries and real
card and Parquet files are made, and the `HfApi` methods that would send them are replaced by spies
that record what they were given. A repo "downloaded" into a Hub cache from exactly those files must
load by its Hub id. Datasets are pushed by a fresh process to `tests/hub_server.py`, a real HTTP server
speaking the Hub's upload API, and read back from what it stored.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections import Counter
from concurrent.futures import Future
from pathlib import Path

import pytest
import torch
from datasets import load_dataset
from huggingface_hub import (
    CommitInfo,
    DatasetCard,
    DatasetCardData,
    HfApi,
    ModelCard,
    ModelCardData,
    RepoUrl,
    constants,
    metadata_load,
)
from huggingface_hub.repocard_data import model_index_to_eval_results
from huggingface_hub.utils import filter_repo_objects
from huggingface_hub.utils._paths import DEFAULT_IGNORE_PATTERNS
from transformers import Trainer

from conftest import free_port, missing, server_process

import actprm
from actprm import AnnotationStore, ArithmeticJudge, EnsemblePRMModel, make_arithmetic_dataset
from actprm.cli import main as cli
from actprm.data import PROCESSBENCH_SUBSETS
from actprm.evaluation import evaluate_prmbench, evaluate_processbench
from actprm.hub import push_dataset, push_model
from actprm.judges import ANNOTATION_FEATURES
from actprm.model_card import (
    CARD_TAGS,
    DATASET_CARD_TEMPLATE,
    MODEL_CARD_TEMPLATE,
    TRAINING_REPORT_FILE,
    TrainingReport,
    build_dataset_card,
    card_template_path,
    eval_results_from_summaries,
)
from actprm.scoring import StepScorer
from actprm.trainer import ActivePRMTrainer
from actprm.training_args import ActivePRMConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_testTokenThatMustNeverBeShown0123456789"
MODEL_FILES = [
    "README.md", TRAINING_REPORT_FILE, "chat_template.jinja", "config.json", "model.safetensors",
    "tokenizer.json", "tokenizer_config.json",
]  # fmt: skip


# ----- a real run, real evaluation summaries -----


@pytest.fixture(scope="module")
def run(tiny_backbone, tmp_path_factory):
    """An online run (ArithmeticJudge labels what the ensemble is unsure of) saved with its card and report."""
    output_dir = tmp_path_factory.mktemp("run")
    pool = make_arithmetic_dataset(8, seed=3).map(lambda row: {"label": None, "step_labels": None})
    args = ActivePRMConfig(
        output_dir=str(output_dir), per_device_train_batch_size=4, num_train_epochs=1, learning_rate=1e-3,
        num_ensemble=2, head_hidden_size=8, max_length=256, save_strategy="no", report_to="none", use_cpu=True,
        seed=0, disable_tqdm=True, judge_batch_size=4, max_annotations=100,
    )  # fmt: skip
    torch.manual_seed(0)
    trainer = ActivePRMTrainer(tiny_backbone, args=args, train_dataset=pool, judge=ArithmeticJudge())
    trainer.train()
    trainer.save_model()
    return trainer


@pytest.fixture(scope="module")
def summaries(run, processbench_data, prmbench_data, tmp_path_factory):
    """``actprm eval`` summaries of the run's model on small ProcessBench and PRMBench slices."""
    folder = tmp_path_factory.mktemp("benchmarks")
    (folder / "processbench").mkdir()
    for subset in PROCESSBENCH_SUBSETS:
        records = json.loads((processbench_data / f"{subset}.json").read_text())
        chosen = [r for r in records if r["label"] == -1][:2] + [r for r in records if r["label"] != -1][:2]
        (folder / "processbench" / f"{subset}.json").write_text(json.dumps(chosen))
    (folder / "prmbench").mkdir()
    for name in ("prm800k_test_p1_4o_circular.jsonl", "prm800k_test_p1_4o_redundency.jsonl"):
        lines = (prmbench_data / name).read_text().splitlines(keepends=True)[:3]
        (folder / "prmbench" / name).write_text("".join(lines))
    scorer = StepScorer.from_pretrained(run.args.output_dir)
    options = {"batch_size": 4, "show_progress": False}
    processbench = evaluate_processbench(scorer, folder / "processbench", output_dir=folder / "eval-pb", **options)
    prmbench = evaluate_prmbench(scorer, folder / "prmbench", output_dir=folder / "eval-prm", **options)
    return {"processbench": processbench, "prmbench": prmbench, "folder": folder}


@pytest.fixture(scope="module")
def model_dir(run, summaries):
    """The run's folder with the card the trainer wrote (evaluation results included)."""
    run.create_model_card(
        license="apache-2.0", dataset="user/arithmetic-pool",
        eval_summaries=[summaries["processbench"], summaries["prmbench"]],
    )  # fmt: skip
    return Path(run.args.output_dir)


# ----- the HfApi boundary -----


class HubSpy:
    """Stands in for the Hub: records every call of the replaced `HfApi` methods, with the files sent."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self.tokens: list[str | None] = []

    def named(self, method: str) -> list[dict]:
        return [kwargs for name, kwargs in self.calls if name == method]

    def sent_files(self) -> dict[str, bytes]:
        (commit,) = self.named("create_commit") or self.named("upload_folder")
        return commit["files"]

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        spy = self

        def record(api: HfApi, method: str, **kwargs) -> None:
            spy.calls.append((method, kwargs))
            spy.tokens.append(api.token)

        def create_repo(api, repo_id, **kwargs):
            record(api, "create_repo", repo_id=repo_id, **kwargs)
            prefix = "datasets/" if kwargs.get("repo_type") == "dataset" else ""
            return RepoUrl(f"{constants.ENDPOINT}/{prefix}{repo_id}")

        def create_branch(api, repo_id, **kwargs):
            record(api, "create_branch", repo_id=repo_id, **kwargs)

        def create_commit(api, repo_id, operations, **kwargs):
            files = {}
            for operation in operations:
                with operation.as_file() as file:
                    files[operation.path_in_repo] = file.read()
            record(api, "create_commit", repo_id=repo_id, files=files, **kwargs)
            return commit_info(repo_id, kwargs)

        def upload_folder(api, *, repo_id, folder_path, run_as_future=False, **kwargs):
            folder = Path(folder_path)
            paths = [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file()]
            ignored = [*(kwargs.get("ignore_patterns") or []), *DEFAULT_IGNORE_PATTERNS]  # as HfApi filters them
            kept = filter_repo_objects(paths, allow_patterns=kwargs.get("allow_patterns"), ignore_patterns=ignored)
            prefix = f"{kwargs['path_in_repo']}/" if kwargs.get("path_in_repo") else ""
            files = {prefix + path: (folder / path).read_bytes() for path in kept}
            record(api, "upload_folder", repo_id=repo_id, files=files, **kwargs)
            commit = commit_info(repo_id, kwargs)
            if not run_as_future:
                return commit
            done = Future()
            done.set_result(commit)
            return done

        def whoami(api, token=None):
            record(api, "whoami")
            return {"name": "me", "type": "user"}

        def commit_info(repo_id: str, kwargs: dict) -> CommitInfo:
            url = f"{constants.ENDPOINT}/{'datasets/' if kwargs.get('repo_type') == 'dataset' else ''}{repo_id}"
            return CommitInfo(
                commit_url=f"{url}/commit/{'0' * 40}", commit_message=kwargs["commit_message"], commit_description="",
                oid="0" * 40, pr_url=f"{url}/discussions/1" if kwargs.get("create_pr") else None,
            )  # fmt: skip

        for method in (create_repo, create_branch, create_commit, upload_folder, whoami):
            monkeypatch.setattr(HfApi, method.__name__, method)


@pytest.fixture
def hub(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    spy = HubSpy()
    spy.install(monkeypatch)
    return spy


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    """A machine where nobody logged in: no HF_TOKEN and no token file."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


def snapshot(files: dict[str, bytes], cache_dir: Path, repo_id: str) -> Path:
    """Lay ``files`` out as the Hub cache does after a download of ``repo_id`` at ``main``."""
    repo = cache_dir / f"models--{repo_id.replace('/', '--')}"
    commit = "1" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    for name, content in files.items():
        path = repo / "snapshots" / commit / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return repo / "snapshots" / commit


# ----- cards -----


def test_model_card_parses_back_with_training_statistics_and_eval_results(run, model_dir, summaries):
    readme = model_dir / "README.md"
    card = ModelCard.load(readme)  # strict: a bad model-index raises
    metadata = metadata_load(readme)
    ModelCardData(**metadata)  # the offline metadata checks of huggingface_hub
    assert metadata["library_name"] == "actprm" and metadata["license"] == "apache-2.0"
    assert metadata["datasets"] == ["user/arithmetic-pool"]
    assert set(CARD_TAGS) <= set(metadata["tags"])
    assert "base_model" not in metadata  # the backbone is a local folder, not a Hub model

    name, results = model_index_to_eval_results(metadata["model-index"])
    assert name == card.data.model_name == model_dir.name
    assert results == eval_results_from_summaries([summaries["processbench"], summaries["prmbench"]])
    for result in results:
        summary = summaries["processbench"] if result.dataset_name == "ProcessBench" else summaries["prmbench"]
        scores = summary["per_subset"][result.dataset_split] if result.dataset_split else summary.get("average", summary)
        assert result.metric_value == pytest.approx(100 * scores[result.metric_type], abs=0.005)
    splits = {r.dataset_split for r in results if r.dataset_name == "ProcessBench"}
    assert splits == {*PROCESSBENCH_SUBSETS, None}

    statistics = {name: int(value) for name, value in run.active_learning_summary().items()}
    report = TrainingReport.load(model_dir)
    assert report.statistics == statistics and report.mode == "online" and report.judge == "arithmetic"
    assert report.pool_size == 8 and report.hyperparameters["training_steps"] == run.state.global_step
    text = card.text
    assert f"| Trajectories seen | {statistics['seen']} |" in text
    assert f"| Annotated | {statistics['annotations']} |" in text
    assert f"| Judge tokens | {statistics['judge_tokens']} |" in text
    assert "judge `arithmetic`" in text and "standard deviation <= 0.01" in text and "mean probability >= 0.9" in text
    gsm8k = summaries["processbench"]["per_subset"]["gsm8k"]
    expected_row = "| gsm8k | 4 | {:.1f} | {:.1f} |".format(100 * gsm8k["error_acc"], 100 * gsm8k["correct_acc"])
    assert expected_row in text
    for classification in summaries["prmbench"]["per_classification"]:
        assert f"| {classification} |" in text
    for arxiv in ("2504.10559", "2412.06559", "2501.03124"):
        assert f"arXiv:{arxiv}" in text
    assert str(ModelCard(str(card))) == str(card)  # stable under a parse and re-render


def test_model_card_snippets_load_and_score_by_hub_id(model_dir, hub, tmp_path):
    """The card's two snippets, run as they are on a machine whose Hub cache holds what was pushed."""
    push_model(model_dir, "user/tiny-prm", license="apache-2.0")
    cache = tmp_path / "hub-cache"
    snapshot(hub.sent_files(), cache, "user/tiny-prm")
    readme = hub.sent_files()["README.md"].decode()
    snippets = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert len(snippets) == 2 and all('"user/tiny-prm"' in s for s in snippets)
    report = "import json\nprint('RESULT', json.dumps({'results': results, 'model': type(model).__name__}))\n"
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", "\n".join([*snippets, report])], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    output = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert output["model"] == "EnsemblePRMModel"  # AutoModel, after `import actprm.modeling`, without trust_remote_code
    (result,) = output["results"]
    example = re.search(r"scorer\.score\(\[\n\s*(\{.*\}),\n\]\)", snippets[0]).group(1)
    expected = StepScorer.from_pretrained(model_dir).score([ast.literal_eval(example)], show_progress=False)[0]
    assert result["scores"] == pytest.approx(expected["scores"], abs=1e-6)
    assert result["first_error"] == expected["first_error"]


def test_dataset_card_describes_labels_and_parses_back(model_dir):
    dataset = AnnotationStore(model_dir / "annotations.jsonl").to_dataset()
    card = build_dataset_card(
        dataset, "user/labels", training=TrainingReport.load(model_dir), license="mit", source="user/arithmetic-pool"
    )
    parsed = DatasetCard(str(card))
    DatasetCardData(**parsed.data.to_dict())
    assert parsed.data.license == "mit" and parsed.data.size_categories == ["n<1K"]
    assert parsed.data.annotations_creators == "machine-generated" and set(CARD_TAGS) <= set(parsed.data.tags)
    text = parsed.text
    assert f"| Solutions | {dataset.num_rows} |" in text
    assert f"| Steps | {sum(len(s) for s in dataset['steps'])} |" in text
    for label, count in Counter(dataset["label"]).items():
        assert f"| {label} | {count} |" in text
    good = sum(row.count(1) for row in dataset["step_labels"])
    assert f"| 1 (good) | {good} |" in text
    assert f"`arithmetic` ({dataset.num_rows})" in text and "standard deviation <= 0.01" in text
    assert "[user/arithmetic-pool](https://huggingface.co/datasets/user/arithmetic-pool)" in text
    for column in ANNOTATION_FEATURES:
        assert f"| `{column}` |" in text


def test_card_templates_are_package_resources_of_the_checkout_folder():
    for name in (MODEL_CARD_TEMPLATE, DATASET_CARD_TEMPLATE):
        template = card_template_path(name)
        assert template.is_relative_to(Path(actprm.__file__).parent)
        assert template.read_text() == (REPO_ROOT / "hub_cards" / name).read_text()


def test_card_templates_are_found_in_a_non_editable_install(tmp_path):
    """A wheel installed in a virtual environment reads the templates from its own files, not from this checkout.

    The environment sees the system's packages, but pip leaves an installation outside it alone. The wheel is
    built by this environment's setuptools (offline: no build isolation), which needs its bdist_wheel.
    """
    if importlib.util.find_spec("setuptools.command.bdist_wheel") is None and importlib.util.find_spec("wheel") is None:
        missing("setuptools >= 70.1 or the `wheel` package is needed to build actprm's wheel offline")
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.cfg", "setup.py", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    for folder in ("actprm", "hub_cards"):
        shutil.copytree(REPO_ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    install = [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-build-isolation", "--no-index"]
    done = subprocess.run([*install, "-q", str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    shutil.rmtree(source)
    probe = (
        "import actprm.model_card as m; "
        f"print(m.__file__); print(m.card_template_path({MODEL_CARD_TEMPLATE!r})); "
        f"print(m.card_template_path({DATASET_CARD_TEMPLATE!r}))"
    )
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}  # not this checkout
    done = subprocess.run([python, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    module, model_template, dataset_template = map(Path, done.stdout.split())
    assert module.is_relative_to(venv)
    for template, name in ((model_template, MODEL_CARD_TEMPLATE), (dataset_template, DATASET_CARD_TEMPLATE)):
        assert template.resolve().is_relative_to(venv)
        assert template.read_text() == (REPO_ROOT / "hub_cards" / name).read_text()


# ----- pushing a model -----


def test_push_model_sends_the_model_tokenizer_and_card_only(model_dir, hub, summaries, capsys, caplog):
    commit = push_model(
        model_dir, "user/tiny-prm", private=True, revision="experiment", commit_message="First PRM",
        eval_summaries=[summaries["processbench"]], license="apache-2.0",
    )  # fmt: skip
    assert [name for name, _ in hub.calls] == ["create_repo", "create_branch", "create_commit"]
    assert hub.named("create_repo") == [{"repo_id": "user/tiny-prm", "repo_type": "model", "private": True, "exist_ok": True}]
    assert hub.named("create_branch") == [
        {"repo_id": "user/tiny-prm", "branch": "experiment", "repo_type": "model", "exist_ok": True}
    ]
    (sent,) = hub.named("create_commit")
    assert {k: v for k, v in sent.items() if k != "files"} == {
        "repo_id": "user/tiny-prm", "commit_message": "First PRM", "repo_type": "model", "revision": "experiment",
        "create_pr": False,
    }  # fmt: skip
    assert sorted(sent["files"]) == MODEL_FILES  # no annotations, judge cache or training_args.bin
    assert {"annotations.jsonl", "judge_cache.sqlite"} <= {p.name for p in model_dir.iterdir()}
    for name in MODEL_FILES[1:]:
        assert sent["files"][name] == (model_dir / name).read_bytes()
    card = ModelCard(sent["files"]["README.md"].decode())
    assert card.data.model_name == "user/tiny-prm" and card.data.license == "apache-2.0"
    assert {r.dataset_name for r in card.data.eval_results} == {"ProcessBench"}
    assert 'StepScorer.from_pretrained("user/tiny-prm")' in card.text
    assert commit.commit_url.startswith("https://huggingface.co/user/tiny-prm/commit/")
    assert hub.tokens == [TOKEN] * 3
    everything = b"".join(sent["files"].values()).decode("utf-8", "replace") + str(capsys.readouterr()) + caplog.text
    assert TOKEN not in everything


def test_pushed_model_loads_by_hub_id(model_dir, hub, tmp_path):
    push_model(model_dir, "user/tiny-prm")
    cache = tmp_path / "hub-cache"
    snapshot(hub.sent_files(), cache, "user/tiny-prm")
    options = {"cache_dir": cache, "local_files_only": True}
    loaded = EnsemblePRMModel.from_pretrained("user/tiny-prm", **options)
    assert "auto_map" not in loaded.config.to_dict()
    local = EnsemblePRMModel.from_pretrained(model_dir).state_dict()
    assert loaded.state_dict().keys() == local.keys()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, local[name]), name
    items = make_arithmetic_dataset(3, seed=9, split="test")
    by_id = StepScorer.from_pretrained("user/tiny-prm", **options).score(items, show_progress=False)
    by_path = StepScorer.from_pretrained(model_dir).score(items, show_progress=False)
    assert [r["scores"] for r in by_id] == [r["scores"] for r in by_path]


def test_trainer_push_to_hub_writes_and_sends_its_card(run, hub, monkeypatch, tmp_path):
    monkeypatch.setattr(run.args, "hub_model_id", "user/from-trainer")
    monkeypatch.setattr(run.args, "output_dir", str(tmp_path / "pushed"))
    assert run.model.model_tags == list(CARD_TAGS)  # the trainer tags its model, as TRL's trainers do
    monkeypatch.setattr(run.model, "model_tags", [*CARD_TAGS, "user-tag"])
    commit = run.push_to_hub(create_pr=True, license="apache-2.0", tags=["arithmetic"])
    assert commit.pr_url == "https://huggingface.co/user/from-trainer/discussions/1"
    assert hub.named("create_repo") == [{"repo_id": "user/from-trainer", "repo_type": "model", "private": False, "exist_ok": True}]
    assert hub.named("create_branch") == []
    (sent,) = hub.named("create_commit")
    assert sent["create_pr"] is True and sent["revision"] is None and sent["commit_message"] == "End of training"
    output_dir = Path(run.args.output_dir)
    assert sent["files"]["README.md"] == (output_dir / "README.md").read_bytes()
    card = ModelCard(sent["files"]["README.md"].decode())
    assert card.data.model_name == "user/from-trainer"
    assert card.data.tags == [*CARD_TAGS, "user-tag", "arithmetic"]  # the model's tags, then the call's, once each
    report = json.loads(sent["files"][TRAINING_REPORT_FILE])
    assert report["statistics"] == {k: int(v) for k, v in run.active_learning_summary().items()}


def test_trainer_push_to_hub_keeps_the_trainer_signature_and_pushes_in_the_background(run, hub, monkeypatch, tmp_path):
    ours, theirs = (inspect.signature(method).parameters for method in (ActivePRMTrainer.push_to_hub, Trainer.push_to_hub))
    positional = [name for name, parameter in theirs.items() if parameter.kind is parameter.POSITIONAL_OR_KEYWORD]
    assert [name for name in ours if ours[name].kind is ours[name].POSITIONAL_OR_KEYWORD] == positional
    monkeypatch.setattr(run.args, "hub_model_id", "user/in-background")
    monkeypatch.setattr(run.args, "output_dir", str(tmp_path / "pushed"))
    future = run.push_to_hub("Background push", False)  # commit_message, blocking: as for `Trainer.push_to_hub`
    assert isinstance(future, Future) and future.result().commit_message == "Background push"
    (sent,) = hub.named("create_commit")
    assert sent["repo_id"] == "user/in-background" and "README.md" in sent["files"]


@pytest.mark.parametrize("push_judge_data", [False, True], ids=["default", "asked"])
def test_checkpoint_pushes_leave_the_judge_data_local_unless_asked(tiny_backbone, hub, tmp_path, push_judge_data):
    output_dir = tmp_path / "run"
    pool = make_arithmetic_dataset(8, seed=3).map(lambda row: {"label": None, "step_labels": None})
    args = ActivePRMConfig(
        output_dir=str(output_dir), per_device_train_batch_size=4, max_steps=2, num_ensemble=2, head_hidden_size=8,
        max_length=256, save_steps=1, report_to="none", use_cpu=True, disable_tqdm=True, judge_batch_size=4,
        selection="all", push_to_hub=True, hub_model_id="user/run", hub_strategy="checkpoint",
        hub_token=TOKEN, push_judge_data=push_judge_data,
    )  # fmt: skip
    ActivePRMTrainer(tiny_backbone, args=args, train_dataset=pool, judge=ArithmeticJudge()).train()
    pushes = hub.named("upload_folder")
    assert len(pushes) == 2 * 2  # at each of the two saves: output_dir, and the checkpoint as last-checkpoint
    sent = {name for push in pushes for name in push["files"]}
    judge_data = {"annotations.jsonl", "judge_cache.sqlite", "last-checkpoint/active_learning_state_rank0.json"}
    assert {"model.safetensors", "last-checkpoint/model.safetensors", "training_args.bin"} <= sent
    assert {"annotations.jsonl", "judge_cache.sqlite", "judge_cache.sqlite-wal"} <= {p.name for p in output_dir.iterdir()}
    if push_judge_data:
        assert judge_data <= sent
    else:
        assert not any(name.startswith(("annotations", "judge_cache")) or "active_learning_state" in name for name in sent)
    assert all(TOKEN.encode() not in content for push in pushes for content in push["files"].values())


def test_bare_repo_name_goes_to_the_token_owner(model_dir, hub):
    push_model(model_dir, "tiny-prm")
    assert [name for name, _ in hub.calls] == ["whoami", "create_repo", "create_commit"]
    assert hub.named("create_commit")[0]["repo_id"] == "me/tiny-prm"
    assert 'from_pretrained("me/tiny-prm")' in hub.sent_files()["README.md"].decode()


# ----- pushing a dataset -----


PUSH_DATASETS = """
import json, shutil, sys
from pathlib import Path
from actprm.cli import main as cli
from actprm.hub import push_dataset

model_dir, root, work, max_shard_size = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
options = {"revision": "v1", "commit_message": "Labels", "license": "mit", "source": "user/arithmetic-pool"}
first = push_dataset(model_dir, "user/labels", private=True, **options)
shutil.copytree(root / "datasets" / "user" / "labels", work / "after-first")
sharded = push_dataset(model_dir / "annotations.jsonl", "user/labels", max_shard_size=max_shard_size, **options)
cli(["push", "--dataset", str(model_dir / "annotations.jsonl"), "--repo-id", "user/labels-pr", "--create-pr"])
print("RESULT", json.dumps({"first": [first, first.pr_url], "sharded": [sharded, sharded.pr_url]}))
"""


@pytest.fixture(scope="module")
def pushed_datasets(model_dir, tmp_path_factory) -> dict:
    """Labels pushed by a fresh process to `tests/hub_server.py`: twice to one branch (the second time in three
    shards), and once from the CLI as a pull request. What it printed, and the server's repos and write log."""
    work, root = tmp_path_factory.mktemp("push-client"), tmp_path_factory.mktemp("hub")
    stored = AnnotationStore(model_dir / "annotations.jsonl").to_dataset()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, str(REPO_ROOT / "tests" / "hub_server.py"), str(root), str(port)]
    with server_process(command, f"{url}/requests", work / "hub.log"):
        env = {**os.environ, "HF_ENDPOINT": url, "HF_HOME": str(work / "hf-home"), "HF_HUB_OFFLINE": "0",
               "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": TOKEN}  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-c", PUSH_DATASETS, str(model_dir), str(root), str(work), str(stored.data.nbytes // 3 + 1)],
            env=env, cwd=work, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        writes = json.loads(urllib.request.urlopen(f"{url}/commits").read())
    assert done.returncode == 0, done.stderr[-4000:]
    printed = json.loads(done.stdout.split("RESULT ", 1)[1])
    return {"printed": printed, "stdout": done.stdout, "writes": writes, "root": root, "work": work, "url": url,
            "stored": stored}  # fmt: skip


def test_push_dataset_sends_parquet_shards_and_card_as_datasets_does(pushed_datasets, tmp_path):
    writes, url, stored = pushed_datasets["writes"], pushed_datasets["url"], pushed_datasets["stored"]
    first = [write for write in writes[:4] if write["repo_id"] == "user/labels"]
    assert [(write["action"], write.get("visibility"), write.get("branch") or write.get("revision")) for write in first] == [
        ("create_repo", "private", None), ("create_branch", None, "v1"), ("commit", None, "v1"), ("create_branch", None, "v1"),
    ]  # fmt: skip
    commits = [write for write in writes if write["action"] == "commit" and write["repo_id"] == "user/labels"]
    assert [(c["revision"], c["create_pr"], c["summary"], c["added"], c["deleted"]) for c in commits] == [
        ("v1", False, "Labels", ["README.md"], []),  # the card, then the shards and the card with their metadata
        ("v1", False, "Labels", ["README.md", "data/train-00000-of-00001.parquet"], []),
        ("v1", False, "Labels", ["README.md"], []),  # a second push: its shards replace the first one's
        ("v1", False, "Labels", ["README.md", *(f"data/train-0000{i}-of-00003.parquet" for i in range(3))],
         ["data/train-00000-of-00001.parquet"]),
    ]  # fmt: skip
    first_commit, first_pr = pushed_datasets["printed"]["first"]
    assert first_commit.startswith(f"{url}/datasets/user/labels/commit/") and first_pr is None
    assert {write["token"] for write in writes} == {f"Bearer {TOKEN}"}

    for repo, shards in ((pushed_datasets["work"] / "after-first", 1), (pushed_datasets["root"] / "datasets/user/labels", 3)):
        assert sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file()) == [
            "README.md", *(f"data/train-{i:05d}-of-{shards:05d}.parquet" for i in range(shards))
        ]  # fmt: skip
        loaded = load_dataset(str(repo), split="train", cache_dir=str(tmp_path / f"cache-{shards}"))
        assert loaded.features == ANNOTATION_FEATURES == stored.features
        assert loaded.to_list() == stored.to_list()
        card = DatasetCard.load(repo / "README.md")
        assert card.data.license == "mit" and card.data.configs[0]["data_files"] == [{"split": "train", "path": "data/train-*"}]
        assert card.data.dataset_info["splits"] == [
            {"name": "train", "num_bytes": stored.data.nbytes, "num_examples": stored.num_rows}
        ]
        assert "standard deviation <= 0.01" in card.text  # the run's selection rule, from the report beside the file
        assert all(TOKEN.encode() not in path.read_bytes() for path in repo.rglob("*") if path.is_file())


def test_cli_pushes_a_dataset_as_one_pull_request(pushed_datasets):
    url = pushed_datasets["url"]
    assert f"pushed: {url}/datasets/user/labels-pr/discussions/1" in pushed_datasets["stdout"].splitlines()
    writes = [write for write in pushed_datasets["writes"] if write["repo_id"] == "user/labels-pr"]
    assert [(w["action"], w.get("revision"), w.get("create_pr"), w.get("added")) for w in writes] == [
        ("create_repo", None, None, None),
        ("commit", "main", True, ["README.md"]),  # opens the pull request ...
        ("commit", "refs/pr/1", False, ["README.md", "data/train-00000-of-00001.parquet"]),  # ... the shards join it
    ]  # fmt: skip
    assert writes[0]["visibility"] == "public"


def test_dataset_card_without_a_run_report_says_so(tmp_path):
    store = AnnotationStore(tmp_path / "annotations.jsonl")
    items = make_arithmetic_dataset(8, seed=4)
    store.extend(items, ArithmeticJudge().annotate([{k: r[k] for k in ("id", "problem", "steps")} for r in items]))
    card = build_dataset_card(store.to_dataset(), "user/labels")
    assert "**Selection.** Not recorded." in card.text and "Licence: not stated" in card.text


# ----- missing token, bad input -----


def test_missing_token_fails_before_any_work(run, model_dir, no_token, monkeypatch):
    spy = HubSpy()
    spy.install(monkeypatch)
    before = {path: path.stat().st_mtime_ns for path in model_dir.rglob("*")}
    message = "no Hugging Face token: set HF_TOKEN, run `hf auth login`"
    with pytest.raises(ValueError, match=re.escape(message)):
        push_model(model_dir, "user/tiny-prm")
    with pytest.raises(ValueError, match=re.escape(message)):
        push_dataset(model_dir, "user/labels")
    with pytest.raises(ValueError, match=re.escape(message)):
        run.push_to_hub()
    assert spy.calls == []
    assert {path: path.stat().st_mtime_ns for path in model_dir.rglob("*")} == before  # nothing saved or written


def test_token_from_hf_auth_login_is_used(model_dir, no_token, monkeypatch, tmp_path):
    spy = HubSpy()
    spy.install(monkeypatch)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(token_file))
    push_model(model_dir, "user/tiny-prm")
    assert spy.tokens == [TOKEN, TOKEN]


def test_bad_push_input_is_refused_before_any_call(model_dir, hub, tmp_path):
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(model_dir / name, incomplete / name)
    with pytest.raises(FileNotFoundError, match="lacks tokenizer"):
        push_model(incomplete, "user/tiny-prm")
    with pytest.raises(ValueError, match="pull request is always opened against 'main'"):
        push_model(model_dir, "user/tiny-prm", revision="dev", create_pr=True)
    with pytest.raises(ValueError, match="Repo id must"):
        push_model(model_dir, "user/tiny/prm")
    with pytest.raises(ValueError, match="unknown benchmark 'gsm8k'"):
        push_model(model_dir, "user/tiny-prm", eval_summaries=[{"benchmark": "gsm8k"}])
    with pytest.raises(ValueError, match="ProcessBench summary lacks per_subset, average"):
        push_model(model_dir, "user/tiny-prm", eval_summaries=[{"benchmark": "processbench", "threshold": 0.5}])
    missing = tmp_path / "elsewhere" / "annotations.jsonl"
    with pytest.raises(FileNotFoundError, match="no annotations file"):
        push_dataset(missing, "user/labels")
    assert not missing.parent.exists()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="holds no annotation"):
        push_dataset(empty, "user/labels")
    assert hub.calls == []


# ----- the CLI -----


def test_cli_pushes_a_model(model_dir, summaries, hub, capsys):
    folder = summaries["folder"]
    code = cli([
        "push", "--model-dir", str(model_dir), "--repo-id", "user/tiny-prm", "--private", "--revision", "b1",
        "--commit-message", "From the CLI", "--eval-summary", str(folder / "eval-pb" / "summary.json"),
        str(folder / "eval-prm"), "--license", "apache-2.0",
    ])  # fmt: skip
    assert code == 0
    assert capsys.readouterr().out.strip() == f"pushed: https://huggingface.co/user/tiny-prm/commit/{'0' * 40}"
    (sent,) = hub.named("create_commit")
    assert sent["revision"] == "b1" and sent["commit_message"] == "From the CLI"
    assert hub.named("create_repo")[0]["private"] is True
    card = ModelCard(sent["files"]["README.md"].decode())
    assert {r.dataset_name for r in card.data.eval_results} == {"ProcessBench", "PRMBench"}


def test_cli_bad_input_and_missing_token_give_one_line_errors(model_dir, no_token, capsys):
    assert cli(["push", "--model-dir", str(model_dir), "--repo-id", "user/tiny-prm"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "no Hugging Face token" in error
    assert cli(["push", "--repo-id", "user/x"]) == 2
    assert "pass either --model-dir or --dataset" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli(["push", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--model-dir", "--dataset", "--repo-id", "--private", "--revision", "--create-pr", "--commit-message"):
        assert flag in help_text
