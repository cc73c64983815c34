"""The suite's rule for what it needs from outside the checkout: skip with one line, fail under CI=true."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port, missing, server_process, shared_path

HERE = Path(__file__).resolve().parent
NEEDS_PROCESSBENCH = """
import json


def test_reads_processbench(processbench_data):
    print("GSM8K", json.dumps(json.loads((processbench_data / "gsm8k.json").read_text())))
"""
NEEDS_PRMBENCH = """
import json


def test_reads_prmbench(prmbench_data):
    files = {path.name: path.read_text().splitlines() for path in sorted(prmbench_data.glob("*.jsonl"))}
    print("PRMBENCH", json.dumps({name: [json.loads(line) for line in lines] for name, lines in files.items()}))
"""


def test_a_missing_shared_folder_skips_with_one_line_naming_it(tmp_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("ACTPRM_SHARED_DATA", str(tmp_path / "absent"))
    with pytest.raises(pytest.skip.Exception) as skipped:
        shared_path("data", "ACTPRM_SHARED_DATA")
    message = str(skipped.value)
    assert "\n" not in message
    assert str(tmp_path / "absent") in message and "ACTPRM_SHARED_DATA" in message


def test_a_missing_shared_folder_fails_under_ci(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("ACTPRM_SHARED_MODELS", str(tmp_path / "absent"))
    with pytest.raises(pytest.fail.Exception, match="ACTPRM_SHARED_MODELS.*CI=true"):
        shared_path("models", "ACTPRM_SHARED_MODELS")


def test_a_shared_folder_named_by_its_variable_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("ACTPRM_SHARED_DATA", str(tmp_path))
    assert shared_path("data", "ACTPRM_SHARED_DATA") == tmp_path


def test_missing_skips_outside_ci(monkeypatch):
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="no browser"):
        missing("no browser")


def pytest_in_a_checkout_without_shared_data(
    tmp_path: Path, test: str = NEEDS_PROCESSBENCH, **env: str
) -> subprocess.CompletedProcess:
    """Run ``test`` (by default one that needs ProcessBench) with this suite's conftest in ``tmp_path/checkout``
    (no ``../shared``)."""
    tests = tmp_path / "checkout" / "tests"
    tests.mkdir(parents=True)
    shutil.copy(HERE / "conftest.py", tests)
    (tests / "test_needs_data.py").write_text(test)
    env = {key: value for key, value in os.environ.items() if key not in ("CI", "ACTPRM_SHARED_DATA")} | env
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-rsE", "-p", "no:cacheprovider", str(tests)]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("ci", ["false", "true"])
def test_offline_without_shared_data_a_test_skips_with_one_line_or_fails_under_ci(tmp_path, ci):
    done = pytest_in_a_checkout_without_shared_data(tmp_path, HF_HUB_OFFLINE="1", CI=ci)
    reason = f"{tmp_path / 'shared' / 'data' / 'processbench'} not found"
    summary = [line for line in done.stdout.splitlines() if reason in line][-1]  # the short test summary's line
    assert summary.endswith("Qwen/ProcessBench cannot be read instead: offline (HF_HUB_OFFLINE=1)" + (
        " (CI=true: required)" if ci == "true" else ""))  # fmt: skip
    if ci == "true":
        assert done.returncode == 1 and "1 error" in done.stdout and summary.startswith("ERROR"), done.stdout
    else:
        assert done.returncode == 0 and "1 skipped" in done.stdout and summary.startswith("SKIPPED"), done.stdout


def test_without_shared_data_processbench_is_read_from_the_hub(processbench_data, tmp_path):
    """The Hub is the suite's served copy of Qwen/ProcessBench (its layout: one config, a split per subset)."""
    subsets = ("gsm8k", "math", "olympiadbench", "omnimath")
    repo = tmp_path / "hub" / "datasets" / "Qwen" / "ProcessBench"
    repo.mkdir(parents=True)
    (repo / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_files:\n" + "".join(
        f"  - split: {subset}\n    path: {subset}.json\n" for subset in subsets) + "---\n")  # fmt: skip
    for subset in subsets:
        items = json.loads((processbench_data / f"{subset}.json").read_text())[:3]
        (repo / f"{subset}.json").write_text(json.dumps(items))
    url = f"http://127.0.0.1:{free_port()}"
    command = [sys.executable, str(HERE / "hub_server.py"), str(tmp_path / "hub"), url.rsplit(":", 1)[1]]
    with server_process(command, f"{url}/requests", tmp_path / "hub.log"):
        done = pytest_in_a_checkout_without_shared_data(
            tmp_path, CI="true", HF_ENDPOINT=url, HF_HUB_OFFLINE="0", HF_HOME=str(tmp_path / "hf-home")
        )
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    read = json.loads(done.stdout.split("GSM8K ", 1)[1].splitlines()[0])
    assert read == json.loads((repo / "gsm8k.json").read_text())


def test_without_shared_data_prmbench_is_read_from_the_hub_into_its_25_files(prmbench_data, tmp_path):
    """The Hub's PRMBench (hitsmy/PRMBench_Preview) is one merged JSONL file; the suite splits it back into the
    shared layout's files, each record in the file it came from, in order."""
    expected = {path.name: [json.loads(line) for line in path.read_text().splitlines()[:2]]
                for path in sorted(prmbench_data.glob("*.jsonl"))}  # fmt: skip
    repo = tmp_path / "hub" / "datasets" / "hitsmy" / "PRMBench_Preview"
    repo.mkdir(parents=True)
    merged = [json.dumps(record) for records in expected.values() for record in records]
    (repo / "prmbench_preview.jsonl").write_text("\n".join(merged) + "\n")
    url = f"http://127.0.0.1:{free_port()}"
    command = [sys.executable, str(HERE / "hub_server.py"), str(tmp_path / "hub"), url.rsplit(":", 1)[1]]
    with server_process(command, f"{url}/requests", tmp_path / "hub.log"):
        done = pytest_in_a_checkout_without_shared_data(
            tmp_path, NEEDS_PRMBENCH, CI="true", HF_ENDPOINT=url, HF_HUB_OFFLINE="0", HF_HOME=str(tmp_path / "hf-home")
        )
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    read = json.loads(done.stdout.split("PRMBENCH ", 1)[1].splitlines()[0])
    assert len(expected) == 25 and read.keys() == expected.keys()
    for name, records in expected.items():
        assert [{key: row[key] for key in record} for row, record in zip(read[name], records)] == records, name
        assert len(read[name]) == len(records), name
