"""The plugin's forward step and loss function, as Megatron's schedules call them.

Contract with megatron-core 0.16 schedules (``calculate_per_token_loss=False``): the loss
function returns ``(loss, num_tokens, reporting)``; the schedule divides ``loss`` by
``num_tokens`` and by the number of micro-batches, and DDP averages gradients over the
data-parallel group. Our loss is already this micro-batch's contribution to the GLOBALLY
normalised step loss, so we pass ``num_tokens = 1`` and pre-multiply by
``num_microbatches * dp_size`` (:func:`parallel.loss_scale_for_schedule`). The result: the
gradient of the true step loss, for every TP/PP/DP layout and micro-batch split.

Per-token log-probs come from ``GPTModel(..., labels=...)``: the per-token cross-entropy,
already reduced over the vocab-parallel shards, negated. The full vocabulary is never gathered.

``reporting`` maps each metric to ``[sum, count]``; Megatron-Bridge sums both over micro-batches,
all-reduces them over data-parallel ranks, and logs ``sum / count``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Iterator

import torch

from rlpt_plugin.megatron import parallel
from rlpt_plugin.megatron.step.shared_attention import MaskCache, forward_rows
from rlpt_plugin.rl.losses import LossConfig, mixed_loss
from rlpt_plugin.rl.packing import MicroBatch
from rlpt_plugin.rl.step import StepMicroBatch, batch_segments
from rlpt_plugin.rl.weights import MixedWeights


# Metrics that only mean something when their term's rows are in the data.
TERM_METRICS = {
    "lm": ("term_lm", "lm_nll", "num_lm_tokens"),
    "dpo": ("term_dpo", "dpo_loss", "dpo_reward_margin", "dpo_accuracy", "dpo_chosen_reward",
            "dpo_rejected_reward", "chosen_logp", "rejected_logp", "num_pairs"),
    "rf_nll": ("term_rf_nll", "rf_nll", "num_rf_tokens"),
    "grpo": ("term_grpo", "grpo_loss", "grpo_abs_advantage", "grpo_clip_fraction", "num_grpo_tokens"),
}
DEFAULT_TERMS = frozenset(("lm", "dpo", "rf_nll"))


def causal_attention_mask(seq_length: int, device: torch.device | str) -> torch.Tensor:
    """[1, 1, S, S] bool, True = masked (megatron's convention).

    Passed explicitly because megatron's default causal mask is built on ``device="cuda"``.
    Rows are right-padded, so a causal mask is exact for every real token.
    """
    return torch.triu(torch.ones(seq_length, seq_length, dtype=torch.bool, device=device), 1)[None, None]


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class RLPTForwardStep:
    """Forward-step functor for Megatron-Bridge's ``pretrain()`` and megatron-core schedules.

    Signature ``(data_iterator, model, return_schedule_plan=False)`` is one Bridge accepts and
    the one megatron-core's schedules call. The iterator yields :class:`StepMicroBatch`.
    """

    def __init__(self, loss_config: LossConfig, weights: MixedWeights, *, check_values: bool = True,
                 terms: frozenset[str] = DEFAULT_TERMS, reference_is_policy: bool = False):
        """terms: which of "lm", "dpo", "rf_nll", "grpo" the data carries rows for; metrics of the others
        are not reported (their global count is 0, and Bridge would log 0/0 = nan).
        reference_is_policy: the DPO reference is the policy of this very step (rollout mode with
        ready-made candidates): its log-probs are this forward's, detached -- no second pass."""
        unknown = set(terms) - set(TERM_METRICS)
        if unknown:
            raise ValueError(f"terms must be a subset of {sorted(TERM_METRICS)}, got {sorted(unknown)}")
        self.loss_config = loss_config
        self.weights = weights
        self.check_values = check_values
        self.reference_is_policy = reference_is_policy
        self.hidden = frozenset(m for t in set(TERM_METRICS) - set(terms) for m in TERM_METRICS[t])
        self._masks = MaskCache()

    def __call__(self, data_iterator: Iterator[StepMicroBatch], model: torch.nn.Module,
                 return_schedule_plan: bool = False) -> tuple[torch.Tensor, Any]:
        if return_schedule_plan:
            raise ValueError("rlpt forward step does not support combined 1F1B schedule plans "
                             "(model.overlap_moe_expert_parallel_comm must be False)")
        item = next(data_iterator)
        device = model_device(model)
        mb = item.batch.to(device, non_blocking=True)
        # Unpacked rows: the causal mask; prefix-shared rows: their block mask and positions.
        output = forward_rows(model, mb, self._masks)
        return output, partial(self.loss_func, mb, item)

    def loss_func(self, mb: MicroBatch, item: StepMicroBatch, output_tensor: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """output_tensor: [B, S] per-token cross-entropy from the last pipeline stage."""
        token_logps_BS = -output_tensor.float()
        ref_BS = token_logps_BS.detach() if self.reference_is_policy else mb.ref_logps_BS
        out = mixed_loss(token_logps_BS, ref_BS, mb.lm_mask_BS, mb.rl_mask_BS,
                         mb.chosen_rows_P, mb.rejected_rows_P, mb.rf_rows_R,
                         weights=self.weights.at(item.step), denominators=item.denominators,
                         config=self.loss_config, check_values=self.check_values,
                         segments=batch_segments(mb), grpo_rows_G=mb.grpo_rows_G,
                         grpo_advantages_G=mb.grpo_adv_G)
        scale = parallel.loss_scale_for_schedule()
        # Per-step totals are reported as [value, 1/scale]: summed over the scale's
        # num_microbatches * dp contributions, the count is exactly 1.
        share = torch.tensor(1.0 / scale, dtype=torch.float64, device=token_logps_BS.device)
        reporting = {"loss": torch.stack([out.loss.detach().to(torch.float64), share])}
        for name, term in out.terms.items():
            reporting[f"term_{name}"] = torch.stack([term.to(torch.float64), share])
        for name, (total, count) in out.metrics.items():
            reporting[name] = torch.stack([total, count])
        for name, count in out.counts.items():
            reporting[name] = torch.stack([torch.tensor(count, dtype=torch.float64,
                                                        device=share.device), share])
        for name in self.hidden:
            reporting.pop(name, None)
        for name, total, count in item.extras:
            reporting[name] = torch.tensor([total, count], dtype=torch.float64, device=share.device)
        num_tokens = torch.ones((), dtype=torch.int, device=token_logps_BS.device)
        return out.loss * scale, num_tokens, reporting
