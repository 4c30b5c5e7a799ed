"""Worker bodies for the multi-process tests (module-level so spawn can pickle them)."""

from __future__ import annotations

from typing import Any

import torch
from megatron.core import parallel_state as ps
from megatron.core.num_microbatches_calculator import (
    destroy_num_microbatches_calculator,
    init_num_microbatches_calculator,
)
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.utils import get_model_config

from rlpt_plugin.megatron.step.forward_step import RLPTForwardStep
from rlpt_plugin.megatron.candidates.reference import ReferenceScorer
from rlpt_plugin.megatron.step.step_source import StepSource
from rlpt_plugin.rl.losses import LossConfig
from rlpt_plugin.rl.packing import PackSpec, Row, pack_step
from rlpt_plugin.rl.synthetic import SyntheticGroups
from rlpt_plugin.rl.weights import MixedWeights
from tests.distributed.tiny_gpt import VOCAB, Layout, build_model, named_grads

GROUPS_PER_STEP = 8
JOB_SEQUENCES_PER_STEP = 4  # LM-only rows of "the job's own data" per step
JOB_SEQUENCE_LENGTH = 25  # tokens per row: fits every case's seq_length + 1


def job_row(index: int) -> Row:
    """Sequence ``index`` of a stand-in for the job's own data: random tokens, some labels masked."""
    gen = torch.Generator().manual_seed(99_991 + index)
    tokens = torch.randint(1, VOCAB, (JOB_SEQUENCE_LENGTH,), generator=gen).tolist()
    mask = (torch.rand(JOB_SEQUENCE_LENGTH - 1, generator=gen) > 0.2).float().tolist()
    return Row(group_id=index, tokens=tuple(tokens), candidate_length=JOB_SEQUENCE_LENGTH - 1, lm=True,
               lm_mask=tuple(mask))


def one_step(case: dict[str, Any]) -> dict[str, Any]:
    """Build the layout, run one forward-backward step of the mixed loss, report loss and grads.
    ``case["rule"]``: "dpo" (default: LM + DPO + RF-NLL) or "grpo" (LM + Dr. GRPO, the frozen
    model's log-probs standing in for the rollout-time ones, so the ratios differ from 1)."""
    Layout(case["tp"], case["pp"]).init()
    dp = ps.get_data_parallel_world_size()
    mbs, num_mb, seq = case["mbs"], case["num_mb"], case["seq"]
    destroy_num_microbatches_calculator()
    init_num_microbatches_calculator(0, None, mbs * num_mb * dp, mbs, dp)
    model = build_model(weight_seed=0)
    reference = ReferenceScorer([build_model(weight_seed=1, wrap_ddp=False)])
    grpo = case.get("rule", "dpo") == "grpo"
    flags = dict(use_dpo=False, use_grpo=True) if grpo else dict(use_rf_nll=True)
    spec = PackSpec(seq_length=seq, micro_batch_size=mbs, num_microbatches=num_mb,
                    shared_rows=case.get("shared", False), **flags)
    source = StepSource(SyntheticGroups(vocab_size=VOCAB).group, groups_per_step=GROUPS_PER_STEP,
                        spec=spec, reference=reference, lm_rows=job_row,
                        lm_rows_per_step=JOB_SEQUENCES_PER_STEP, rule="grpo" if grpo else "dpo")
    source.prepare(case.get("step", 0))
    if grpo:
        forward_step = RLPTForwardStep(LossConfig(grpo_clip=0.2), MixedWeights.constant(lm=1.0, dpo=0.0, grpo=1.0),
                                       terms=frozenset({"lm", "grpo"}))
    else:
        forward_step = RLPTForwardStep(LossConfig(beta=0.5), MixedWeights.constant(lm=1.0, dpo=1.0, rf_nll=0.5))
    model.zero_grad_buffer()
    rows, width = source.last_shape  # shared rows: fewer, wider rows than (mbs, seq)
    assert case.get("shared", False) == (rows < mbs), (case, source.last_shape)  # packing really changed
    if case.get("bridge_shapes"):  # as Bridge calls the schedule: (seq_length, micro_batch_size),
        get_model_config(model).variable_seq_lengths = True  # and the stages exchange the real shape
        rows, width = mbs, seq
    reports = get_forward_backward_func()(
        forward_step_func=forward_step, data_iterator=source, model=[model], num_microbatches=num_mb,
        seq_length=width, micro_batch_size=rows, forward_only=False)
    metrics = None
    if ps.is_pipeline_last_stage():
        summed = {k: torch.stack([r[k] for r in reports]).sum(0) for k in reports[0]}
        for value in summed.values():
            torch.distributed.all_reduce(value, group=ps.get_data_parallel_group())
        metrics = {k: float(v[0] / v[1]) for k, v in summed.items()}
    return {"case": case, "metrics": metrics, "grads": named_grads(model)}


def run_cases(rank: int, world_size: int, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [one_step(case) for case in cases]


def shared_logps_case(rank: int, world_size: int) -> dict[str, float]:
    """Per-token log-probs of one step's shared rows against its unpacked rows, on the same
    weights: with the block mask and RoPE positions, without the mask, and without RoPE positions
    (the last two must differ, or the test that uses this case could not fail)."""
    from rlpt_plugin.megatron.step import shared_attention
    from rlpt_plugin.megatron.step.shared_attention import MaskCache, forward_rows
    from rlpt_plugin.rl.pool import select_all

    Layout(1, 1).init()
    model = build_model(weight_seed=0, wrap_ddp=False).eval()
    groups = [SyntheticGroups(vocab_size=VOCAB).group(i) for i in range(GROUPS_PER_STEP)]
    kw = dict(seq_length=24, micro_batch_size=28, num_microbatches=1, use_rf_nll=True)
    (plain,) = pack_step(groups, select_all(groups), PackSpec(**kw))
    (shared,) = pack_step(groups, select_all(groups), PackSpec(**kw, shared_rows=True))
    masks = MaskCache()

    def item_logps(mb, out_BS: torch.Tensor) -> list[torch.Tensor]:
        # per (group, candidate tokens): the candidate's label log-probs, in a layout-free order
        found = {}
        for b in range(mb.num_real_rows):
            segs = mb.segment_ids_BS[b] if mb.shared else torch.zeros_like(mb.rl_mask_BS[b]).long()
            for seg in segs[mb.rl_mask_BS[b] != 0].unique().tolist():
                where = (mb.rl_mask_BS[b] != 0) & (segs == seg)
                key = (int(mb.group_ids_B[b]), tuple(mb.labels_BS[b][where].tolist()))
                found[key] = -out_BS[b][where]
        return [found[k] for k in sorted(found)]

    with torch.no_grad():
        want = item_logps(plain, forward_rows(model, plain, masks))
        got = item_logps(shared, forward_rows(model, shared, masks))
        causal = masks.causal(shared.tokens_BS.shape[1], "cpu")
        with shared_attention.rope_from_position_ids(model, shared.position_ids_BS):
            no_mask = item_logps(shared, model(shared.tokens_BS, shared.position_ids_BS, causal,
                                               labels=shared.labels_BS))
        no_rope = item_logps(shared, model(shared.tokens_BS, shared.position_ids_BS,
                                           shared_attention.prefix_shared_mask(shared.segment_ids_BS),
                                           labels=shared.labels_BS))

    def diff(values: list[torch.Tensor]) -> float:
        assert len(values) == len(want)
        return max(float((a - b).abs().max()) for a, b in zip(values, want))

    return {"items": len(want), "rows_plain": plain.num_real_rows, "rows_shared": shared.num_real_rows,
            "shared": diff(got), "no_mask": diff(no_mask), "no_rope": diff(no_rope)}


def attention_path_case(rank: int, world_size: int) -> dict[str, list[str]]:
    """shared_rows_errors of the tiny model as built, and with settings that would ignore the
    shared rows' mask or positions."""
    from rlpt_plugin.megatron.step.shared_attention import shared_rows_errors
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from tests.distributed.tiny_gpt import transformer_config

    Layout(1, 1).init()
    out = {"local fp32": shared_rows_errors([build_model(weight_seed=0, num_layers=1)])}
    for name, changes in (("fused softmax bf16", dict(masked_softmax_fusion=True, bf16=True,
                                                      params_dtype=torch.bfloat16)),
                          ("fused rope", dict(apply_rope_fusion=True))):
        config = transformer_config(num_layers=1)
        for key, value in changes.items():
            setattr(config, key, value)
        model = GPTModel(config=config, transformer_layer_spec=get_gpt_layer_local_spec(), vocab_size=VOCAB,
                         max_sequence_length=64, position_embedding_type="rope")
        out[name] = shared_rows_errors([model])
    return out
