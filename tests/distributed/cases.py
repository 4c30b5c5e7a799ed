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

from rlpt_plugin.megatron.forward_step import RLPTForwardStep
from rlpt_plugin.megatron.reference import ReferenceScorer
from rlpt_plugin.megatron.step_source import StepSource
from rlpt_plugin.rl.losses import LossConfig
from rlpt_plugin.rl.packing import PackSpec, Row
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
    """Build the layout, run one forward-backward step of the mixed loss, report loss and grads."""
    Layout(case["tp"], case["pp"]).init()
    dp = ps.get_data_parallel_world_size()
    mbs, num_mb, seq = case["mbs"], case["num_mb"], case["seq"]
    destroy_num_microbatches_calculator()
    init_num_microbatches_calculator(0, None, mbs * num_mb * dp, mbs, dp)
    model = build_model(weight_seed=0)
    reference = ReferenceScorer([build_model(weight_seed=1, wrap_ddp=False)])
    spec = PackSpec(seq_length=seq, micro_batch_size=mbs, num_microbatches=num_mb, use_rf_nll=True)
    source = StepSource(SyntheticGroups(vocab_size=VOCAB).group, groups_per_step=GROUPS_PER_STEP,
                        spec=spec, reference=reference, lm_rows=job_row,
                        lm_rows_per_step=JOB_SEQUENCES_PER_STEP)
    source.prepare(case.get("step", 0))
    forward_step = RLPTForwardStep(LossConfig(beta=0.5), MixedWeights.constant(lm=1.0, dpo=1.0, rf_nll=0.5))
    model.zero_grad_buffer()
    reports = get_forward_backward_func()(
        forward_step_func=forward_step, data_iterator=source, model=[model], num_microbatches=num_mb,
        seq_length=seq, micro_batch_size=mbs, forward_only=False)
    metrics = None
    if ps.is_pipeline_last_stage():
        summed = {k: torch.stack([r[k] for r in reports]).sum(0) for k in reports[0]}
        for value in summed.values():
            torch.distributed.all_reduce(value, group=ps.get_data_parallel_group())
        metrics = {k: float(v[0] / v[1]) for k, v in summed.items()}
    return {"case": case, "metrics": metrics, "grads": named_grads(model)}


def run_cases(rank: int, world_size: int, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [one_step(case) for case in cases]
