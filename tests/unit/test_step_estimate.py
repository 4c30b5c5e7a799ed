"""The dry run's GPU estimate: closed forms, stated assumptions, errors named."""

from __future__ import annotations

import pytest

from rlpt_plugin.plan import WorkloadInputs, plan
from rlpt_plugin.step_estimate import Accelerator, ModelShape, estimate, format_estimate, judge_prompt_tokens

LLAMA2_7B = ModelShape(num_layers=32, hidden_size=4096, ffn_hidden_size=11008, num_attention_heads=32,
                       num_query_groups=32, vocab_size=32000, seq_length=4096)


def test_parameter_count_of_a_known_architecture():
    assert LLAMA2_7B.num_params == pytest.approx(6.74e9, rel=1e-3)  # Llama-2 7B: 6,738,415,616
    tied = ModelShape(**{**LLAMA2_7B.__dict__, "tied_embeddings": True})
    assert LLAMA2_7B.num_params - tied.num_params == 32000 * 4096


def test_training_and_decode_follow_their_closed_forms():
    shape = ModelShape(num_layers=4, hidden_size=256, ffn_hidden_size=1024, num_attention_heads=4,
                       num_query_groups=4, vocab_size=1000, seq_length=512)
    p = plan(WorkloadInputs(groups_per_step=16, seq_length=512, suffix_length=32, num_rollouts=4))
    acc = Accelerator()
    e = estimate(p, shape, gpus=8, accelerator=acc)
    per_token = 6 * shape.num_params + 6 * 4 * 256 * 512
    assert e.train_s == pytest.approx(p.tokens_trained * per_token / (acc.bf16_flops * acc.train_mfu * 8))
    assert estimate(p, shape, gpus=8, fp8=True).train_s == pytest.approx(e.train_s / 2, rel=1e-3)
    batch = p.rollouts / 8
    memory = (2 * shape.num_params + batch * 512 * 2 * 4 * 256 * 2) / (acc.hbm_bytes_per_s * acc.decode_bw_efficiency)
    compute = batch * (2 * shape.num_params + 2 * 4 * 256 * 512) / (acc.bf16_flops * acc.prefill_mfu)
    assert e.decode_s == pytest.approx(32 * max(memory, compute))
    assert estimate(p, shape, gpus=8, reference="none").reference_s == 0.0
    assert estimate(p, shape, gpus=8, reference="frozen").reference_s > e.reference_s > 0  # RL rows > corpus rows
    text = format_estimate(e, shape)
    assert "MFU 40% training" in text and "rollout decode" in text and "prompt tokens per step" in text
    with pytest.raises(ValueError, match="multiple of TP x PP = 4"):
        estimate(p, shape, gpus=6, tensor_parallel=2, pipeline_parallel=2)


def test_judge_prompt_tokens_count_prefix_and_candidates_per_call():
    base = dict(groups_per_step=2, seq_length=64, suffix_length=8, num_rollouts=2)
    q = plan(WorkloadInputs(**base))
    qs = plan(WorkloadInputs(**base, safety=1.0))
    # safety adds one call per candidate, each a template plus the candidate only
    extra = judge_prompt_tokens(qs) - judge_prompt_tokens(q)
    per_safety_call = extra / qs.axis("safety").per_step
    assert 8 < per_safety_call < 8 + 400
    per_quality_call = judge_prompt_tokens(q) / q.axis("quality").per_step
    assert per_quality_call > (64 + 1 - 8) + 2 * 8  # the prefix and both candidates
