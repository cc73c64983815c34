"""Push a trained PRM, and the labels its judge made, to the Hugging Face Hub.

Both push functions check everything they can before any work: the token (``token=``, else
``HF_TOKEN`` or ``hf auth login``), the options and the files. Then they create the repo if it is
missing (``private`` only applies to a new repo) and the branch named by ``revision`` if it is missing,
and commit (or open a pull request with ``create_pr``, always against the default branch):

- `push_model`: the weights, config, tokenizer and training report of a model folder (as written by
  ``save_pretrained`` or `ActivePRMTrainer.save_model`) and a README.md model card, committed with
  `HfApi.create_commit`; nothing is written or copied locally.
- `push_dataset`: the labels with `datasets.Dataset.push_to_hub` (Parquet shards
  ``data/train-XXXXX-of-YYYYY.parquet``; the shards of an earlier push are deleted) after their dataset
  card with `huggingface_hub.DatasetCard.push_to_hub`, so that ``datasets`` adds ``dataset_info`` and
  ``configs`` to the card's metadata. That is two commits; with ``create_pr`` both go to one pull request.

The token is only handed to `HfApi`: it never appears in logs, cards or error messages.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from datasets import Dataset
from huggingface_hub import CommitInfo, CommitOperationAdd, DatasetCard, HfApi, ModelCard, get_token
from huggingface_hub.constants import DEFAULT_REVISION, REPOCARD_NAME
from huggingface_hub.utils import validate_repo_id

from . import __version__
from .judges import AnnotationStore
from .model_card import TRAINING_REPORT_FILE, TrainingReport, build_dataset_card, build_model_card
from .modeling import EnsemblePRMConfig

MODEL_FILE_PATTERNS = (
    "config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
    "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json", TRAINING_REPORT_FILE,
)  # fmt: skip
"""Files of a model folder that are pushed: the model, its tokenizer and its training report (not
checkpoints, optimizer states, logs, annotations or the judge cache)."""
ANNOTATIONS_FILE = "annotations.jsonl"


def resolve_token(token: str | None = None) -> str:
    """``token``, else the one of ``HF_TOKEN`` or ``hf auth login``.

    Raises:
        ValueError: if there is none.
    """
    token = token or get_token()
    if not token:
        raise ValueError(
            "no Hugging Face token: set HF_TOKEN, run `hf auth login`, or pass a token (with write access) to push"
        )
    return token


def _hub_api(token: str) -> HfApi:
    return HfApi(token=token, library_name="actprm", library_version=__version__)


def full_repo_id(repo_id: str, token: str) -> str:
    """``namespace/name`` for ``repo_id``; a bare name goes to the token owner's namespace (asks the Hub)."""
    validate_repo_id(repo_id)
    return repo_id if "/" in repo_id else f"{_hub_api(token).whoami()['name']}/{repo_id}"


def _check_push(token: str | None, repo_id: str, revision: str | None, create_pr: bool) -> str:
    """The token, once the push options are checked (before any work)."""
    token = resolve_token(token)
    validate_repo_id(repo_id)
    if create_pr and revision not in (None, DEFAULT_REVISION):
        raise ValueError(
            f"a pull request is always opened against {DEFAULT_REVISION!r}: pass either create_pr or revision={revision!r}"
        )
    return token


def _create_repo(api: HfApi, repo_id: str, repo_type: str, private: bool, revision: str | None) -> str:
    """Create the repo (and the ``revision`` branch) when missing; returns the repo id."""
    repo_id = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True).repo_id
    if revision not in (None, DEFAULT_REVISION):
        api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
    return repo_id


class _UploadsLeavingOut:
    """An `HfApi` whose folder uploads also leave out ``patterns`` (its other methods are the api's own)."""

    def __init__(self, api: HfApi, patterns: list[str]):
        self._api, self._patterns = api, patterns

    def __getattr__(self, name: str) -> Any:
        return getattr(self._api, name)

    def upload_folder(self, *, ignore_patterns: list[str] | str | None = None, **kwargs: Any) -> Any:
        given = [ignore_patterns] if isinstance(ignore_patterns, str) else list(ignore_patterns or [])
        return self._api.upload_folder(ignore_patterns=[*given, *self._patterns], **kwargs)


@contextmanager
def trainer_uploads_leaving_out(patterns: Iterable[str]) -> Iterator[None]:
    """Within, the folder uploads of `transformers.Trainer` (its checkpoint pushes) also leave out the files
    matching ``patterns`` (``fnmatch`` patterns on paths relative to the uploaded folder). The patterns are
    fixed when an upload starts, so an upload still running in the background after the block keeps them."""
    from transformers import trainer as trainer_module

    shared, patterns = trainer_module.hf_api, list(patterns)
    trainer_module.hf_api = lambda: _UploadsLeavingOut(shared(), patterns)
    try:
        yield
    finally:
        trainer_module.hf_api = shared


def model_files(model_dir: str | os.PathLike) -> list[str]:
    """The files of ``model_dir`` that `push_model` uploads (sorted), checked for completeness.

    Raises:
        FileNotFoundError: if the folder lacks its config, weights or tokenizer.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: no such model folder")
    names = sorted(
        path.name for path in model_dir.iterdir()
        if path.is_file() and any(fnmatch.fnmatch(path.name, pattern) for pattern in MODEL_FILE_PATTERNS)
    )  # fmt: skip
    needed = {
        "config.json": "config.json",
        "*.safetensors": "safetensors weights",
        "tokenizer_config.json": "tokenizer (save it with tokenizer.save_pretrained into the folder)",
    }
    missing = [what for pattern, what in needed.items() if not fnmatch.filter(names, pattern)]
    if missing:
        raise FileNotFoundError(f"{model_dir} is not a complete model folder: it lacks {', '.join(missing)}")
    return names


def push_model(
    model_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
    card: ModelCard | None = None,
    eval_summaries: Iterable[Mapping[str, Any]] = (),
    license: str | None = None,
) -> CommitInfo:
    """Push an `EnsemblePRMModel` folder (weights, config, tokenizer, training report) with its model card.

    Args:
        model_dir: the folder ``save_pretrained`` (or `ActivePRMTrainer.save_model`) wrote, tokenizer included.
        repo_id: ``namespace/name`` (a bare name goes to the token owner's namespace).
        private: make a new repo private.
        revision: branch to commit to, created from the default branch if missing.
        create_pr: open a pull request against the default branch instead of committing to it.
        commit_message: the commit's title.
        token: a Hugging Face token with write access; by default ``HF_TOKEN`` or the ``hf auth login`` one.
        card: the README.md to push; by default one built by `build_model_card` from the folder's
            config and training report, ``eval_summaries`` and ``license``.
        eval_summaries: ``actprm eval`` summaries (``summary.json`` contents) for the built card.
        license: licence of the weights for the built card.

    Returns:
        The commit (with ``pr_url`` for a pull request).

    Raises:
        ValueError: without a token, for an invalid repo id, ``create_pr`` with a branch, a folder that
            holds no ensemble PRM or bad evaluation summaries; all before anything is sent.
        FileNotFoundError: for an incomplete model folder.
    """
    token = _check_push(token, repo_id, revision, create_pr)
    files = model_files(model_dir)
    config = EnsemblePRMConfig.from_pretrained(model_dir)
    repo_id = full_repo_id(repo_id, token)
    if card is None:
        training = TrainingReport.load(model_dir)
        card = build_model_card(config, repo_id, training=training, eval_summaries=eval_summaries, license=license)
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(Path(model_dir) / name)) for name in files]
    operations.append(CommitOperationAdd(path_in_repo=REPOCARD_NAME, path_or_fileobj=str(card).encode("utf-8")))
    api = _hub_api(token)
    repo_id = _create_repo(api, repo_id, "model", private, revision)
    return api.create_commit(
        repo_id,
        operations,
        commit_message=commit_message or "Upload actprm process reward model",
        repo_type="model",
        revision=revision,
        create_pr=create_pr,
    )


def load_annotations(data: str | os.PathLike | Dataset) -> tuple[Dataset, TrainingReport | None]:
    """A labelled dataset and the report of the run that made it (from the same folder), if any.

    Args:
        data: an `AnnotationStore` file (``.jsonl``), a folder holding ``annotations.jsonl`` (a
            trainer's ``output_dir``), or a dataset.

    Raises:
        FileNotFoundError: if there is no annotations file there.
        ValueError: if it holds no annotation.
    """
    if isinstance(data, Dataset):
        return data, None
    path = Path(data)
    if path.is_dir():
        path = path / ANNOTATIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no annotations file (pass the .jsonl an AnnotationStore wrote, or the folder holding {ANNOTATIONS_FILE})"
        )
    store = AnnotationStore(path)
    if len(store) == 0:
        raise ValueError(f"{path} holds no annotation: nothing to push")
    return store.to_dataset(), TrainingReport.load(path.parent)


def push_dataset(
    data: str | os.PathLike | Dataset,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
    card: DatasetCard | None = None,
    license: str | None = None,
    source: str | None = None,
    max_shard_size: int | str | None = None,
    judge_evaluation: Mapping[str, Any] | None = None,
) -> CommitInfo:
    """Push a labelled dataset as ``datasets`` does (Parquet shards and a dataset card).

    Args:
        data: an `AnnotationStore` file, a folder holding ``annotations.jsonl``, or a dataset with the
            columns of `ANNOTATION_FEATURES`.
        repo_id: ``namespace/name`` (a bare name goes to the token owner's namespace).
        private, revision, create_pr, commit_message, token: as in `push_model`.
        card: the dataset card to push (its metadata gets ``dataset_info`` and ``configs``); by default
            one built by `build_dataset_card` with the training report found beside the annotations.
        license, source: licence and source dataset for the built card.
        max_shard_size: largest shard, as in `datasets.Dataset.push_to_hub`.
        judge_evaluation: for the built card, the ``actprm eval --judge`` summary of the labelling judge.

    Returns:
        The commit of the shards, the last one (with ``pr_url`` for the pull request holding both).

    Raises:
        ValueError: without a token, for an invalid repo id, ``create_pr`` with a branch or an empty
            dataset; all before anything is sent.
        FileNotFoundError: if there is no annotations file at ``data``.
    """
    token = _check_push(token, repo_id, revision, create_pr)
    dataset, training = load_annotations(data)
    repo_id = full_repo_id(repo_id, token)
    card = card or build_dataset_card(
        dataset, repo_id, training=training, license=license, source=source, judge_evaluation=judge_evaluation
    )
    message = commit_message or "Upload actprm labelled dataset"
    repo_id = _create_repo(_hub_api(token), repo_id, "dataset", private, revision)
    # The card goes first: `Dataset.push_to_hub` keeps the README.md it finds, adding the shards' metadata to it.
    card_commit = card.push_to_hub(
        repo_id, token=token, repo_type="dataset", commit_message=message, revision=revision, create_pr=create_pr
    )
    commit = dataset.push_to_hub(
        repo_id, split="train", token=token, revision=card_commit.pr_revision or revision, commit_message=message,
        max_shard_size=max_shard_size,
    )  # fmt: skip
    return dataclasses.replace(commit, pr_url=card_commit.pr_url)
