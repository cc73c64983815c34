"""The suite's rule for what it needs from outside the checkout: skip with one line, fail under CI=true."""

import pytest

from conftest import missing, shared_path


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
