"""Renamed config names: the old ones still work, each with a warning naming the new one."""

from __future__ import annotations

import pytest

from rlpt_plugin.config import RLPTConfig
from rlpt_plugin.config_renames import translate_overrides


def test_old_keys_and_values_in_overrides_become_the_new_names_with_a_warning():
    with pytest.warns(DeprecationWarning) as caught:
        out = translate_overrides(["rlpt.data.lm_on_original=false", "+rlpt.judge.fallback=nll_original",
                                   "train.train_iters=5", "~rlpt.data.lm_on_original"])
    assert out == ["rlpt.data.lm_on_window=false", "+rlpt.judge.fallback=rf_nll_on_original",
                   "train.train_iters=5", "~rlpt.data.lm_on_window"]
    messages = [str(w.message) for w in caught]
    assert len(messages) == 3
    assert "`rlpt.data.lm_on_original` is now `rlpt.data.lm_on_window`" in messages[0]
    assert "rf_nll_on_original" in messages[1]


def test_new_names_pass_untouched_and_silently(recwarn):
    overrides = ["rlpt.data.lm_on_window=false", "rlpt.judge.fallback=rf_nll_on_original", "rlpt.judge.fallback=drop"]
    assert translate_overrides(overrides) == overrides
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


def test_the_old_attribute_reads_and_sets_the_new_field():
    cfg = RLPTConfig()
    with pytest.warns(DeprecationWarning, match="lm_on_window"):
        cfg.data.lm_on_original = False
    assert cfg.data.lm_on_window is False
    with pytest.warns(DeprecationWarning):
        assert cfg.data.lm_on_original is False


def test_an_old_value_set_in_python_is_an_error_that_names_the_new_one():
    cfg = RLPTConfig()
    cfg.judge.fallback = "nll_original"
    errors = "\n".join(cfg.errors())
    assert "`rlpt.judge.fallback` must be one of drop, rf_nll_on_original" in errors
    assert "it is now `rf_nll_on_original`" in errors
