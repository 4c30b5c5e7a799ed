"""The API key comes from the environment variable a setting names, with errors that name both."""

from __future__ import annotations

import pytest

from rlpt_plugin.teacher.credentials import MissingKeyError, key_from_env


def test_the_key_is_read_from_the_named_variable_and_stripped(monkeypatch):
    monkeypatch.setenv("RLPT_TEST_KEY", " sk-test\n")
    assert key_from_env("RLPT_TEST_KEY", "--api-key-env") == "sk-test"
    assert key_from_env("", "--api-key-env") is None  # no variable named: no key


@pytest.mark.parametrize(("name", "value", "problem"), [
    ("RLPT_TEST_KEY", None, "which is not set"), ("RLPT_TEST_KEY", "  ", "which is empty"),
    ("RLPT_TEST_KEY=sk-oops", None, "must be the NAME of an environment variable")])
def test_each_problem_names_the_setting_and_the_variable(monkeypatch, name, value, problem):
    monkeypatch.delenv("RLPT_TEST_KEY", raising=False)
    if value is not None:
        monkeypatch.setenv("RLPT_TEST_KEY", value)
    with pytest.raises(MissingKeyError) as err:
        key_from_env(name, "rlpt.judge.api_key_env")
    assert problem in str(err.value) and "`rlpt.judge.api_key_env`" in str(err.value)
