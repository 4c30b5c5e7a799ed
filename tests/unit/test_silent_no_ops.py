"""Settings that were accepted and then did nothing (issue: fail loudly) are errors at setup,
or now do what they say. Each test here fails on the code before that change."""

from __future__ import annotations

import pytest

from rlpt_plugin.config import RLPTConfig, TermWeight
from rlpt_plugin.rl.candidates import PoolInput, PoolSpec, build_group
from rlpt_plugin.rl.packing import PackSpec, pack_step
from rlpt_plugin.rl.pool import SelectionStats, select, select_all


def in_loop() -> RLPTConfig:
    """An in-loop job on a store, judged by the world oracle (no endpoints needed)."""
    cfg = RLPTConfig()
    cfg.data.stores, cfg.data.tokenizer = ["/data/store"], "/data/tok"
    cfg.judge.backend = "world"
    return cfg


def paths(cfg: RLPTConfig) -> list[str]:
    return [e.split("`")[1] for e in cfg.errors()]


def test_stores_on_the_command_line_train_on_the_stores():
    """`rlpt.data.stores=[...] rlpt.data.tokenizer=...` alone used to leave source=synthetic."""
    cfg = in_loop()
    assert cfg.data.source == "store" and cfg.errors() == []
    cfg.data.source = "synthetic"  # explicitly synthetic, with stores given: they would be ignored
    assert any("would be ignored" in e for e in cfg.errors())


def test_greedy_judge_samples_are_identical_requests():
    cfg = in_loop()
    cfg.judge.backend, cfg.judge.endpoints, cfg.judge.model = "openai", ["http://j:8000/v1"], "m"
    cfg.judge.samples = 5
    assert any("identical" in e and "rlpt.judge.samples" in e for e in cfg.errors())
    cfg.judge.temperature, cfg.judge.top_p = 1.0, 0.6  # the paper's sampled small judge
    assert cfg.errors() == []
    cfg.judge.top_p, cfg.judge.max_tokens, cfg.judge.request_timeout_s = 1.5, 0, 0
    assert {"rlpt.judge.top_p", "rlpt.judge.max_tokens", "rlpt.judge.request_timeout_s"} <= set(paths(cfg))


def test_api_key_comes_from_a_named_environment_variable(monkeypatch):
    cfg = in_loop()
    cfg.judge.backend, cfg.judge.endpoints, cfg.judge.model = "openai", ["http://j:8000/v1"], "m"
    cfg.judge.api_key_env = "RLPT_TEST_JUDGE_KEY"
    monkeypatch.delenv("RLPT_TEST_JUDGE_KEY", raising=False)
    (error,) = cfg.errors()
    assert "RLPT_TEST_JUDGE_KEY" in error and "not set" in error
    monkeypatch.setenv("RLPT_TEST_JUDGE_KEY", "s3cret-value")
    assert cfg.errors() == []
    assert "s3cret-value" not in repr(cfg)  # only the variable's name is in the config


def test_rf_nll_on_original_fallback_must_differ_from_drop():
    cfg = in_loop()
    cfg.judge.fallback = "rf_nll_on_original"  # DPO with an RF-NLL weight of 0: exactly "drop"
    assert any("exactly what 'drop' does" in e for e in cfg.errors())
    cfg.loss.rf_nll = TermWeight(start=0.5)
    assert cfg.errors() == []
    cfg.candidates.original = False
    assert any("not in the pool" in e for e in cfg.errors())


def test_rf_nll_on_original_trains_the_unjudged_pools_original_by_rf_nll():
    group = build_group(PoolInput(group_id=3, prefix=[1, 2, 3], original=[4, 5], rewrite=None,
                                  rollouts=[[6, 7], [8]]), PoolSpec(), scores=None)
    assert select(group).skip_reason == "unjudged" and select(group).best is None
    sel = select(group, fallback="rf_nll_on_original")
    assert (sel.best, sel.chosen, sel.fallback) == (0, None, True)
    spec = PackSpec(seq_length=8, micro_batch_size=4, num_microbatches=1, use_rf_nll=True)
    (mb,) = pack_step([group], [sel], spec)
    assert mb.rf_rows_R.tolist() == [0] and mb.chosen_rows_P.numel() == 0
    assert mb.lm_mask_BS[0].sum() == 4 and mb.rl_mask_BS[0].sum() == 2  # one row: LM and RF-NLL
    stats = SelectionStats.from_selections(zip([group], select_all([group], fallback="rf_nll_on_original")))
    # a fallback is not a verdict: counted apart, out of the rollout-chosen statistics
    assert (stats.num_best, stats.num_fallback, stats.skipped) == (0, 1, {"unjudged": 1})


def test_a_rollouts_only_pool_still_trains_the_lm_term_on_the_document():
    """candidates.original=false used to leave the LM term with 0 tokens at weight 1."""
    group = build_group(PoolInput(group_id=0, prefix=[1, 2, 3], original=[4, 5], rewrite=None,
                                  rollouts=[[6, 7], [8]]), PoolSpec(original=False), scores=[1.0, 0.0])
    assert group.kinds == ("rollout", "rollout") and group.lm_original == (4, 5)
    spec = PackSpec(seq_length=8, micro_batch_size=4, num_microbatches=1, use_rf_nll=True)
    (mb,) = pack_step([group], [select(group)], spec)
    assert mb.num_real_rows == 3  # the document's LM row + chosen + rejected
    assert mb.tokens_BS[0, :4].tolist() == [1, 2, 3, 4] and mb.labels_BS[0, :4].tolist() == [2, 3, 4, 5]
    assert mb.lm_mask_BS.sum(dim=1).tolist() == [4.0, 0.0, 0.0, 0.0] and mb.rl_mask_BS[0].sum() == 2
    assert mb.chosen_rows_P.tolist() == [1] and mb.rejected_rows_P.tolist() == [2]
    # and no LM row when the LM term is off (rows it would never train are not packed)
    off = PackSpec(seq_length=8, micro_batch_size=4, num_microbatches=1, lm_on_window=False, use_rf_nll=True)
    assert pack_step([group], [select(group)], off)[0].num_real_rows == 2


def test_an_lm_term_with_nothing_to_train_and_an_all_zero_loss_are_errors():
    cfg = in_loop()
    cfg.data.lm_on_window = False  # LM weight 1, no job data: the term would train 0 tokens
    assert any("nothing feeds the LM term" in e for e in cfg.errors())
    cfg.data.think_stores, cfg.data.think_sequences_per_step = ["think"], 2  # thinking SFT rows feed it
    assert not any("nothing feeds the LM term" in e for e in cfg.errors())
    cfg.data.think_stores, cfg.data.think_sequences_per_step = [], 0
    cfg.loss.lm, cfg.loss.dpo = TermWeight(start=0.0), TermWeight(start=0.0)
    assert any("would train nothing" in e for e in cfg.errors())


def test_extra_lm_rows_with_an_lm_weight_of_zero_are_errors():
    cfg = in_loop()
    cfg.loss.lm = TermWeight(start=0.0)
    cfg.data.think_stores, cfg.data.think_sequences_per_step = ["think"], 2
    assert any(e.startswith("`rlpt.data.think_sequences_per_step` is 2, but `rlpt.loss.lm` has weight 0")
               for e in cfg.errors())


def test_watchdog_and_timeout_settings_are_validated():
    cfg = in_loop()
    cfg.judge.max_unjudged_share, cfg.judge.unjudged_window, cfg.judge.verdict_timeout_s = 1.5, 0, -1
    assert {"rlpt.judge.max_unjudged_share", "rlpt.judge.unjudged_window",
            "rlpt.judge.verdict_timeout_s"} <= set(paths(cfg))


def test_credentials_in_an_endpoint_url_are_refused_without_echoing_them():
    cfg = in_loop()
    cfg.judge.backend, cfg.judge.model = "openai", "m"
    cfg.judge.endpoints = ["https://bob:hunter2@judge.example/v1", "https://judge.example/v1?api_key=hunter2",
                           "https://judge.example/v1"]
    errors = cfg.errors()
    assert len(errors) == 2 and "endpoints[0]" in errors[0] and "endpoints[1]" in errors[1]
    assert not any("hunter2" in e for e in errors) and "api_key_env" in errors[0]
