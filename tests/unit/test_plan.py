"""rlpt_plugin.plan: the per-step workload, checked against hand-computed numbers."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest

from rlpt_plugin.config import RLPTConfig, TermWeight
from rlpt_plugin.plan import WorkloadInputs, plan
from rlpt_plugin.plan_config import plan_from_config
from rlpt_plugin.plan_report import format_plan

S, N = 2048, 128


def inputs(**kw) -> WorkloadInputs:
    base = dict(groups_per_step=8, seq_length=S, suffix_length=N, num_rollouts=16)
    base.update(kw)
    return WorkloadInputs(**base)


# --- pools, rows, rollouts -----------------------------------------------------------------


def test_k16_with_original_round_robin_hand_computed() -> None:
    p = plan(inputs(safety=1.0))
    assert p.pool_size == 17
    assert p.comparisons_per_prefix == 136  # C(17, 2)
    q, s, f = p.axis("quality"), p.axis("safety"), p.axis("factuality")
    assert (q.per_prefix, q.per_step) == (136, 8 * 136)
    assert (s.per_prefix, s.per_step) == (17, 8 * 17)
    assert (f.per_prefix, f.per_step) == (0, 0)
    assert p.judge_calls == 8 * (136 + 17)
    # Policy-dependent: every quality pair involves a rollout (one corpus candidate), safety 16/17.
    assert q.policy_dependent == 8 * 136 and s.policy_dependent == 8 * 16
    assert p.policy_dependent_calls == p.judge_calls - 8
    assert p.calls_per_s == pytest.approx(8 * 153 / 10.0)
    assert (p.round_robin_calls, p.saved_calls, p.saved_pct) == (p.judge_calls, 0, 0.0)
    # Rows: one LM row per prefix + chosen and rejected; S positions each.
    assert (p.lm_rows, p.rl_rows, p.rows) == (8, 16, 24)
    assert p.tokens_trained == 24 * S
    assert (p.rollouts, p.rollout_tokens) == (8 * 16, 8 * 16 * N)
    assert p.prefill_tokens == 8 * (S + 1 - N)  # shared prefill: once per prefix


@pytest.mark.parametrize(("schedule", "per_prefix"), [
    ("round_robin", 136), ("pivot", 16), ("tournament", math.ceil(3 * 17 / 2) - 2),
])
def test_schedules_and_savings_vs_round_robin(schedule: str, per_prefix: int) -> None:
    p = plan(inputs(schedule=schedule))
    assert p.comparisons_per_prefix == per_prefix
    assert p.judge_calls == 8 * per_prefix
    assert p.round_robin_calls == 8 * 136
    assert p.saved_calls == 8 * (136 - per_prefix)
    assert p.saved_pct == pytest.approx(100 * (136 - per_prefix) / 136)
    assert p.round_robin_calls_per_s == pytest.approx(8 * 136 / 10.0)


def test_tournament_k16_is_24_comparisons() -> None:
    assert plan(inputs(schedule="tournament")).comparisons_per_prefix == 24


def test_samples_and_position_multiply_quality_only_position() -> None:
    p = plan(inputs(samples=5, position="both", safety=1.0, factuality=0.5))
    assert p.axis("quality").per_prefix == 136 * 2 * 5
    assert p.axis("safety").per_prefix == 17 * 5  # position does not touch pointwise axes
    assert p.axis("factuality").per_prefix == 17 * 5
    assert p.judge_calls == 8 * (1360 + 85 + 85)
    assert p.round_robin_calls == p.judge_calls
    t = plan(inputs(samples=5, position="both", schedule="tournament"))
    assert t.axis("quality").per_step == 8 * 24 * 2 * 5
    assert t.round_robin_calls == 8 * 136 * 2 * 5


def test_axis_with_weight_zero_is_off() -> None:
    p = plan(inputs(quality=0.0, safety=1.0))
    assert p.axis("quality").per_step == 0 and p.comparisons_per_prefix == 0
    assert p.judge_calls == 8 * 17
    assert p.round_robin_calls == 8 * 17 and p.saved_calls == 0


def test_no_rl_terms_means_no_pool_no_rollouts_no_judge() -> None:
    p = plan(inputs(dpo=False, rf_nll=False, safety=1.0))
    assert (p.pool_size, p.rollouts, p.rollout_tokens, p.prefill_tokens) == (0, 0, 0, 0)
    assert p.judge_calls == 0 and p.round_robin_calls == 0 and p.saved_pct == 0.0
    assert (p.lm_rows, p.rl_rows) == (8, 0)


def test_ready_made_groups_train_rl_rows_without_generation_or_judge() -> None:
    p = plan(inputs(in_loop=False, num_rollouts=3))
    assert p.pool_size == 4 and p.rl_rows == 16
    assert p.rollouts == 0 and p.judge_calls == 0


def test_rewrite_rows_and_policy_independent_calls() -> None:
    # original + rewrite + 4 rollouts: n=6; the (original, rewrite) pair and their pointwise
    # verdicts do not depend on the policy.
    p = plan(inputs(num_rollouts=4, rewrite=True, safety=1.0, samples=2))
    assert p.pool_size == 6
    assert p.axis("quality").per_step == 8 * 15 * 2  # C(6, 2)
    assert p.axis("quality").policy_dependent == 8 * 14 * 2
    assert p.axis("safety").policy_dependent == 8 * 4 * 2
    pv = plan(inputs(num_rollouts=4, rewrite=True, schedule="pivot"))
    assert (pv.comparisons_per_prefix, pv.axis("quality").policy_dependent) == (5, 8 * 4)
    tn = plan(inputs(num_rollouts=4, rewrite=True, schedule="tournament"))
    assert tn.axis("quality").policy_dependent == tn.axis("quality").per_step  # outcome-dependent pairing
    # Without rollouts every call is cacheable and nothing is generated.
    off = plan(inputs(rollouts=False, rewrite=True, safety=1.0))
    assert off.pool_size == 2 and off.rollouts == 0 and off.prefill_tokens == 0
    assert off.judge_calls == 8 * (1 + 2) and off.policy_dependent_calls == 0
    assert off.rl_rows == 8  # the pair is {original, rewrite}: only the rewrite adds a row


def test_rows_follow_packing_rules() -> None:
    assert plan(inputs(dpo=False, rf_nll=True)).rl_rows == 8  # best only
    # The original is not a candidate, yet it is the document: it keeps its LM row.
    assert plan(inputs(original=False)).lm_rows == 8
    assert plan(inputs(original=False)).rl_rows == 16
    assert plan(inputs(lm_on_window=False)).rows == 16
    assert plan(inputs(num_rollouts=0)).rl_rows == 0  # single candidate: no pair
    assert plan(inputs(share_prefill=False, num_rollouts=4)).prefill_tokens == 8 * 4 * (S + 1 - N)


def test_job_data_rows_add_full_length_lm_rows() -> None:
    base, blended = plan(inputs()), plan(inputs(job_sequences=6))
    assert blended.job_rows == 6 and blended.rows == base.rows + 6
    assert blended.tokens_trained == base.tokens_trained + 6 * S
    assert blended.judge_calls == base.judge_calls and blended.rollouts == base.rollouts  # no pools
    assert "+ 6 job data +" in format_plan(blended)
    assert plan(inputs(lm_on_window=False, dpo=False, job_sequences=2)).rows == 2  # job data only
    with pytest.raises(ValueError, match="dp_size must divide job_sequences"):
        inputs(job_sequences=3, dp_size=2)


def test_dp_size_and_global_batch_in_the_printout() -> None:
    text = format_plan(plan(inputs(dp_size=2, global_batch_size=16)))
    assert "per data-parallel rank (DP=2)" in text and "4 prefixes" in text
    assert "DOES NOT FIT" in text  # 24 rows > 16 slots
    assert "fits" in format_plan(plan(inputs(global_batch_size=24)))


# --- formatting ----------------------------------------------------------------------------


def test_format_names_key_lines_and_assumptions() -> None:
    text = format_plan(plan(inputs(schedule="tournament", safety=1.0)))
    lines = text.splitlines()
    assert lines[0].startswith("workload per step (assumed step time 10 s")
    for key in ("prefixes (global)", "pool per prefix", "17 candidates: original + 16 rollouts",
                "rows trained", "16,384 tokens sampled", "judge calls (openai)", "328 = quality 192 + safety 136",
                "24 comparisons (tournament)",
                "policy-dependent calls", "judge rate needed", "32.8 calls/s at 10 s per step",
                "vs round robin", "tournament saves 896 (73.2%)", "assumptions:"):
        assert key in text, (key, text)
    # Aligned: every value starts in the same column.
    columns = {re.match(r"^  (\S+(?: \S+)*)\s{2,}\S", ln).end() for ln in lines[1:-1]}
    assert len(columns) == 1, text


def test_format_without_rl_terms() -> None:
    text = format_plan(plan(inputs(dpo=False, step_time_s=2.5)))
    assert "assumed step time 2.5 s" in text
    assert "none (no RL terms" in text and "judge calls" in text and "vs round robin" not in text


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(("kw", "field"), [
    ({"groups_per_step": 0}, "groups_per_step"),
    ({"groups_per_step": -4}, "groups_per_step"),
    ({"seq_length": 0}, "seq_length"),
    ({"suffix_length": S + 1}, "suffix_length"),
    ({"num_rollouts": -1}, "num_rollouts"),
    ({"samples": 0}, "samples"),
    ({"schedule": "swiss"}, "schedule"),
    ({"position": "left"}, "position"),
    ({"safety": -1.0}, "safety"),
    ({"quality": math.nan}, "quality"),
    ({"quality": 0.0}, "at least one axis"),
    ({"step_time_s": 0}, "step_time_s"),
    ({"step_time_s": math.inf}, "step_time_s"),
    ({"dp_size": 3}, "dp_size"),
    ({"global_batch_size": 0}, "global_batch_size"),
    ({"groups_per_step": 2.0}, "groups_per_step"),
    ({"original": False, "rollouts": False}, "pool is empty"),
    ({"dpo": False, "lm_on_window": False}, "nothing to train"),
])
def test_invalid_inputs_name_the_field(kw: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        inputs(**kw)


# --- from the rlpt config ------------------------------------------------------------------


def store_config(**judge) -> RLPTConfig:
    cfg = RLPTConfig()
    cfg.data.source = "store"
    cfg.data.groups_per_step = 8
    cfg.candidates.num_rollouts = 16
    for k, v in judge.items():
        setattr(cfg.judge, k, v)
    return cfg


def test_plan_from_config_store_matches_hand_numbers() -> None:
    p = plan_from_config(store_config(schedule="pivot", safety=1.0, samples=3), seq_length=S,
                         suffix_length=N, step_time_s=4.0)
    assert p.pool_size == 17
    assert p.axis("quality").per_step == 8 * 16 * 3
    assert p.axis("safety").per_step == 8 * 17 * 3
    assert p.calls_per_s == pytest.approx(8 * (48 + 51) / 4.0)
    assert p.rollout_tokens == 8 * 16 * N and p.rows == 24


def test_plan_from_config_without_rl_terms_and_rf_only() -> None:
    cfg = store_config()
    cfg.loss.dpo = TermWeight(start=0.0)
    p = plan_from_config(cfg, seq_length=S, suffix_length=N)
    assert p.judge_calls == 0 and p.rollouts == 0 and p.rows == 8
    cfg.loss.rf_nll = TermWeight(start=1.0)
    cfg.loss.selection = "rf_nll"
    p = plan_from_config(cfg, seq_length=S, suffix_length=N)
    assert p.rl_rows == 8 and p.judge_calls == 8 * 136


def test_plan_from_config_world_judge_ignores_samples_and_position() -> None:
    p = plan_from_config(store_config(backend="world", samples=5, position="both"), seq_length=S, suffix_length=N)
    assert p.axis("quality").per_prefix == 136
    assert "judge calls (world oracle)" in format_plan(p)


def test_plan_from_config_synthetic_source_has_no_judge() -> None:
    cfg = RLPTConfig()
    cfg.data.source = "synthetic"  # 3 rollouts + original, suffix 6
    p = plan_from_config(cfg, seq_length=64)
    assert p.pool_size == 4 and p.judge_calls == 0 and p.rollouts == 0
    assert p.rows == 8 * 3


def test_plan_from_config_errors_name_config_paths() -> None:
    with pytest.raises(ValueError, match="suffix_length"):
        plan_from_config(store_config(), seq_length=S)
    with pytest.raises(ValueError, match=r"`rlpt\.judge\.schedule`"):
        plan_from_config(store_config(schedule="swiss"), seq_length=S, suffix_length=N)
    cfg = store_config()
    cfg.data.groups_per_step = 0
    with pytest.raises(ValueError, match=r"`rlpt\.data\.groups_per_step`"):
        plan_from_config(cfg, seq_length=S, suffix_length=N)
    with pytest.raises(ValueError, match="step_time_s"):
        plan_from_config(store_config(), seq_length=S, suffix_length=N, step_time_s=-1.0)


def test_module_is_pure() -> None:
    code = ("import sys, rlpt_plugin.plan; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'megatron')]; "
            "sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_prefix_shared_rows_train_one_row_per_prefix() -> None:
    # The paper's geometry: LM + chosen + rejected share one ~1,920-token prefix.
    shared, unpacked = plan(inputs(shared_rows=True)), plan(inputs())
    assert shared.rows == unpacked.rows == 24  # the row budget stays the unpacked count
    assert unpacked.tokens_trained == unpacked.unpacked_tokens_trained == 24 * S
    assert shared.tokens_trained == 8 * (S + 2 * N) == 8 * 2304
    assert shared.unpacked_tokens_trained == 24 * S
    assert "prefix-shared rows" in format_plan(shared) and "prefix-shared" not in format_plan(unpacked)
    assert plan(inputs(shared_rows=True, dpo=False, rf_nll=True)).tokens_trained == 8 * (S + N)
    assert plan(inputs(shared_rows=True, dpo=False, job_sequences=2)).tokens_trained == 10 * S  # nothing shared
    cfg = RLPTConfig()
    cfg.data.source = "synthetic"
    assert plan_from_config(cfg, seq_length=S, suffix_length=N).inputs.shared_rows
    cfg.data.prefix_sharing = "unpacked"
    assert not plan_from_config(cfg, seq_length=S, suffix_length=N).inputs.shared_rows


def test_thinking_rollouts_sample_and_train_their_thoughts():
    plain = plan(WorkloadInputs(groups_per_step=4, seq_length=64, suffix_length=8, num_rollouts=4,
                                original=False, shared_rows=True))
    think = plan(WorkloadInputs(groups_per_step=4, seq_length=64, suffix_length=8, num_rollouts=4,
                                original=False, shared_rows=True, thinking_budget=16))
    assert plain.rollout_tokens == 4 * 4 * 8 and think.rollout_tokens == 4 * 4 * (8 + 16)
    assert think.prefill_tokens == 4 * (64 + 1 - 24) < plain.prefill_tokens
    assert think.tokens_trained - plain.tokens_trained == 4 * 2 * 16  # chosen and rejected rows after the LM row
    assert "16 x (8 + 16 thought) = 384 tokens" in format_plan(think)
    assert "16 x 8 = 128 tokens" in format_plan(plain)
    with pytest.raises(ValueError, match="thinking_budget \\+ suffix_length must be <= seq_length"):
        WorkloadInputs(groups_per_step=4, seq_length=20, suffix_length=8, thinking_budget=13)
