"""Reference log-probs for DPO, computed outside the training schedule.

Three modes (``rlpt.loss.reference``, see rlpt_plugin/config.py):
- ``frozen``: a frozen copy of the start weights. Classic DPO; the policy is anchored to the
  model training started from. Costs one extra forward per step and a second copy of weights.
- ``rollout`` (default): the policy as it was when the candidates were built. Rollouts record
  these log-probs at sampling time for free; candidates not sampled by the policy (original,
  rewrite) are scored by the live policy at step start, before its update. The anchor moves
  with the policy, which suits *pretraining*: a frozen anchor drags a model that is meant to
  keep improving for thousands of steps back to where it began, and costs a second model copy.
- ``none``: reference-free (log-ratio against a constant).

The scorer runs a forward-only pass of megatron's own schedule over the step's micro-batches,
so under pipeline parallelism it passes through every stage. It must run outside the training
schedule (at step start): a nested pipeline schedule inside a forward step would interleave its
point-to-point messages with the outer schedule's.
"""

from __future__ import annotations

from functools import partial
from typing import Iterator, Sequence

import torch
from megatron.core.pipeline_parallel import get_forward_backward_func

from rlpt_plugin.megatron.step.forward_step import model_device
from rlpt_plugin.megatron.step.shared_attention import MaskCache, forward_rows
from rlpt_plugin.rl.context import row_context
from rlpt_plugin.rl.packing import ROLE_RF, MicroBatch, PackSpec, Row, pack_rows

class ReferenceScorer:
    """Fills ``MicroBatch.ref_logps_BS`` (on the last pipeline stage) from ``model_chunks``."""

    def __init__(self, model_chunks: Sequence[torch.nn.Module]):
        self.model_chunks = list(model_chunks)
        self._masks = MaskCache()

    @torch.no_grad()
    def fill(self, batches: Sequence[MicroBatch]) -> None:
        if not batches:
            return
        seq_length = batches[0].tokens_BS.shape[1]
        micro_batch_size = batches[0].tokens_BS.shape[0]
        was_training = [m.training for m in self.model_chunks]
        for m in self.model_chunks:
            m.eval()
        try:
            get_forward_backward_func()(
                forward_step_func=self._forward, data_iterator=iter(batches),
                model=self.model_chunks, num_microbatches=len(batches), seq_length=seq_length,
                micro_batch_size=micro_batch_size, forward_only=True)
        finally:
            for m, flag in zip(self.model_chunks, was_training):
                m.train(flag)

    def _forward(self, data_iterator: Iterator[MicroBatch], model: torch.nn.Module):
        mb = next(data_iterator)
        output = forward_rows(model, mb.to(model_device(model)), self._masks)
        return output, partial(self._record, mb)

    @staticmethod
    def _record(mb: MicroBatch, output_tensor: torch.Tensor):
        logps_BS = (-output_tensor.float()).to(mb.ref_logps_BS.device)
        used_BS = mb.rl_mask_BS != 0
        mb.ref_logps_BS.copy_(torch.where(used_BS, logps_BS, torch.zeros_like(logps_BS)))
        return torch.zeros((), device=output_tensor.device), {}


def score_continuations(model: torch.nn.Module, items: Sequence[tuple[Sequence[int], Sequence[int]]], *,
                        seq_length: int, micro_batch_size: int) -> list[list[float]]:
    """Per-token log-probs of each ``(context, continuation)`` under ``model`` (one chunk),
    through megatron's forward-only schedule (every pipeline stage). The context is cut from
    the left exactly as training cuts it (``seq_length + 1`` tokens in all). The values are
    real on the last pipeline stage; other stages get zeros of the right lengths."""
    rows = []
    for i, (context, continuation) in enumerate(items):
        rows.append(Row(group_id=i, tokens=row_context(context, len(continuation), seq_length) + tuple(continuation),
                        candidate_length=len(continuation), roles=frozenset({ROLE_RF})))
    if not rows:
        return []
    num_mb = -(-len(rows) // micro_batch_size)
    spec = PackSpec(seq_length=seq_length, micro_batch_size=micro_batch_size, num_microbatches=num_mb,
                    lm_on_window=False, use_dpo=False, use_rf_nll=True)
    batches = pack_rows(rows, [i // micro_batch_size for i in range(len(rows))], spec)
    ReferenceScorer([model]).fill(batches)
    out = []
    for i in range(len(rows)):
        mb, r = batches[i // micro_batch_size], i % micro_batch_size
        out.append(mb.ref_logps_BS[r][mb.rl_mask_BS[r] != 0].tolist())
    return out
