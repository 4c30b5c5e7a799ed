"""Loss math for self-improving pretraining: token-level LM NLL + online DPO + RF-NLL.

Everything here sees ONE micro-batch, while the denominators are GLOBAL over the
whole optimizer step (all micro-batches, all data-parallel ranks). Each call
returns this micro-batch's additive contribution, so summing the returned losses
over micro-batches and ranks gives the step loss independently of the split.

Shape legend for tensor-name suffixes:
    B = rows (sequences) in a micro-batch
    S = sequence positions (label positions)
    P = DPO pairs
    R = RF-NLL rows (the best candidate of their pool)
    G = Dr. GRPO items (the rollouts of their pool; rlpt_plugin/rl/grpo.py)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from rlpt_plugin.rl.grpo import check_clip_eps, grpo_sums, grpo_token_count
from rlpt_plugin.rl.items import (  # noqa: F401  (re-exported: the loss API)
    NonFiniteLogProbsError,
    Segments,
    _check_binary,
    _check_finite,
    _check_rows,
    _check_same_shape,
    _check_segments,
    _masked,
    item_masks,
)

_REDUCTIONS = ("sum", "mean")


def sequence_logps(token_logps_BS: Tensor, mask_BS: Tensor, reduction: str = "sum") -> Tensor:
    """Per-row log-prob of the masked tokens.

    Args:
        token_logps_BS: [B, S] log-probs of the label tokens.
        mask_BS: [B, S] 0/1 mask of the tokens that belong to the sequence.
        reduction: "sum" (the log-prob of the whole sequence) or "mean" (per token).

    Returns:
        [B] tensor. In "mean" mode a row without any mask token raises ValueError.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, but got {reduction!r}")
    _check_same_shape(("token_logps_BS", token_logps_BS), ("mask_BS", mask_BS))
    summed_B = _masked(token_logps_BS, mask_BS).sum(dim=-1)
    if reduction == "sum":
        return summed_B
    counts_B = (mask_BS != 0).sum(dim=-1)
    empty_B = counts_B == 0
    if bool(empty_B.any()):
        row = int(empty_B.nonzero()[0, 0])
        raise ValueError(f"mask_BS must have at least one token per row for reduction='mean', "
                         f"but row {row} is empty")
    return summed_B / counts_B.to(summed_B.dtype)


def token_nll_sum(token_logps_BS: Tensor, mask_BS: Tensor) -> Tensor:
    """Sum of -logp over masked positions: [B, S], [B, S] -> [] (0-dim)."""
    _check_same_shape(("token_logps_BS", token_logps_BS), ("mask_BS", mask_BS))
    return -_masked(token_logps_BS, mask_BS).sum()


class DPOPairs(NamedTuple):
    """Per-pair DPO quantities, all [P]. Only loss_P carries gradient."""

    loss_P: Tensor
    reward_margin_P: Tensor
    chosen_reward_P: Tensor
    rejected_reward_P: Tensor


def dpo_pair_losses(policy_chosen_P: Tensor, policy_rejected_P: Tensor, ref_chosen_P: Tensor,
                    ref_rejected_P: Tensor, beta: float) -> DPOPairs:
    """DPO loss per pair: -logsigmoid(beta * ((pc - rc) - (pr - rr))).

    All inputs are [P] sequence log-probs; the reward tensors are detached
    diagnostics (implicit rewards beta * (policy - reference)).
    """
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, but got {beta!r}")
    _check_same_shape(("policy_chosen_P", policy_chosen_P),
                      ("policy_rejected_P", policy_rejected_P),
                      ("ref_chosen_P", ref_chosen_P), ("ref_rejected_P", ref_rejected_P))
    if policy_chosen_P.dim() != 1:
        raise ValueError(f"policy_chosen_P must be 1-D, "
                         f"but got shape {tuple(policy_chosen_P.shape)}")
    chosen_reward_P = beta * (policy_chosen_P - ref_chosen_P)
    rejected_reward_P = beta * (policy_rejected_P - ref_rejected_P)
    logits_P = chosen_reward_P - rejected_reward_P
    return DPOPairs(loss_P=-F.logsigmoid(logits_P), reward_margin_P=logits_P.detach(),
                    chosen_reward_P=chosen_reward_P.detach(),
                    rejected_reward_P=rejected_reward_P.detach())


def _check_non_negative(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{owner}.{name} must be a finite number >= 0, but got {value!r}")


@dataclass(frozen=True, kw_only=True)
class LossWeights:
    """Non-negative weights of the four loss terms."""

    lm: float = 1.0
    dpo: float = 1.0
    rf_nll: float = 0.0
    grpo: float = 0.0

    def __post_init__(self) -> None:
        _check_non_negative("LossWeights", lm=self.lm, dpo=self.dpo, rf_nll=self.rf_nll, grpo=self.grpo)


@dataclass(frozen=True)
class Denominators:
    """Counts normalising each term. GLOBAL when passed to mixed_loss, local from count_local."""

    num_lm_tokens: float
    num_pairs: float
    num_rf_tokens: float
    num_grpo_tokens: float = 0.0

    def __post_init__(self) -> None:
        _check_non_negative("Denominators", num_lm_tokens=self.num_lm_tokens, num_pairs=self.num_pairs,
                            num_rf_tokens=self.num_rf_tokens, num_grpo_tokens=self.num_grpo_tokens)

    def __add__(self, other: Denominators) -> Denominators:
        # Lets callers write sum(pieces, Denominators(0, 0, 0)) over micro-batches.
        return Denominators(self.num_lm_tokens + other.num_lm_tokens,
                            self.num_pairs + other.num_pairs,
                            self.num_rf_tokens + other.num_rf_tokens,
                            self.num_grpo_tokens + other.num_grpo_tokens)


@dataclass(frozen=True, kw_only=True)
class LossConfig:
    """beta: DPO temperature (> 0). dpo_reduction: how a candidate's token log-probs
    become its sequence log-prob ("sum" as in the paper, or per-token "mean").
    grpo_clip: Dr. GRPO's PPO clip epsilon, in (0, 1)."""

    beta: float = 0.1
    dpo_reduction: str = "sum"
    grpo_clip: float = 0.2

    def __post_init__(self) -> None:
        if not (isinstance(self.beta, (int, float)) and math.isfinite(self.beta) and self.beta > 0):
            raise ValueError(f"LossConfig.beta must be a finite number > 0, but got {self.beta!r}")
        if self.dpo_reduction not in _REDUCTIONS:
            raise ValueError(f"LossConfig.dpo_reduction must be one of {_REDUCTIONS}, "
                             f"but got {self.dpo_reduction!r}")
        check_clip_eps(self.grpo_clip, "LossConfig.grpo_clip")


@dataclass
class LossOutput:
    """loss: [] contribution to the step loss (carries grad).
    metrics: name -> (local sum, local count), detached float64 0-dim tensors.
    terms: "lm" / "dpo" / "rf_nll" / "grpo" -> [] detached unweighted term / global denominator.
    counts: local num_lm_tokens / num_pairs / num_rf_tokens / num_grpo_tokens as python floats."""

    loss: Tensor
    metrics: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    terms: dict[str, Tensor] = field(default_factory=dict)
    counts: dict[str, float] = field(default_factory=dict)


def _check_structure(lm_mask_BS: Tensor, rl_mask_BS: Tensor, chosen_rows_P: Tensor,
                     rejected_rows_P: Tensor, rf_rows_R: Tensor) -> None:
    _check_same_shape(("lm_mask_BS", lm_mask_BS), ("rl_mask_BS", rl_mask_BS))
    if lm_mask_BS.dim() != 2:
        raise ValueError(f"lm_mask_BS must be 2-D [B, S], but got shape {tuple(lm_mask_BS.shape)}")
    if chosen_rows_P.shape != rejected_rows_P.shape:
        raise ValueError(f"chosen_rows_P and rejected_rows_P must have the same length, but got "
                         f"{tuple(chosen_rows_P.shape)} and {tuple(rejected_rows_P.shape)}")
    num_rows = lm_mask_BS.shape[0]
    for name, rows in (("chosen_rows_P", chosen_rows_P), ("rejected_rows_P", rejected_rows_P),
                       ("rf_rows_R", rf_rows_R)):
        _check_rows(name, rows, num_rows)


def count_local(lm_mask_BS: Tensor, rl_mask_BS: Tensor, chosen_rows_P: Tensor,
                rf_rows_R: Tensor, segments: Segments | None = None,
                grpo_rows_G: Tensor | None = None) -> Denominators:
    """Local counts of one micro-batch; sum them over micro-batches and DP ranks
    to get the GLOBAL Denominators for mixed_loss.

    Args: lm_mask_BS / rl_mask_BS [B, S] 0/1, chosen_rows_P [P], rf_rows_R [R] row indices,
    segments: the items' segments when rows are prefix-shared; grpo_rows_G [G]: GRPO item rows.
    """
    _check_structure(lm_mask_BS, rl_mask_BS, chosen_rows_P, chosen_rows_P, rf_rows_R)
    ids_BS, rf_segs = (segments.ids_BS, segments.rf_R) if segments is not None else (None, None)
    return Denominators(num_lm_tokens=float((lm_mask_BS != 0).sum()),
                        num_pairs=float(chosen_rows_P.numel()),
                        num_rf_tokens=float((item_masks(rl_mask_BS, rf_rows_R, ids_BS, rf_segs) != 0).sum()),
                        num_grpo_tokens=0.0 if grpo_rows_G is None or not grpo_rows_G.numel() else
                        grpo_token_count(rl_mask_BS, grpo_rows_G, ids_BS, None if segments is None else segments.grpo_G))


def mixed_loss(token_logps_BS: Tensor, ref_token_logps_BS: Tensor, lm_mask_BS: Tensor,
               rl_mask_BS: Tensor, chosen_rows_P: Tensor, rejected_rows_P: Tensor,
               rf_rows_R: Tensor, *, weights: LossWeights, denominators: Denominators,
               config: LossConfig, check_values: bool = True, segments: Segments | None = None,
               grpo_rows_G: Tensor | None = None, grpo_advantages_G: Tensor | None = None) -> LossOutput:
    """This micro-batch's contribution to the mixed step loss.

    loss = w.lm     * NLL(token_logps_BS, lm_mask_BS)              / num_lm_tokens
         + w.dpo    * sum_P DPO(chosen_rows_P vs rejected_rows_P)   / num_pairs
         + w.rf_nll * NLL(token_logps_BS[rf_rows_R], rl_mask[rf_rows_R]) / num_rf_tokens
         + w.grpo   * Dr. GRPO clipped surrogate of grpo_rows_G         / num_grpo_tokens

    Args:
        token_logps_BS: [B, S] policy label log-probs (requires grad).
        ref_token_logps_BS: [B, S] reference label log-probs (zeros = reference-free);
            detached here so the reference never receives gradient.
        lm_mask_BS, rl_mask_BS: [B, S] 0/1 masks of LM positions and candidate-suffix positions.
        chosen_rows_P, rejected_rows_P: [P] row indices of each DPO pair.
        rf_rows_R: [R] row indices of the RF-NLL targets.
        weights, denominators (GLOBAL counts), config: see the dataclasses.
        check_values: run the value checks (0/1 masks, empty suffixes, finiteness);
            each forces a host-device sync, so a caller that already checked may skip them.
        segments: prefix-shared rows (several candidates per row): each item is its row's
            ``rl_mask`` positions of its segment (see :class:`Segments`); None: one per row.
        grpo_rows_G, grpo_advantages_G: [G] rows and advantages of the Dr. GRPO items (None: none);
            their old log-probs are ``ref_token_logps_BS`` (rlpt_plugin/rl/grpo.py).
    """
    with_grpo = grpo_rows_G is not None  # its metrics and count are reported only then
    if with_grpo != (grpo_advantages_G is not None):
        raise ValueError("grpo_rows_G and grpo_advantages_G must be given together, got only one")
    if grpo_rows_G is None:
        grpo_rows_G = torch.zeros(0, dtype=torch.int64, device=lm_mask_BS.device)
        grpo_advantages_G = torch.zeros(0, dtype=torch.float32, device=lm_mask_BS.device)
    grpo_segs = None if segments is None else segments.grpo_G
    if segments is not None and grpo_segs is None and grpo_rows_G.numel():
        raise ValueError("segments.grpo_G must give the GRPO items' segments of prefix-shared rows, got None")
    if segments is not None and grpo_segs is None:
        grpo_segs = torch.zeros_like(grpo_rows_G)  # no items
    _check_rows("grpo_rows_G", grpo_rows_G, lm_mask_BS.shape[0])
    if grpo_segs is not None and grpo_segs.shape != grpo_rows_G.shape:
        raise ValueError(f"segments.grpo_G must have the shape of grpo_rows_G {tuple(grpo_rows_G.shape)}, "
                         f"but got {tuple(grpo_segs.shape)}")
    grpo_mask_GS = item_masks(rl_mask_BS, grpo_rows_G, None if segments is None else segments.ids_BS, grpo_segs)
    _check_same_shape(("token_logps_BS", token_logps_BS),
                      ("ref_token_logps_BS", ref_token_logps_BS),
                      ("lm_mask_BS", lm_mask_BS), ("rl_mask_BS", rl_mask_BS))
    _check_structure(lm_mask_BS, rl_mask_BS, chosen_rows_P, rejected_rows_P, rf_rows_R)
    ids_BS = None
    chosen_segs = rejected_segs = rf_segs = None
    if segments is not None:
        _check_segments(segments, lm_mask_BS, chosen_rows_P, rejected_rows_P, rf_rows_R)
        ids_BS, chosen_segs = segments.ids_BS, segments.chosen_P
        rejected_segs, rf_segs = segments.rejected_P, segments.rf_R
    same_P = chosen_rows_P == rejected_rows_P
    if segments is not None:
        same_P = same_P & (chosen_segs == rejected_segs)
    if bool(same_P.any()):
        i = int(same_P.nonzero()[0, 0])
        raise ValueError(f"chosen_rows_P and rejected_rows_P must differ within a pair, "
                         f"but pair {i} uses row {int(chosen_rows_P[i])} for both")
    ref_token_logps_BS = ref_token_logps_BS.detach()
    lm_used_BS, rl_used_BS = lm_mask_BS != 0, rl_mask_BS != 0
    pair_rows = torch.cat([chosen_rows_P, rejected_rows_P])
    pair_segs = torch.cat([chosen_segs, rejected_segs]) if segments is not None else None
    pair_mask_2PS = item_masks(rl_mask_BS, pair_rows, ids_BS, pair_segs)  # chosen then rejected
    rf_mask_RS = item_masks(rl_mask_BS, rf_rows_R, ids_BS, rf_segs)
    if check_values:
        _check_binary("lm_mask_BS", lm_mask_BS)
        _check_binary("rl_mask_BS", rl_mask_BS)
        num_pairs = chosen_rows_P.numel()
        for name, rows, masks in (("chosen_rows_P", chosen_rows_P, pair_mask_2PS[:num_pairs]),
                                  ("rejected_rows_P", rejected_rows_P, pair_mask_2PS[num_pairs:]),
                                  ("rf_rows_R", rf_rows_R, rf_mask_RS),
                                  ("grpo_rows_G", grpo_rows_G, grpo_mask_GS)):
            empty = (masks != 0).sum(dim=-1) == 0
            if bool(empty.any()):
                row = int(rows[empty.nonzero()[0, 0]])
                raise ValueError(f"rl_mask_BS must mark at least one token in every row of {name}, "
                                 f"but found an empty suffix mask in row {row}")
        # Positions that enter DPO (policy and reference) and RF-NLL.
        in_pairs_BS = torch.zeros(lm_mask_BS.shape, dtype=torch.float32, device=lm_mask_BS.device)
        in_pairs_BS.index_add_(0, pair_rows, (pair_mask_2PS != 0).float())
        in_rf_BS = torch.zeros_like(in_pairs_BS)
        in_rf_BS.index_add_(0, rf_rows_R, (rf_mask_RS != 0).float())
        in_grpo_BS = torch.zeros_like(in_pairs_BS)  # GRPO: policy and old (rollout-time) log-probs
        in_grpo_BS.index_add_(0, grpo_rows_G, (grpo_mask_GS != 0).float())
        _check_finite("token_logps_BS", token_logps_BS,
                      lm_used_BS | (in_pairs_BS > 0) | (in_rf_BS > 0) | (in_grpo_BS > 0))
        _check_finite("ref_token_logps_BS", ref_token_logps_BS, rl_used_BS & ((in_pairs_BS > 0) | (in_grpo_BS > 0)))

    local = count_local(lm_mask_BS, rl_mask_BS, chosen_rows_P, rf_rows_R, segments, grpo_rows_G)
    for term, weight, count, denom in (
            ("num_lm_tokens", weights.lm, local.num_lm_tokens, denominators.num_lm_tokens),
            ("num_pairs", weights.dpo, local.num_pairs, denominators.num_pairs),
            ("num_rf_tokens", weights.rf_nll, local.num_rf_tokens, denominators.num_rf_tokens),
            ("num_grpo_tokens", weights.grpo, local.num_grpo_tokens, denominators.num_grpo_tokens)):
        if weight != 0 and count > 0 and denom <= 0:
            raise ValueError(f"denominators.{term} must be > 0 when its term has a non-zero weight "
                             f"and {count:g} local items, but got {denom!r}")

    grad_on = torch.is_grad_enabled()
    # Weight-0 terms are still computed for metrics, but without building a graph.
    with torch.set_grad_enabled(grad_on and weights.lm != 0):
        lm_sum = token_nll_sum(token_logps_BS, lm_mask_BS)
    with torch.set_grad_enabled(grad_on and weights.dpo != 0):
        seq_logps = sequence_logps(token_logps_BS[pair_rows], pair_mask_2PS, config.dpo_reduction)
        ref_seq_logps = sequence_logps(ref_token_logps_BS[pair_rows], pair_mask_2PS, config.dpo_reduction)
        num_pairs = chosen_rows_P.numel()
        pairs = dpo_pair_losses(seq_logps[:num_pairs], seq_logps[num_pairs:],
                                ref_seq_logps[:num_pairs], ref_seq_logps[num_pairs:], config.beta)
        dpo_sum = pairs.loss_P.sum()
    with torch.set_grad_enabled(grad_on and weights.rf_nll != 0):
        rf_sum = token_nll_sum(token_logps_BS[rf_rows_R], rf_mask_RS)
    with torch.set_grad_enabled(grad_on and weights.grpo != 0):
        grpo = grpo_sums(token_logps_BS, ref_token_logps_BS, rl_mask_BS, grpo_rows_G, grpo_advantages_G,
                         clip_eps=config.grpo_clip, segment_ids_BS=ids_BS, segs_G=grpo_segs)

    # Anchor with zero gradient everywhere: backward() works even when no term
    # contributes (e.g. a padding-only micro-batch), and NaN garbage stays out.
    loss = _masked(token_logps_BS, torch.zeros_like(lm_used_BS)).sum()
    terms: dict[str, Tensor] = {}
    for name, weight, total, denom in (("lm", weights.lm, lm_sum, denominators.num_lm_tokens),
                                       ("dpo", weights.dpo, dpo_sum, denominators.num_pairs),
                                       ("rf_nll", weights.rf_nll, rf_sum, denominators.num_rf_tokens),
                                       ("grpo", weights.grpo, grpo.loss_sum, denominators.num_grpo_tokens)):
        # A zero global denominator only passes the check above when this term has
        # nothing locally (or weight 0), so its contribution is 0.
        term = total / denom if denom > 0 else torch.zeros_like(total)
        terms[name] = term.detach()
        if weight != 0:
            loss = loss + weight * term

    def metric(total: Tensor, count: float) -> tuple[Tensor, Tensor]:
        # float64 keeps sums of counts exact across many micro-batches and ranks.
        return (total.detach().to(torch.float64).reshape(()),
                torch.tensor(count, dtype=torch.float64, device=total.device))

    chosen_logps_P = seq_logps[:num_pairs].detach()
    rejected_logps_P = seq_logps[num_pairs:].detach()
    metrics = {
        "lm_nll": metric(lm_sum, local.num_lm_tokens),
        "dpo_loss": metric(dpo_sum, local.num_pairs),
        "rf_nll": metric(rf_sum, local.num_rf_tokens),
        "dpo_reward_margin": metric(pairs.reward_margin_P.sum(), local.num_pairs),
        "dpo_accuracy": metric((pairs.reward_margin_P > 0).sum(), local.num_pairs),
        "dpo_chosen_reward": metric(pairs.chosen_reward_P.sum(), local.num_pairs),
        "dpo_rejected_reward": metric(pairs.rejected_reward_P.sum(), local.num_pairs),
        "chosen_logp": metric(chosen_logps_P.sum(), local.num_pairs),
        "rejected_logp": metric(rejected_logps_P.sum(), local.num_pairs),
    }
    counts = {"num_lm_tokens": local.num_lm_tokens, "num_pairs": local.num_pairs,
              "num_rf_tokens": local.num_rf_tokens}
    if not with_grpo:
        terms.pop("grpo")
    else:
        metrics.update(grpo_loss=metric(grpo.loss_sum, grpo.num_tokens),
                       grpo_abs_advantage=metric(grpo.abs_advantage_sum, grpo.num_items),
                       grpo_clip_fraction=metric(grpo.clipped_tokens, grpo.num_tokens))
        counts["num_grpo_tokens"] = local.num_grpo_tokens
    return LossOutput(loss=loss, metrics=metrics, terms=terms, counts=counts)
