"""Shared fixtures: the real benchmark data beside the checkout and the embedded tiny backbone."""

import functools
import json
import os
import socket
import subprocess
import time
import urllib.request
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"

if os.environ.get("PYTEST_XDIST_WORKER"):  # workers share the cores: one thread each, their subprocesses too
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"

MODULE_GROUPS = {"test_judge_evaluation": "smollm2", "test_real_model": "smollm2"}
"""Modules that share expensive session fixtures (SmolLM2 de-quantised and served) and so one worker."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """For pytest-xdist's ``--dist loadgroup`` (setup.cfg): a module's tests run on one worker, so its module
    fixtures are built once, and the modules of `MODULE_GROUPS` share one."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        module = item.module.__name__
        item.add_marker(pytest.mark.xdist_group(MODULE_GROUPS.get(module, module)))


def missing(what: str) -> None:
    """Skip the test with one line naming ``what`` is missing; under ``CI=true`` fail it instead."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} (CI=true: required)", pytrace=False)
    pytest.skip(what)


def shared_path(name: str, env: str) -> Path:
    """``../shared/<name>`` beside the checkout, or the folder ``$<env>`` names; `missing` when it is not there."""
    path = Path(os.environ.get(env) or SHARED / name)
    if not path.is_dir():
        missing(f"{path} not found: put the project's shared/{name} beside the checkout or set {env}")
    return path


PRMBENCH_PARTS = {"prm_test_p1": "prm800k_test_p1_4o", "prm_test_p2": "prm800k_test_p2_4o",
                  "prm_train_p1": "prm800k_train_p1_first400_4o"}


def processbench_file(record: dict[str, Any], subset: str) -> str:
    """ProcessBench's file in the shared layout: one JSON list per subset (the Hub's split)."""
    return f"{subset}.json"


def prmbench_file(record: dict[str, Any], subset: str) -> str:
    """PRMBench's file in the shared layout. The Hub copy merges the 25 files; a record's ``idx`` names its
    part (``prm_test_p2_863``) and ``classification`` the rest (all ``multi_solutions`` share one file)."""
    classification = record["classification"]
    if classification == "multi_solutions":
        return "prm_test_p12_multi_solutions.jsonl"
    return f"{PRMBENCH_PARTS[record['idx'].rsplit('_', 1)[0]]}_{classification}.jsonl"


BENCHMARKS_ON_THE_HUB = {
    "processbench": ("Qwen/ProcessBench", processbench_file),
    "prmbench": ("hitsmy/PRMBench_Preview", prmbench_file),
}
"""Benchmarks the Hub holds, and the shared layout's file of each record. The step-rated PRM800K is not on
the Hub (its parquet files come from a GitHub repository: see the shared data's README)."""


@functools.cache
def hub_unreachable() -> str | None:
    """Why the Hub cannot be reached, found out once per session (HF_HUB_OFFLINE, or one short probe)."""
    from actprm.data.hub_access import hub_unreachable as probe

    return probe()


def benchmark_folder(name: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared data's ``<name>`` folder (``../shared/data`` or ``$ACTPRM_SHARED_DATA``); else, for a benchmark
    of `BENCHMARKS_ON_THE_HUB`, its records read from the Hub with actprm's loader, in the same layout; else
    `missing`, in one line naming what is missing."""
    folder = Path(os.environ.get("ACTPRM_SHARED_DATA") or SHARED / "data") / name
    if folder.is_dir():
        return folder
    not_found = f"{folder} not found (put the project's shared/data beside the checkout or set ACTPRM_SHARED_DATA)"
    if name not in BENCHMARKS_ON_THE_HUB:
        missing(f"{not_found}; the tests need its files, which the Hub has not")
    repo_id, file_of = BENCHMARKS_ON_THE_HUB[name]
    if reason := hub_unreachable():
        missing(f"{not_found}, and {repo_id} cannot be read instead: {reason}")
    from actprm.data.loaders import _hub_records

    folder, files = tmp_path_factory.mktemp(name), defaultdict(list)
    for record in _hub_records(repo_id, name, None, None)[1]:
        files[file_of(record.data, record.name)].append(record.data)
    for file, records in files.items():
        lines = [json.dumps(record) for record in records] if file.endswith(".jsonl") else [json.dumps(records)]
        (folder / file).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def processbench_data(tmp_path_factory) -> Path:
    """ProcessBench: ``<subset>.json`` lists as laid out in the shared data's README (from the Hub if need be)."""
    return benchmark_folder("processbench", tmp_path_factory)


@pytest.fixture(scope="session")
def prmbench_data(tmp_path_factory) -> Path:
    """PRMBench: the 25 ``*.jsonl`` files of the shared data's README (from the Hub if need be)."""
    return benchmark_folder("prmbench", tmp_path_factory)


@pytest.fixture(scope="session")
def prm800k_data(tmp_path_factory) -> Path:
    """PRM800K phase 1, step-rated: the two parquet files of the shared data's README."""
    return benchmark_folder("prm800k", tmp_path_factory)


@pytest.fixture(scope="session")
def shared_models() -> Path:
    """``../shared/models``: the real models of the project (see its README)."""
    return shared_path("models", "ACTPRM_SHARED_MODELS")


@pytest.fixture(scope="session")
def tiny_backbone() -> str:
    """Path of the embedded default backbone (tiny Qwen2 + tokenizer, shipped with the package)."""
    from actprm.default_backbone import default_backbone

    return default_backbone()


@pytest.fixture(scope="session")
def random_backbone(tiny_backbone, tmp_path_factory) -> str:
    """The default backbone's architecture and tokenizer with random weights (seed 0): an ensemble on it
    scores steps on both sides of 0.5, as tests of evaluation plumbing need."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = tmp_path_factory.mktemp("random-backbone")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny_backbone)).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_backbone).save_pretrained(path)
    return str(path)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server_process(command: list[str], ready_url: str, log_path: Path, *, env=None, startup_seconds: float = 120):
    """Run a server as a real process until ``ready_url`` answers; stop it on exit. Yields the process.

    Fails the test with the end of the server's log when it exits or does not answer in time.
    """
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + startup_seconds
        while True:
            if process.poll() is not None:
                pytest.fail(f"{command[1:3]} exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                urllib.request.urlopen(ready_url, timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{command[1:3]} did not answer within {startup_seconds} s:\n{log_path.read_text()[-4000:]}")
                time.sleep(0.2)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
