"""Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-like training"), one micro-batch at a time.

The group of a prefix is its pool's policy samples (the rollouts); a rollout's advantage is its
judge reward minus the mean reward of the pool's rollouts, NOT divided by their std
(rlpt_plugin/rl/pool.py: :func:`~rlpt_plugin.rl.pool.rollout_advantages`). The per-token
surrogate is PPO's clipped one against the log-probs the rollout was sampled with
(``old_logps``: the pool's rollout-time log-probs, the packed ``ref_logps``)::

    ratio_{i,t}  = exp(logp_{i,t} - old_logp_{i,t})
    surr_{i,t}   = min(ratio_{i,t} * A_i, clip(ratio_{i,t}, 1 - eps, 1 + eps) * A_i)
    loss         = - sum_i sum_t surr_{i,t} / C

with C the GLOBAL count of GRPO tokens of the optimizer step (every micro-batch, every
data-parallel rank): no per-sequence 1/|o_i| (Dr. GRPO's length-bias fix) and no per-group
std, so the step loss and its gradients do not depend on how the step is split. This module
returns the micro-batch's sums; rlpt_plugin/rl/losses.py divides by C.

Shape legend: G = GRPO items (rollouts) in the micro-batch, S = positions.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from rlpt_plugin.rl.items import _check_rows, _masked, item_masks


#: Bound on |logp - old_logp| before exp(): exp(20) ~ 4.9e8 is finite in fp32, where a rollout
#: token the policy now finds e^89 times likelier would overflow to inf (and the loss with it).
#: Beyond the bound the token gets no gradient, as a clipped one; within it nothing changes.
MAX_LOG_RATIO = 20.0


def check_clip_eps(clip_eps: float, owner: str = "clip_eps") -> None:
    if isinstance(clip_eps, bool) or not isinstance(clip_eps, (int, float)) \
            or not math.isfinite(clip_eps) or not 0 < clip_eps < 1:
        raise ValueError(f"{owner} must be a number in (0, 1), but got {clip_eps!r}")


class GRPOSums(NamedTuple):
    """Sums over one micro-batch's GRPO items. Only ``loss_sum`` carries gradient."""

    loss_sum: Tensor
    """[] - sum of the clipped surrogate over every item token."""
    num_tokens: float
    """Item tokens in this micro-batch (its share of the global normaliser C)."""
    clipped_tokens: Tensor
    """[] tokens where the clipped branch is strictly the smaller one (no gradient there)."""
    abs_advantage_sum: Tensor
    """[] sum of |A_i| over the items."""
    num_items: float


def clipped_surrogate_sum(token_logps_GS: Tensor, old_logps_GS: Tensor, mask_GS: Tensor,
                          advantages_G: Tensor, clip_eps: float) -> tuple[Tensor, Tensor]:
    """(- sum of the clipped surrogate, number of clipped tokens) over the masked tokens.

    token_logps_GS: [G, S] policy log-probs (with grad); old_logps_GS: [G, S] the log-probs the
    samples were drawn with (detached here); mask_GS: [G, S] 0/1; advantages_G: [G].
    """
    check_clip_eps(clip_eps)
    used_GS = mask_GS != 0
    # Outside the mask the log-ratio is 0 (ratio 1): garbage there never reaches exp().
    log_ratio_GS = _masked(token_logps_GS - old_logps_GS.detach(), used_GS)
    ratio_GS = torch.exp(torch.clamp(log_ratio_GS, -MAX_LOG_RATIO, MAX_LOG_RATIO))
    adv_G1 = advantages_G.to(ratio_GS.dtype)[:, None]
    unclipped_GS = ratio_GS * adv_G1
    clipped_GS = torch.clamp(ratio_GS, 1.0 - clip_eps, 1.0 + clip_eps) * adv_G1
    surrogate_GS = torch.minimum(unclipped_GS, clipped_GS)
    clipped_tokens = (used_GS & (clipped_GS.detach() < unclipped_GS.detach())).sum()
    return -_masked(surrogate_GS, used_GS).sum(), clipped_tokens


def grpo_sums(token_logps_BS: Tensor, old_logps_BS: Tensor, rl_mask_BS: Tensor, rows_G: Tensor,
              advantages_G: Tensor, *, clip_eps: float, segment_ids_BS: Tensor | None = None,
              segs_G: Tensor | None = None) -> GRPOSums:
    """This micro-batch's GRPO sums. An item is row ``rows_G[g]``'s ``rl_mask`` positions (of
    segment ``segs_G[g]`` when rows are prefix-shared); ``advantages_G[g]`` its advantage."""
    _check_rows("grpo_rows_G", rows_G, rl_mask_BS.shape[0])
    if advantages_G.shape != rows_G.shape or not advantages_G.dtype.is_floating_point:
        raise ValueError(f"grpo_advantages_G must be a float tensor of the shape of grpo_rows_G "
                         f"{tuple(rows_G.shape)}, but got {advantages_G.dtype} {tuple(advantages_G.shape)}")
    mask_GS = item_masks(rl_mask_BS, rows_G, segment_ids_BS, segs_G)
    loss_sum, clipped = clipped_surrogate_sum(token_logps_BS[rows_G], old_logps_BS[rows_G], mask_GS,
                                              advantages_G, clip_eps)
    return GRPOSums(loss_sum=loss_sum, num_tokens=float((mask_GS != 0).sum()), clipped_tokens=clipped,
                    abs_advantage_sum=advantages_G.detach().double().abs().sum(), num_items=float(rows_G.numel()))


def grpo_token_count(rl_mask_BS: Tensor, rows_G: Tensor, segment_ids_BS: Tensor | None = None,
                     segs_G: Tensor | None = None) -> float:
    """Local GRPO tokens of one micro-batch (sum over micro-batches and DP ranks: C)."""
    return float((item_masks(rl_mask_BS, rows_G, segment_ids_BS, segs_G) != 0).sum())
