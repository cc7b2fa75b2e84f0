"""`require` and `require_model` (conftest.py): a missing or broken vLLM, or an unprepared model, skips a test on
a developer's machine and fails it under CI, where `make test` installs and prepares everything first."""

from __future__ import annotations

import sys

import pytest

import conftest
from conftest import require, require_model


@pytest.fixture
def broken_module(tmp_path, monkeypatch) -> str:
    """A module that is there but raises on import, as a vLLM build against another torch does."""
    (tmp_path / "interplay_broken_dep.py").write_text("raise OSError('libfoo.so: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "interplay_broken_dep", raising=False)
    return "interplay_broken_dep"


@pytest.mark.parametrize("value,ci", [("", False), ("0", False), ("false", False), ("true", True), ("1", True)])
def test_is_ci_reads_the_variable_as_ci_services_set_it(monkeypatch, value, ci):
    monkeypatch.setenv("CI", value)
    assert conftest.is_ci() is ci


def test_an_importable_module_is_returned(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert require("json") is sys.modules["json"]


@pytest.mark.parametrize("module", ["interplay_no_such_module", "broken"])
def test_missing_or_broken_skips_locally(monkeypatch, broken_module, module):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="cannot be imported"):
        require(broken_module if module == "broken" else module)


def test_missing_fails_under_ci_naming_the_module(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="interplay_no_such_module cannot be imported.*CI must run"):
        require("interplay_no_such_module")


def test_broken_fails_under_ci_with_the_cause(monkeypatch, broken_module):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="OSError: libfoo.so"):
        require(broken_module)


def test_unprepared_model_skips_locally_and_fails_under_ci(monkeypatch, tmp_path):
    monkeypatch.setattr(conftest, "default_model_dir", lambda: tmp_path / "nothing-here")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="SmolLM2 not prepared"):
        require_model()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="SmolLM2 not prepared"):
        require_model()
