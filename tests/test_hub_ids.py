"""Hub ids: data, streamed pools and a backbone read through a real HTTP server speaking the Hub's API.

`tests/hub_server.py` serves folders as Hub repos; a fresh Python process with ``HF_ENDPOINT``
pointing at it loads them by their ids, as a user's machine does from huggingface.co.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port, server_process

from actprm import load_steps, make_arithmetic_dataset

HERE = Path(__file__).resolve().parent
SUBSETS = ("gsm8k", "math", "olympiadbench", "omnimath")
ITEMS_PER_SUBSET = 6

# Qwen/ProcessBench's layout on the Hub: one config whose splits are the subsets.
PROCESSBENCH_README = "---\nconfigs:\n- config_name: default\n  data_files:\n" + "".join(
    f"  - split: {subset}\n    path: {subset}.json\n" for subset in SUBSETS
) + "---\n"
# The other layout the loader reads: one config per subset.
BY_CONFIG_README = "---\nconfigs:\n" + "".join(
    f"- config_name: {subset}\n  data_files:\n  - split: {subset}\n    path: {subset}.json\n" for subset in SUBSETS
) + "---\n"

LOAD_BY_ID = """
import json, sys
from actprm import ActivePRMConfig, ActivePRMTrainer, load_steps
from actprm.filtering import TrajectoryPool

def rows(dataset):
    return dataset.to_list()

try:
    load_steps("user/pool")
    two_splits_error = None
except ValueError as error:
    two_splits_error = str(error)
pool = load_steps("user/pool", split="train")
args = ActivePRMConfig(output_dir=sys.argv[1], selection="all", num_ensemble=3, per_device_train_batch_size=4, num_train_epochs=1,
                       report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True)
trainer = ActivePRMTrainer("user/tiny-backbone", args=args, train_dataset=pool)
trainer.train()
print("RESULT", json.dumps({
    "processbench": rows(load_steps("Qwen/ProcessBench")),
    "processbench_math": rows(load_steps("Qwen/ProcessBench", subset="math")),
    "by_config": rows(load_steps("user/processbench-by-config", "processbench", subset=["gsm8k", "omnimath"])),
    "two_splits_error": two_splits_error,
    "pool_test": rows(load_steps("user/pool", split="test")),
    "stream": {shard.name: rows(shard.load()) for shard in TrajectoryPool("user/pool", split="train", shard_size=4).shards()},
    "heads": trainer.model.config.num_ensemble,
    "backbone": trainer.model.config.backbone_config.model_type,
    "trained": trainer.active_learning_summary()["trained"],
}))
"""


@pytest.fixture(scope="module")
def hub_root(processbench_data, tiny_backbone, tmp_path_factory) -> Path:
    """Folders laid out as the Hub repos the test loads by id."""
    root = tmp_path_factory.mktemp("hub")
    for repo, readme in (("Qwen/ProcessBench", PROCESSBENCH_README), ("user/processbench-by-config", BY_CONFIG_README)):
        folder = root / "datasets" / repo
        folder.mkdir(parents=True)
        (folder / "README.md").write_text(readme)
        for subset in SUBSETS:
            items = json.loads((processbench_data / f"{subset}.json").read_text())[:ITEMS_PER_SUBSET]
            (folder / f"{subset}.json").write_text(json.dumps(items))
    pool = root / "datasets" / "user" / "pool" / "data"
    pool.mkdir(parents=True)
    rows = make_arithmetic_dataset(14, seed=7).to_list()
    for split, part in (("train", rows[:10]), ("test", rows[10:])):
        (pool / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in part))
    shutil.copytree(tiny_backbone, root / "models" / "user" / "tiny-backbone")
    return root


@pytest.fixture(scope="module")
def loaded_by_id(hub_root, tmp_path_factory) -> tuple[dict, list[str]]:
    """What a fresh process loads by Hub id, and the requests the server saw."""
    work = tmp_path_factory.mktemp("hub-client")
    port = free_port()
    command = [sys.executable, str(HERE / "hub_server.py"), str(hub_root), str(port)]
    url = f"http://127.0.0.1:{port}"
    with server_process(command, f"{url}/requests", work / "hub.log"):
        env = {**os.environ, "HF_ENDPOINT": url, "HF_HOME": str(work / "hf-home"), "HF_HUB_OFFLINE": "0",
               "HF_HUB_DISABLE_TELEMETRY": "1"}  # fmt: skip
        env.pop("HF_TOKEN", None)
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(LOAD_BY_ID), str(work / "run")],
            env=env, cwd=work, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        requests = json.loads(urllib.request.urlopen(f"{url}/requests").read())
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.split("RESULT ", 1)[1]), requests


def local_processbench(hub_root: Path, subsets=SUBSETS) -> list[dict]:
    folder = hub_root / "datasets" / "Qwen" / "ProcessBench"
    return load_steps(folder, subset=list(subsets)).to_list()


def test_processbench_by_its_hub_id_equals_the_same_files_on_disk(loaded_by_id, hub_root):
    loaded, requests = loaded_by_id
    assert loaded["processbench"] == local_processbench(hub_root)
    assert [row["subset"] for row in loaded["processbench"]] == [s for s in SUBSETS for _ in range(ITEMS_PER_SUBSET)]
    assert loaded["processbench_math"] == local_processbench(hub_root, ["math"])
    assert loaded["by_config"] == local_processbench(hub_root, ["gsm8k", "omnimath"])
    assert any(r.startswith("GET /datasets/Qwen/ProcessBench/resolve/") for r in requests)  # read over HTTP


def test_pool_splits_and_streamed_shards_by_hub_id(loaded_by_id, hub_root):
    loaded, _ = loaded_by_id
    folder = hub_root / "datasets" / "user" / "pool" / "data"
    assert "has splits" in loaded["two_splits_error"] and "split=" in loaded["two_splits_error"]
    assert loaded["pool_test"] == load_steps(folder / "test.jsonl").to_list()
    train = load_steps(folder / "train.jsonl").to_list()
    assert list(loaded["stream"]) == ["train-00000", "train-00001", "train-00002"]
    assert [row for shard in loaded["stream"].values() for row in shard] == train


def test_trainer_builds_its_ensemble_on_a_backbone_given_by_hub_id(loaded_by_id):
    loaded, requests = loaded_by_id
    assert (loaded["heads"], loaded["backbone"], loaded["trained"]) == (3, "qwen2", 10)
    assert any(r.startswith("GET /user/tiny-backbone/resolve/") and r.endswith(".safetensors") for r in requests)
