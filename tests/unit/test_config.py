"""The rlpt config section: defaults valid, every error reported at once with field and value."""

from __future__ import annotations

import pytest

from rlpt_plugin.config import ConfigError, RLPTConfig, TermWeight


def test_defaults_name_no_data_and_documented_default_reference_is_rollout():
    cfg = RLPTConfig()
    # A job must say what it trains on: the default source is the stores, none are given, and
    # the in-loop judge has no endpoints. Never a silent fallback to synthetic data.
    assert cfg.data.source == "store"
    assert [e.split("`")[1] for e in cfg.errors()] == [
        "rlpt.data.stores", "rlpt.data.tokenizer", "rlpt.judge.endpoints", "rlpt.judge.model"]
    cfg.data.source = "synthetic"
    cfg.validate()
    assert cfg.loss.reference == "rollout"
    weights = cfg.loss.weights().at(0)
    assert (weights.lm, weights.dpo, weights.rf_nll) == (1.0, 1.0, 0.0)


def test_all_errors_are_collected_with_field_and_value():
    cfg = RLPTConfig()
    cfg.data.source = "synthetic"
    cfg.loss.beta = -1.0
    cfg.loss.reference = "frozn"
    cfg.loss.dpo_reduction = "avg"
    cfg.loss.rf_nll = TermWeight(start=1.0, kind="linear")  # linear needs end and end_step
    cfg.data.groups_per_step = 0
    cfg.data.synthetic.min_prefix = 9
    cfg.data.synthetic.max_prefix = 3
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    message = str(info.value)
    for expected in ("`rlpt.loss.beta` must be > 0, but is -1.0", "`rlpt.loss.reference` must be one of "
                     "rollout, frozen, none, but is 'frozn'", "`rlpt.loss.dpo_reduction`",
                     "`rlpt.loss.rf_nll`", "`rlpt.data.groups_per_step` must be >= 1, but is 0",
                     "`rlpt.data.synthetic.min_prefix` must be <= max_prefix (3), but is 9"):
        assert expected in message, (expected, message)
    assert len(info.value.errors) == 6


def test_rf_nll_selection_with_dpo_weight_is_an_error():
    cfg = RLPTConfig()
    cfg.loss.selection = "rf_nll"
    with pytest.raises(ConfigError, match="no DPO pairs"):
        cfg.validate()


def test_weight_schedule_reaches_the_loss_weights():
    cfg = RLPTConfig()
    cfg.loss.dpo = TermWeight(kind="linear", start=0.0, end=2.0, begin_step=0, end_step=10)
    assert cfg.loss.weights().at(5).dpo == pytest.approx(1.0)


def test_store_source_needs_stores_tokenizer_and_a_judge():
    cfg = RLPTConfig()
    cfg.data.source = "store"
    cfg.candidates.top_p = 1.5
    cfg.judge.schedule = "swiss"
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    message = str(info.value)
    for expected in ("`rlpt.data.stores` must list", "`rlpt.data.tokenizer` must name",
                     "`rlpt.judge.endpoints` must list", "`rlpt.judge.model` must name",
                     "`rlpt.candidates.top_p` must be <= 1", "`rlpt.judge.schedule` must be one of"):
        assert expected in message, (expected, message)
