"""Argument dataclasses and builders shared by the ``actprm`` commands that read data or use a judge."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from datasets import Dataset

    from ..judges import Judge


def read_summary(path: str) -> dict:
    """An ``actprm eval`` summary: the file, or ``summary.json`` in the folder."""
    from ..evaluation import SUMMARY_FILE

    file = Path(path) / SUMMARY_FILE if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no evaluation summary (the summary.json `actprm eval` wrote)")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{file}: not JSON ({error})") from None


def hub_errors() -> tuple[type[Exception], ...]:
    """What a Hub call raises when the Hub (or the network) refuses it."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    return HfHubHTTPError, httpx2.HTTPError, ConnectionError


def hub_problem(error: Exception) -> str:
    """One line: what the Hub (or the network) said, and what to do about it."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(error, HfHubHTTPError) and error.response.status_code in (401, 403):
        what_to_do = "check that the token (HF_TOKEN or `hf auth login`) is valid and has write access to the repo"
    elif isinstance(error, HfHubHTTPError):
        what_to_do = "check the repo id and options, or try again later"
    else:
        what_to_do = "check the network, HF_ENDPOINT and that HF_HUB_OFFLINE is unset, then push again"
    said = " ".join(str(error).split())[:300]
    return f"{type(error).__name__}: {said}; {what_to_do}"


@dataclass
class DataArguments:
    """Where the trajectories come from."""

    dataset: str = field(metadata={"help": "Step data: a file, a folder or a Hub dataset id (see actprm.load_steps)."})
    dataset_format: str | None = field(
        default=None, metadata={"help": "processbench, prmbench, prm800k, trl, math_shepherd or jsonl; inferred if unset."}
    )
    dataset_split: str | None = field(default=None, metadata={"help": "Split (Hub) or file-name token (folder) to load."})
    hide_labels: bool = field(
        default=False, metadata={"help": "Ignore the dataset's labels: every selected trajectory goes to the judge."}
    )
    max_samples: int | None = field(default=None, metadata={"help": "Use only the first N trajectories."})
    eval_dataset: str | None = field(default=None, metadata={"help": "Labelled step data to report ProcessBench F1 on."})
    eval_dataset_format: str | None = field(default=None, metadata={"help": "Format of --eval_dataset; inferred if unset."})

    def load(self) -> Dataset:
        """The dataset in the canonical schema, labels hidden if asked."""
        from ..data import load_steps

        dataset = load_steps(self.dataset, self.dataset_format, split=self.dataset_split)
        if self.max_samples is not None:
            dataset = dataset.select(range(min(self.max_samples, dataset.num_rows)))
        if self.hide_labels:
            dataset = dataset.map(lambda row: {"label": None, "step_labels": None})
        return dataset

    def load_eval(self) -> Dataset | None:
        """The evaluation dataset, if one was given."""
        from ..data import load_steps

        return load_steps(self.eval_dataset, self.eval_dataset_format) if self.eval_dataset else None


@dataclass
class JudgeArguments:
    """Who labels the selected trajectories."""

    judge: Literal["none", "openai", "transformers", "oracle", "arithmetic"] = field(
        default="none",
        metadata={
            "help": "`openai`: any OpenAI-compatible endpoint (vLLM, SGLang, TGI, transformers serve, hosted APIs); "
            "`transformers`: a local model; `oracle`: the dataset's own labels; `arithmetic`: the synthetic "
            "default's checker; `none`: pool mode only.",
            "choices": ["none", "openai", "transformers", "oracle", "arithmetic"],
        },
    )
    judge_model: str | None = field(default=None, metadata={"help": "Judge model name (openai) or name/path (transformers)."})
    judge_base_url: str | None = field(default=None, metadata={"help": "Base URL of the endpoint, e.g. http://localhost:8000/v1."})
    judge_api_key_env: str = field(
        default="OPENAI_API_KEY", metadata={"help": "Environment variable holding the endpoint's API key, if any."}
    )
    judge_concurrency: int = field(default=16, metadata={"help": "Requests in flight at once (openai)."})
    judge_timeout: float = field(default=300.0, metadata={"help": "Seconds before a request is retried (openai)."})
    judge_max_retries: int = field(default=4, metadata={"help": "Retries on 429/5xx/timeouts (openai)."})
    judge_max_tokens: int = field(default=4096, metadata={"help": "Longest critique the judge may write."})
    judge_temperature: float = field(default=0.0, metadata={"help": "Sampling temperature of the judge."})
    judge_num_samples: int = field(default=1, metadata={"help": "Majority vote over this many samples (openai)."})
    judge_max_unparseable_rate: float = field(
        default=0.5,
        metadata={"help": "Stop when more than this share of the last --judge_unparseable_window items got no "
                  "parseable answer (openai); 1 disables the check."},
    )
    judge_unparseable_window: int = field(default=50, metadata={"help": "Items the unparseable share is taken over."})

    def build(self, cache: str | None = None) -> Judge | None:
        """The judge these arguments describe (``None`` for ``--judge none``), its answers cached in ``cache``."""
        from ..judges import ArithmeticJudge, OpenAIJudge, OracleJudge, TransformersJudge

        if self.judge == "none":
            return None
        if self.judge == "oracle":
            return OracleJudge(cache_path=cache)
        if self.judge == "arithmetic":
            return ArithmeticJudge(cache_path=cache)
        if not self.judge_model:
            raise ValueError(f"--judge {self.judge} needs --judge_model")
        if self.judge == "transformers":
            return TransformersJudge(
                self.judge_model, max_new_tokens=self.judge_max_tokens, temperature=self.judge_temperature,
                cache_path=cache,
            )
        if not self.judge_base_url:
            raise ValueError("--judge openai needs --judge_base_url (e.g. http://localhost:8000/v1)")
        return OpenAIJudge(
            self.judge_base_url,
            self.judge_model,
            api_key=os.environ.get(self.judge_api_key_env),
            concurrency=self.judge_concurrency,
            timeout=self.judge_timeout,
            max_retries=self.judge_max_retries,
            max_tokens=self.judge_max_tokens,
            temperature=self.judge_temperature,
            num_samples=self.judge_num_samples,
            max_unparseable_rate=self.judge_max_unparseable_rate,
            unparseable_window=self.judge_unparseable_window,
            cache_path=cache,
        )


@dataclass
class CachedJudgeArguments(JudgeArguments):
    """A judge and the cache of its answers (``actprm train`` has ``--judge_cache_path`` instead)."""

    judge_cache: str | None = field(default=None, metadata={"help": "sqlite cache of judge answers; default: in the output folder."})

    def build(self, cache: str | None = None) -> Judge | None:
        """The judge, its answers cached in ``cache``, else in ``--judge_cache``."""
        return super().build(cache or self.judge_cache)


def show_groups_first(parser: argparse.ArgumentParser, groups: Sequence[tuple[str, Iterable[str]]]) -> None:
    """Make ``parser``'s help list each group's options (by name), under its title and in order, after ``-h``
    alone (as TRL's CLI lists a script's own arguments before the TrainingArguments); the usage line names only
    the required options and a required option's help says so."""
    required = [action for action in parser._actions if action.required]
    for action in required:
        action.help = f"(required) {action.help}"
    named = " ".join(f"{action.option_strings[0]} {action.metavar or action.dest.upper()}" for action in required)
    parser.usage = f"{parser.prog} [-h] [--config CONFIG.yaml] {named} [options]"
    options = parser._optionals._group_actions
    for title, names in groups:
        names = set(names)
        parser.add_argument_group(title)._group_actions.extend(action for action in options if action.dest in names)
        options[:] = [action for action in options if action.dest not in names]


def check_model_path(name_or_path: str, gguf_file: str | None = None) -> None:
    """Fail at once, naming the path, when a local ``--model_name_or_path`` cannot be a model (a Hub id passes).

    With ``gguf_file`` the folder holds that GGUF file instead of a config (checked when it loads).
    """
    path = Path(name_or_path)
    if gguf_file is not None:
        if path.is_file():
            raise ValueError(f"--model_name_or_path {path}: a file; with --gguf_file give the folder that holds it")
        return
    if path.is_file():
        raise ValueError(f"--model_name_or_path {path}: a file, not a model folder (with config.json) or a Hub id")
    if path.is_dir() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"--model_name_or_path {path}: no config.json in this folder, so it is not a model")
