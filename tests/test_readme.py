"""The README's Python API snippet runs as written, offline on a CPU, and the names it points to exist."""

import os
import re
import subprocess
import sys
from pathlib import Path

from actprm.modeling import EnsemblePRMModel

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_python_api_snippet_trains_and_saves_offline(tmp_path):
    section = README.split("## Python API in ten lines", 1)[1].split("\n## ", 1)[0]
    (snippet,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    model = EnsemblePRMModel.from_pretrained(tmp_path / "my-prm")
    assert model.config.num_ensemble == 8
    assert (tmp_path / "my-prm" / "annotations.jsonl").read_text().count("\n") > 0


def test_the_rebuild_function_the_readme_names_imports():
    (statement,) = re.findall(r"`(from actprm\.\S+ import build_default_backbone)`", README)
    namespace = {}
    exec(statement, namespace)
    assert callable(namespace["build_default_backbone"])
