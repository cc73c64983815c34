"""Shared fixtures: the real benchmark data beside the checkout and the embedded tiny backbone."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ACTPRM_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``: ProcessBench, PRMBench and PRM800K as laid out in its README."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"benchmark data not found at {SHARED_DATA}; set ACTPRM_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_backbone() -> str:
    """Path of the embedded default backbone (tiny Qwen2 + tokenizer), built once per machine."""
    from actprm.default_backbone import default_backbone

    return default_backbone()
